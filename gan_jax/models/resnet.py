"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018, appendix B), and their
class-conditional forms (conditional BatchNorm in G, a projection discriminator: Miyato and
Koyama 2018), at 28, 32, 48 and 64 px.

G: z -> dense -> base x base x C, up-blocks (BN, ReLU, nearest 2x, conv 3x3, BN, ReLU,
conv 3x3; shortcut: 2x, conv 1x1), BN, ReLU, conv 3x3, tanh. D: an "optimised" first
down-block, further residual blocks (ReLU, conv, ReLU, conv, [avg-pool]; shortcut conv 1x1
where shapes change), ReLU, a sum over space, a dense logit (+ the projection). D's layers
are spectrally normalised (``spectral_norm``; WGAN-GP's D has none); a D block's first conv
keeps its input's width, as in the chainer original and Mimicry. Widths: at 32 px the
CIFAR-10 model (G 256, D 128 channels in every block); at 48 and 64 px the STL-10 and
CelebA ones (G halves from ``g_width``, D doubles up to ``d_width``). Initialisation as in
Mimicry: Xavier-uniform, gain sqrt(2) in the residual branches, 1 elsewhere.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from gan_jax.models.layers import ConditionalBatchNorm, ProjectionHead, spectral, with_class

_RES_INIT = nn.initializers.variance_scaling(2.0, "fan_avg", "uniform")  # gain sqrt(2)
_INIT = nn.initializers.xavier_uniform()

# resolution -> G: (base side, channel divisors of g_width per block, base first);
#               D: (channel divisors of d_width per block, which blocks halve the side)
_G_LAYOUT = {28: (7, (1, 1, 1)), 32: (4, (1, 1, 1, 1)), 48: (6, (1, 2, 4, 8)),
             64: (4, (1, 2, 4, 8, 16))}
_D_LAYOUT = {28: ((1, 1, 1, 1), (True, True, False, False)),
             32: ((1, 1, 1, 1), (True, True, False, False)),
             48: ((16, 8, 4, 2, 1), (True, True, True, True, False)),
             64: ((16, 8, 4, 2, 1), (True, True, True, True, True))}
RESOLUTIONS = tuple(sorted(_G_LAYOUT))


def _check(resolution: int) -> None:
    if resolution not in _G_LAYOUT:
        raise ValueError(f"The SNGAN ResNet supports resolutions {RESOLUTIONS}, got "
                         f"{resolution}.")


def _up2(x):
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _down2(x):
    return nn.avg_pool(x, (2, 2), (2, 2))


class GBlock(nn.Module):
    features: int
    num_classes: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, y, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = lambda: ConditionalBatchNorm(self.num_classes, axis_name=self.axis_name, **kw)
        conv = lambda k, init: nn.Conv(self.features, (k, k), padding="SAME",
                                       kernel_init=init, **kw)
        h = _up2(nn.relu(norm()(x, y, train)))
        h = conv(3, _RES_INIT)(h)
        h = conv(3, _RES_INIT)(nn.relu(norm()(h, y, train)))
        return h + conv(1, _INIT)(_up2(x))


class DBlock(nn.Module):
    features: int
    down: bool = True
    first: bool = False  # The "optimised" first block: no ReLU before its first conv.
    spectral_norm: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        conv = lambda k, init, c=self.features: spectral(
            nn.Conv(c, (k, k), padding="SAME", kernel_init=init, **kw), self.spectral_norm)
        pool = _down2 if self.down else (lambda t: t)
        h = x if self.first else nn.relu(x)
        hidden = self.features if self.first else x.shape[-1]
        h = conv(3, _RES_INIT, hidden)(h, update_stats=train)
        h = pool(conv(3, _RES_INIT)(nn.relu(h), update_stats=train))
        if self.first:
            sc = conv(1, _INIT)(_down2(x), update_stats=train)
        elif self.down or x.shape[-1] != self.features:
            sc = pool(conv(1, _INIT)(x, update_stats=train))
        else:
            sc = x
        return h + sc


class Generator(nn.Module):
    resolution: int = 32
    z_dim: int = 128
    width: int = 256
    channels: int = 3
    num_classes: int = 0  # > 0: conditional BatchNorm on the class ``y``.
    class_input: bool = False  # The class one-hot also joins z (layers.with_class).
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, z_BZ, y=None, train: bool = True):
        _check(self.resolution)
        z_BZ = with_class(z_BZ, y, self.num_classes, self.class_input)
        base, divisors = _G_LAYOUT[self.resolution]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = self.width // divisors[0]
        h = nn.Dense(base * base * c, kernel_init=_INIT, **kw)(z_BZ)
        h = h.reshape((-1, base, base, c))
        for d in divisors[1:]:
            h = GBlock(self.width // d, self.num_classes, axis_name=self.axis_name, **kw)(
                h, y, train)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         axis_name=self.axis_name, **kw)(h)
        h = nn.Conv(self.channels, (3, 3), padding="SAME", kernel_init=_INIT, **kw)(nn.relu(h))
        return jnp.tanh(h)


class Discriminator(nn.Module):
    resolution: int = 32
    width: int = 128
    num_classes: int = 0  # > 0: a projection discriminator on the class ``y``.
    spectral_norm: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None  # Unused (no BatchNorm); accepted like the other models.

    @nn.compact
    def __call__(self, x_BHWC, y=None, train: bool = True):
        _check(self.resolution)
        if x_BHWC.shape[1:3] != (self.resolution, self.resolution):
            raise ValueError(f"Discriminator(resolution={self.resolution}) got images of "
                             f"shape {x_BHWC.shape}.")
        divisors, downs = _D_LAYOUT[self.resolution]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x_BHWC.astype(self.dtype)
        for i, (d, down) in enumerate(zip(divisors, downs)):
            h = DBlock(self.width // d, down=down, first=i == 0,
                       spectral_norm=self.spectral_norm, **kw)(h, train)
        h = jnp.sum(nn.relu(h), axis=(1, 2))
        return ProjectionHead(self.num_classes, self.spectral_norm, kernel_init=_INIT,
                              **kw)(h, y, train)
