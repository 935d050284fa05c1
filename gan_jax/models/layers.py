"""Shared layers."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _down_kernel(kernel_44IO):
    # The stride-2 conv that UpConv transposes has this kernel (HWIO, in = UpConv's out).
    return jnp.swapaxes(lax.rev(kernel_44IO, (0, 1)), 2, 3)


def _down(u_BHWC, w_44OI):
    return lax.conv_general_dilated(u_BHWC, w_44OI, (2, 2), ((1, 1), (1, 1)),
                                    dimension_numbers=_DN)


def _up(x_BHWC, kernel_44IO):
    w = _down_kernel(kernel_44IO)
    n, h, w_, _ = x_BHWC.shape
    # An array, not a ShapeDtypeStruct: inside shard_map it is typed as varying over the
    # mesh like x, or the transpose would sum the devices' outputs.
    y = jnp.zeros_like(x_BHWC, shape=(n, 2 * h, 2 * w_, kernel_44IO.shape[3]))
    return jax.linear_transpose(lambda u: _down(u, w), y)(x_BHWC)[0]


@jax.custom_vjp
def upsample_conv_transpose(x_BHWC, kernel_44IO):
    """PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1), written as the transpose of
    the stride-2 conv it undoes.

    The textbook form, one lhs-dilated conv, costs XLA:GPU four times the useful FLOPs (it
    convolves an input written out with zeros between its pixels) and XLA:CPU about 30x in
    its kernel gradient; the transpose of a conv is what cuDNN's data-gradient kernel runs.
    The kernel's gradient is the stride-2 conv's own (a custom VJP): autodiff's form of it
    gets no cuDNN filter-gradient kernel. Reverse mode only (no ``jax.jvp``).
    """
    return _up(x_BHWC, kernel_44IO)


def _up_fwd(x_BHWC, kernel_44IO):
    return _up(x_BHWC, kernel_44IO), (x_BHWC, kernel_44IO)


def _up_bwd(res, dy_BHWC):
    x, kernel = res
    w = _down_kernel(kernel)
    dw = jax.linear_transpose(lambda w: _down(dy_BHWC, w), w)(x)[0]
    return _down(dy_BHWC, w), _down_kernel(dw)


upsample_conv_transpose.defvjp(_up_fwd, _up_bwd)


class UpConv(nn.Module):
    """A 4x4, stride-2 transposed convolution that doubles the side (no bias), with a
    (4, 4, in, out) kernel: ``upsample_conv_transpose``."""
    features: int
    kernel_init: Any = nn.initializers.normal(0.02)
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC):
        kernel = self.param("kernel", self.kernel_init, (4, 4, x_BHWC.shape[-1], self.features),
                            self.param_dtype)
        return upsample_conv_transpose(x_BHWC.astype(self.dtype), kernel.astype(self.dtype))


SPECTRAL = "spectral"  # The collection of the spectral-norm power-iteration vectors.


def spectral(layer: nn.Module, enabled: bool = True):
    """``layer`` with its weights divided by their largest singular value (Miyato et al.
    2018) by ``flax.linen.SpectralNorm``, one power iteration per call, its vectors in the
    ``"spectral"`` collection; call the result with ``update_stats=train``. ``enabled=False``
    returns a call of the plain layer, so one model code serves both."""
    if enabled:
        return nn.SpectralNorm(layer, n_steps=1, collection_name=SPECTRAL)
    return lambda *args, update_stats: layer(*args)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm whose scale and shift are looked up per example from its class (de Vries
    et al. 2017; the SNGAN generators' conditioning). Unconditional (``num_classes=0``):
    plain BatchNorm with learned scale and shift. PyTorch's momentum, float32 statistics."""
    num_classes: int = 0
    momentum: float = 0.9
    epsilon: float = 1e-5
    scale_init: Any = nn.initializers.ones
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, y, train: bool):
        c = x.shape[-1]
        cond = self.num_classes > 0
        h = nn.BatchNorm(use_running_average=not train, momentum=self.momentum,
                         epsilon=self.epsilon, use_scale=not cond, use_bias=not cond,
                         scale_init=self.scale_init, dtype=self.dtype,
                         param_dtype=self.param_dtype, axis_name=self.axis_name,
                         name="BatchNorm_0")(x)
        if not cond:
            return h
        embed = lambda name, init: nn.Embed(self.num_classes, c, embedding_init=init,
                                            param_dtype=self.param_dtype, name=name)
        gamma = embed("scale", self.scale_init)(y)
        beta = embed("bias", nn.initializers.zeros)(y)
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
        return h * gamma.reshape(shape).astype(h.dtype) + beta.reshape(shape).astype(h.dtype)


def with_class(z_BZ, y_B, num_classes: int, enabled: bool = True):
    """``z`` with the class one-hot appended (Mirza and Osindero 2014's conditional input)."""
    if not (enabled and num_classes):
        return z_BZ
    return jnp.concatenate([z_BZ, jax.nn.one_hot(y_B, num_classes, dtype=z_BZ.dtype)], axis=-1)


class ProjectionHead(nn.Module):
    """D's last layer: a logit from features ``h_BC``, plus, for a conditional D, the
    projection ``<embed(y), h>`` of Miyato and Koyama 2018. Returns logits ``[B]``."""
    num_classes: int = 0
    spectral_norm: bool = False
    kernel_init: Any = nn.initializers.lecun_normal()
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BC, y_B, train: bool):
        dense = nn.Dense(1, use_bias=self.use_bias, kernel_init=self.kernel_init,
                         dtype=self.dtype, param_dtype=self.param_dtype, name="Dense_0")
        out = spectral(dense, self.spectral_norm)(h_BC, update_stats=train)[:, 0]
        if self.num_classes <= 0:
            return out
        embed = nn.Embed(self.num_classes, h_BC.shape[-1], embedding_init=self.kernel_init,
                         param_dtype=self.param_dtype, name="Embed_0")
        e = spectral(embed, self.spectral_norm)(y_B, update_stats=train)
        return out + jnp.sum(e.astype(jnp.float32) * h_BC.astype(jnp.float32), axis=-1)
