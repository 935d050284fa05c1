"""A convolutional VAE (Kingma and Welling 2014) for 28x28, 32x32 and 64x64 images.

Encoder: stride-2 4x4 convolutions doubling the channels (28 -> 14 -> 7; 32 -> ... -> 4;
64 -> ... -> 4), a dense layer, and the mean and log-variance of q(z | x). Decoder: its
mirror, a dense map of z to the smallest feature map and stride-2 transposed convolutions
halving the channels, the last to the likelihood's parameters: Bernoulli logits, or a
Gaussian's mean with a fixed or learned (per channel) standard deviation.

``num_classes > 0`` makes a CVAE (Sohn et al. 2015): the class one-hot joins the encoder's
features and the decoder's z. The decoder is called like a GAN's generator,
``decoder(z, y=None, train=...)``, and returns images in [-1, 1] (the likelihood's mean), so
sampling and evaluation draw from it as from G; training reads ``decoder.stats``.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.models.layers import UpConv, with_class

# resolution -> (side of the smallest feature map, number of stride-2 layers)
_LAYOUT = {28: (7, 2), 32: (4, 3), 64: (4, 4)}
RESOLUTIONS = tuple(_LAYOUT)
LIKELIHOODS = ("bernoulli", "gaussian")


def _layout(resolution: int) -> tuple[int, int]:
    if resolution not in _LAYOUT:
        raise ValueError(f"The VAE supports resolutions {sorted(_LAYOUT)}, got {resolution}.")
    return _LAYOUT[resolution]


class Encoder(nn.Module):
    """q(z | x, y): returns (mean, log-variance), each [B, z_dim]. Images in [-1, 1]."""
    resolution: int = 28
    z_dim: int = 32
    width: int = 32
    hidden: int = 256
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC, y=None, train: bool = True):
        _, n = _layout(self.resolution)
        h = x_BHWC.astype(self.dtype)
        for i in range(n):
            h = nn.Conv(self.width * 2 ** i, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                        dtype=self.dtype)(h)
            h = nn.leaky_relu(h, 0.2)
        h = with_class(h.reshape((h.shape[0], -1)), y, self.num_classes)
        h = nn.leaky_relu(nn.Dense(self.hidden, dtype=self.dtype)(h), 0.2)
        out = nn.Dense(2 * self.z_dim, dtype=self.dtype)(h).astype(jnp.float32)
        return out[:, :self.z_dim], out[:, self.z_dim:]


class Decoder(nn.Module):
    """p(x | z, y). ``stats`` gives the likelihood's parameters (Bernoulli logits, or the
    Gaussian's mean and log-std per channel); calling it gives the mean image in [-1, 1]."""
    resolution: int = 28
    z_dim: int = 32
    width: int = 32
    hidden: int = 256
    channels: int = 1
    likelihood: str = "bernoulli"
    sigma: float = 1.0  # The Gaussian's std on [-1, 1] pixels (initial value when learned).
    learn_sigma: bool = False
    num_classes: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def stats(self, z_BZ, y=None, train: bool = True):
        """(location [B, H, W, C], log-std [C] or None): logits for Bernoulli, else the mean."""
        base, n = _layout(self.resolution)
        c = self.width * 2 ** (n - 1)
        h = with_class(z_BZ.astype(self.dtype), y, self.num_classes)
        h = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(h))
        h = nn.relu(nn.Dense(base * base * c, dtype=self.dtype)(h))
        h = h.reshape((-1, base, base, c))
        for i in range(n):
            last = i == n - 1
            features = self.channels if last else c // 2 ** (i + 1)
            # DCGAN's transposed convolution: XLA:CPU runs its plain form 4x slower.
            h = UpConv(features, kernel_init=nn.initializers.lecun_normal(),
                       dtype=self.dtype)(h)
            h = h + self.param(f"bias_{i}", nn.initializers.zeros, (features,))
            if not last:
                h = nn.relu(h)
        loc = h.astype(jnp.float32)
        if self.likelihood == "bernoulli":
            return loc, None
        log_sigma = jnp.full((self.channels,), math.log(self.sigma), jnp.float32)
        if self.learn_sigma:
            log_sigma = self.param("log_sigma", lambda _, s: s, log_sigma)
        return loc, log_sigma

    def __call__(self, z_BZ, y=None, train: bool = True):
        loc, _ = self.stats(z_BZ, y, train)
        if self.likelihood == "bernoulli":
            return 2.0 * jax.nn.sigmoid(loc) - 1.0
        return jnp.clip(loc, -1.0, 1.0)
