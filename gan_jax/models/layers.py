"""Shared layers."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")
UPSAMPLE_IMPLS = ("auto", "phases", "transpose", "dilated")  # UpConv's impl values.


def upsample_dilated(x_BHWC, kernel_44IO):
    """PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1) as one lhs-dilated conv.

    XLA:GPU writes this conv's input out with zeros between the pixels and convolves that,
    four times the useful FLOPs; ``upsample_conv_transpose`` is the same function without.
    """
    return lax.conv_general_dilated(x_BHWC, kernel_44IO, (1, 1), ((2, 2), (2, 2)),
                                    lhs_dilation=(2, 2), dimension_numbers=_DN)


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
    """``upsample_dilated``'s function as the transpose of the stride-2 conv it undoes.

    XLA:GPU runs an lhs-dilated conv as cuDNN's data-gradient kernel only when its filter
    is a ``reverse``, which JAX's transpose of a conv emits and ``upsample_dilated`` lacks.
    The kernel's gradient is the stride-2 conv's own (a custom VJP): autodiff's form of it
    gets no cuDNN filter-gradient kernel and costs layout transposes every step. Reverse
    mode only; for ``jax.jvp`` use ``upsample_dilated`` or ``upsample_phases``.
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


def upsample_phases(x_BHWC, kernel_44IO):
    """The same function as four stride-1 2x2 convs, one per output pixel phase.

    Output pixel (2p + a, 2q + b) only sees kernel taps K[a::2, b::2], applied to input
    rows p-1..p (a = 0) or p..p+1 (a = 1), and likewise for columns. Same FLOPs, and every
    gradient is a plain convolution: on XLA:CPU the kernel gradient of the dilated form
    is about 30x slower (1.2 s against 40 ms for a 7x7x128 -> 14x14x64 layer at batch 128).
    It was the CPU's default until ``upsample_conv_transpose``, as fast or faster there.
    """
    rows = []
    for a in (0, 1):
        cols = []
        for b in (0, 1):
            pad = ((1, 0) if a == 0 else (0, 1), (1, 0) if b == 0 else (0, 1))
            cols.append(lax.conv_general_dilated(x_BHWC, kernel_44IO[a::2, b::2], (1, 1), pad,
                                                 dimension_numbers=_DN))
        rows.append(jnp.stack(cols, axis=3))  # [B, H, W, 2 (b), C]
    y = jnp.stack(rows, axis=2)  # [B, H, 2 (a), W, 2 (b), C]
    n, h, _, w, _, c = y.shape
    return y.reshape(n, 2 * h, 2 * w, c)


class UpConv(nn.Module):
    """A 4x4, stride-2 transposed convolution that doubles the side (no bias).

    ``impl``: "transpose" (``upsample_conv_transpose``; also what "auto" picks, on every
    platform), "phases" (``upsample_phases``) or "dilated" (``upsample_dilated``). All compute
    the same function of the same (4, 4, in, out) kernel, so checkpoints do not depend on
    the choice.
    """
    features: int
    kernel_init: Any = nn.initializers.normal(0.02)
    impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BHWC):
        kernel = self.param("kernel", self.kernel_init, (4, 4, x_BHWC.shape[-1], self.features),
                            self.param_dtype)
        x, kernel = x_BHWC.astype(self.dtype), kernel.astype(self.dtype)
        impl = "transpose" if self.impl == "auto" else self.impl
        if impl == "phases":
            return upsample_phases(x, kernel)
        if impl == "transpose":
            return upsample_conv_transpose(x, kernel)
        if impl == "dilated":
            return upsample_dilated(x, kernel)
        raise ValueError(f"UpConv impl must be one of {UPSAMPLE_IMPLS}, got {impl!r}.")
