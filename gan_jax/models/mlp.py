"""The seed text's Keras MLP GAN, layer for layer.

G: Dense 256, LeakyReLU(0.01), Dense 784, tanh. D: Flatten, Dense 128, LeakyReLU(0.01),
Dense 1. D returns logits: the sigmoid lives in the loss, where it is numerically stable.
Keras' Dense initialises kernels with Glorot-uniform and biases with zeros, so we do too.
"""
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

_KERAS_INIT = nn.initializers.glorot_uniform()


class Generator(nn.Module):
    z_dim: int = 100
    hidden: int = 256
    image_shape: tuple[int, int, int] = (28, 28, 1)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z_BZ, y=None, train: bool = True):
        del y, train  # Unconditional; no batch-dependent layers.
        dense = lambda n: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype,
                                   kernel_init=_KERAS_INIT)
        h = nn.leaky_relu(dense(self.hidden)(z_BZ), negative_slope=0.01)
        h = dense(math.prod(self.image_shape))(h)
        return jnp.tanh(h).reshape((z_BZ.shape[0], *self.image_shape))


class Discriminator(nn.Module):
    hidden: int = 128
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC, y=None, train: bool = True):
        del y, train
        dense = lambda n: nn.Dense(n, dtype=self.dtype, param_dtype=self.param_dtype,
                                   kernel_init=_KERAS_INIT)
        h = x_BHWC.reshape((x_BHWC.shape[0], -1)).astype(self.dtype)
        h = nn.leaky_relu(dense(self.hidden)(h), negative_slope=0.01)
        return dense(1)(h)[:, 0]
