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
    y = jax.ShapeDtypeStruct((n, 2 * h, 2 * w_, kernel_44IO.shape[3]), x_BHWC.dtype)
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
