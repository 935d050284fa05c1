"""DCGAN (Radford et al. 2016) for 28x28, 32x32 and 64x64 images.

G: a dense projection of z to a base x base map (7 for 28, 4 otherwise; the same as
PyTorch's ConvTranspose from 1x1 with a base-sized kernel), then stride-2 4x4 transposed
convolutions that halve the channels and double the side, BatchNorm + ReLU between,
tanh at the end. D mirrors it: stride-2 4x4 convolutions with LeakyReLU(0.2), BatchNorm
on all but the first, then a dense layer to one logit. At 64x64 with width 64 this is
exactly the paper's (and the PyTorch example's) 512-256-128-64 generator; like that example
the layers have no biases (BatchNorm's shift takes their place).

``num_classes > 0`` makes both class-conditional: G's BatchNorms take their scale and shift
from the class (conditional BatchNorm), and D adds a projection of the class embedding
onto its last features (Miyato and Koyama 2018). ``spectral_norm`` makes D Miyato et al.'s
SN-DCGAN: every layer spectrally normalised, and no BatchNorm.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models.layers import (ConditionalBatchNorm, ProjectionHead, UpConv, spectral,
                                   with_class)

# N(0, 0.02) weights and N(1, 0.02) BatchNorm scales, as in the paper.
_W_INIT = nn.initializers.normal(0.02)


def _bn_scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


# resolution -> (side of the first feature map, number of stride-2 layers)
_LAYOUT = {28: (7, 2), 32: (4, 3), 64: (4, 4)}


def _layout(resolution: int) -> tuple[int, int]:
    if resolution not in _LAYOUT:
        raise ValueError(f"DCGAN supports resolutions {sorted(_LAYOUT)}, got {resolution}.")
    return _LAYOUT[resolution]


class _Norm(nn.Module):
    """BatchNorm with PyTorch's momentum (0.1 there is 0.9 here) and float32 statistics."""
    dtype: Any
    param_dtype: Any
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, train: bool):
        return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            scale_init=_bn_scale_init, axis_name=self.axis_name,
                            name="BatchNorm_0")(x)


class Generator(nn.Module):
    resolution: int = 64
    z_dim: int = 100
    width: int = 64
    channels: int = 3
    num_classes: int = 0  # > 0: conditional BatchNorm on the class ``y``.
    class_input: bool = False  # The class one-hot also joins z (layers.with_class).
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None  # Set to the pmap axis to synchronise BatchNorm.

    @nn.compact
    def __call__(self, z_BZ, y=None, train: bool = True):
        base, n = _layout(self.resolution)
        if self.num_classes:
            norm = lambda: lambda h, train: ConditionalBatchNorm(
                self.num_classes, scale_init=_bn_scale_init, dtype=self.dtype,
                param_dtype=self.param_dtype, axis_name=self.axis_name)(h, y, train)
        else:
            norm = lambda: _Norm(self.dtype, self.param_dtype, self.axis_name)
        c = self.width * 2 ** (n - 1)
        z_BZ = with_class(z_BZ, y, self.num_classes, self.class_input)
        h = nn.Dense(base * base * c, use_bias=False, dtype=self.dtype,
                     param_dtype=self.param_dtype, kernel_init=_W_INIT)(z_BZ)
        h = nn.relu(norm()(h.reshape((-1, base, base, c)), train))
        for i in range(n):
            last = i == n - 1
            h = UpConv(self.channels if last else c // 2 ** (i + 1), kernel_init=_W_INIT,
                       dtype=self.dtype, param_dtype=self.param_dtype)(h)
            h = jnp.tanh(h) if last else nn.relu(norm()(h, train))
        return h


class Discriminator(nn.Module):
    resolution: int = 64
    width: int = 64
    num_classes: int = 0  # > 0: a projection discriminator on the class ``y``.
    spectral_norm: bool = False
    bias: bool = False  # Biases on D's layers (with spectral_norm, where no BatchNorm shifts).
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x_BHWC, y=None, train: bool = True):
        _, n = _layout(self.resolution)
        if x_BHWC.shape[1:3] != (self.resolution, self.resolution):
            raise ValueError(f"Discriminator(resolution={self.resolution}) got images of "
                             f"shape {x_BHWC.shape}; expected [B, {self.resolution}, "
                             f"{self.resolution}, C].")
        h = x_BHWC.astype(self.dtype)
        for i in range(n):
            conv = nn.Conv(self.width * 2 ** i, (4, 4), strides=(2, 2),
                           padding=((1, 1), (1, 1)), use_bias=self.bias, dtype=self.dtype,
                           param_dtype=self.param_dtype, kernel_init=_W_INIT)
            h = spectral(conv, self.spectral_norm)(h, update_stats=train)
            if i > 0 and not self.spectral_norm:
                h = _Norm(self.dtype, self.param_dtype, self.axis_name)(h, train)
            h = nn.leaky_relu(h, negative_slope=0.2)
        h = h.reshape((h.shape[0], -1))
        if self.num_classes or self.spectral_norm:
            return ProjectionHead(self.num_classes, self.spectral_norm, kernel_init=_W_INIT,
                                  use_bias=self.bias, dtype=self.dtype,
                                  param_dtype=self.param_dtype)(h, y, train)
        return nn.Dense(1, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=_W_INIT)(h)[:, 0]
