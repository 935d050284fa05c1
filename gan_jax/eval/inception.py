"""The FID Inception-v3 in Flax: pytorch-fid's ``fid_inception_v3`` (TF's inception-2015-12-05
graph), not torchvision's Inception-v3.

What differs from torchvision's network, and why each matters for parity: the 3x3 average
pools of the A, C and first E blocks exclude padding (TF's pooling), the last E block
(Mixed_7c) pools by max, BatchNorm's eps is 1e-3, and the classifier has 1008 classes.
Inputs are images in [-1, 1], NHWC, resized to 299x299 bilinearly like
``F.interpolate(mode="bilinear", align_corners=False)`` without antialiasing. Outputs are
the 2048-d pool3 features and the 1008 logits without the classifier's bias (the
Inception Score's definition). Parameter names follow the PyTorch state dict
(``Mixed_5b/branch1x1/conv/kernel`` for ``Mixed_5b.branch1x1.conv.weight``); every array,
BatchNorm statistics included, lives in the ``params`` collection.
"""
import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

FEATURE_DIM, NUM_CLASSES, INPUT_SIZE = 2048, 1008, 299


class BasicConv(nn.Module):
    """Conv (no bias) + inference BatchNorm (eps 1e-3) + ReLU."""
    features: int
    kernel: tuple[int, int]
    stride: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel, strides=self.stride, use_bias=False,
                    padding=((ph, ph), (pw, pw)), dtype=self.dtype, name="conv")(x)
        c = self.features
        bn = {k: self.param(k, init, (c,), jnp.float32) for k, init in (
            ("scale", nn.initializers.ones), ("bias", nn.initializers.zeros),
            ("mean", nn.initializers.zeros), ("var", nn.initializers.ones))}
        # Folded into one scale and shift per channel, which XLA fuses into the conv.
        scale = bn["scale"] * jnp.reciprocal(jnp.sqrt(bn["var"] + 1e-3))
        shift = bn["bias"] - bn["mean"] * scale
        return nn.relu(x * scale.astype(x.dtype) + shift.astype(x.dtype))


def _avg_pool_3x3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                       count_include_pad=False)


def _max_pool(x, stride, pad):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    pool_features: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        C = functools.partial(BasicConv, dtype=self.dtype)
        b1 = C(64, (1, 1), name="branch1x1")(x)
        b5 = C(48, (1, 1), name="branch5x5_1")(x)
        b5 = C(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = C(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = C(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = C(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = C(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class InceptionB(nn.Module):
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        C = functools.partial(BasicConv, dtype=self.dtype)
        b3 = C(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = C(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = C(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = C(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2, 0)], -1)


class InceptionC(nn.Module):
    channels_7x7: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        C = functools.partial(BasicConv, dtype=self.dtype)
        c7 = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = C(192, (1, 1), name="branch1x1")(x)
        b7 = C(c7, (1, 1), name="branch7x7_1")(x)
        b7 = C(c7, **row, name="branch7x7_2")(b7)
        b7 = C(192, **col, name="branch7x7_3")(b7)
        bd = C(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = C(c7, **col, name="branch7x7dbl_2")(bd)
        bd = C(c7, **row, name="branch7x7dbl_3")(bd)
        bd = C(c7, **col, name="branch7x7dbl_4")(bd)
        bd = C(192, **row, name="branch7x7dbl_5")(bd)
        bp = C(192, (1, 1), name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class InceptionD(nn.Module):
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        C = functools.partial(BasicConv, dtype=self.dtype)
        b3 = C(192, (1, 1), name="branch3x3_1")(x)
        b3 = C(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = C(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = C(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = C(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = C(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2, 0)], -1)


class InceptionE(nn.Module):
    max_pool: bool  # True only in Mixed_7c: the FID graph's quirk, kept for parity.
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        C = functools.partial(BasicConv, dtype=self.dtype)
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = C(320, (1, 1), name="branch1x1")(x)
        b3 = C(384, (1, 1), name="branch3x3_1")(x)
        b3 = jnp.concatenate([C(384, **row, name="branch3x3_2a")(b3),
                              C(384, **col, name="branch3x3_2b")(b3)], -1)
        bd = C(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = C(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([C(384, **row, name="branch3x3dbl_3a")(bd),
                              C(384, **col, name="branch3x3dbl_3b")(bd)], -1)
        pooled = _max_pool(x, 1, 1) if self.max_pool else _avg_pool_3x3(x)
        bp = C(192, (1, 1), name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of PyTorch's bilinear resize with align_corners=False and no
    antialiasing (what pytorch-fid uses), along one axis."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), i1), frac)
    return m.astype(np.float32)


def resize_bilinear(x_NHWC, size: int):
    """Separable resize by two constant matrices: exact PyTorch weights, any scale factor."""
    _, h, w, _ = x_NHWC.shape
    if (h, w) == (size, size):
        return x_NHWC
    rh, rw = jnp.asarray(resize_matrix(h, size)), jnp.asarray(resize_matrix(w, size))
    hi = "highest"  # Full float32: the resize is part of the reference computation.
    x = jnp.einsum("oh,nhwc->nowc", rh, x_NHWC, precision=hi)
    return jnp.einsum("pw,nowc->nopc", rw, x, precision=hi)


class _UnbiasedFC(nn.Module):
    """The classifier's logits without its bias, as the Inception Score defines them (the
    original TF code and torch-fidelity's ``logits_unbiased``). The bias stays a parameter,
    so the weights file loads whole."""
    features: int

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (x.shape[-1], self.features))
        self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return jnp.dot(x, kernel, precision="highest")


class FIDInceptionV3(nn.Module):
    """(pool3 features [N, 2048], logits [N, 1008]) of images in [-1, 1], NHWC, 1 or 3
    channels. ``resize`` is the side the input is resized to (299 for FID; any side >= 75
    runs, which tests use to stay fast; None keeps the input size)."""
    resize: int | None = INPUT_SIZE
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x_NHWC):
        x = x_NHWC.astype(jnp.float32)
        if x.shape[-1] == 1:
            x = jnp.repeat(x, 3, axis=-1)
        if self.resize:
            x = resize_bilinear(x, self.resize)
        x = x.astype(self.dtype)
        C = functools.partial(BasicConv, dtype=self.dtype)
        x = C(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = C(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = C(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x, 2, 0)
        x = C(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = C(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x, 2, 0)
        for name, pool in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool, dtype=self.dtype, name=name)(x)
        x = InceptionB(dtype=self.dtype, name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                         ("Mixed_6e", 192)):
            x = InceptionC(c7, dtype=self.dtype, name=name)(x)
        x = InceptionD(dtype=self.dtype, name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, dtype=self.dtype, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, dtype=self.dtype, name="Mixed_7c")(x)
        pool3 = x.astype(jnp.float32).mean(axis=(1, 2))
        return pool3, _UnbiasedFC(NUM_CLASSES, name="fc")(pool3)
