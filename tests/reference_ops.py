"""Reference implementations the tests check gan_jax's ops against."""
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def upsample_dilated(x_BHWC, kernel_44IO):
    """PyTorch's ConvTranspose2d(kernel 4, stride 2, padding 1) as one lhs-dilated conv: the
    textbook form of ``layers.upsample_conv_transpose``."""
    return lax.conv_general_dilated(x_BHWC, kernel_44IO, (1, 1), ((2, 2), (2, 2)),
                                    lhs_dilation=(2, 2), dimension_numbers=_DN)




def upsample_phases(x_BHWC, kernel_44IO):
    """The same function as four stride-1 2x2 convs, one per output pixel phase: output
    pixel (2p + a, 2q + b) only sees kernel taps K[a::2, b::2], applied to input rows
    p-1..p (a = 0) or p..p+1 (a = 1), and likewise for columns."""
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
