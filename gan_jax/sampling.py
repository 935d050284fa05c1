"""Drawing images from a generator's params, raw or EMA, and tiling them into grids. Pure:
reading a run's checkpoint is ``gan_jax.trainer.workdir``'s."""
import jax
import jax.numpy as jnp
import numpy as np


def generate(G, params, g_vars, z_BZ, y_B=None, *, batch_stats: bool = False):
    """Images in [-1, 1], float32; ``y_B``: the classes asked for (a conditional G only).
    BatchNorm uses the running statistics in ``g_vars``, or with ``batch_stats=True`` the
    statistics of this batch: the EMA params never produced the running statistics, so their
    samples are drawn with the batch's own statistics."""
    variables = {"params": params, **g_vars}
    kw = {} if y_B is None else {"y": y_B}
    if batch_stats and "batch_stats" in g_vars:
        # Updates of the running statistics (and any spectral-norm vectors) are dropped.
        x, _ = G.apply(variables, z_BZ, train=True, mutable=list(g_vars), **kw)
    else:
        x = G.apply(variables, z_BZ, train=False, **kw)
    return x.astype(jnp.float32)


def to_uint8(x_BHWC) -> np.ndarray:
    x = np.asarray(jax.device_get(x_BHWC), np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images_BHWC: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles uint8 images into one uint8 [H', W', C] image with ``pad`` black pixels between."""
    b, h, w, c = images_BHWC.shape
    if b == 0:
        raise ValueError("sampling.grid needs at least one image, got an empty batch.")
    cols = cols or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / cols))
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i, im in enumerate(images_BHWC):
        r, q = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + q * (w + pad):pad + q * (w + pad) + w] = im
    return out


def latents(seed: int, num: int, z_dim: int):
    """The latent batch of ``seed``, drawn whole: the same seed gives the same ``z`` however
    it is later cut into chunks."""
    return jax.random.normal(jax.random.PRNGKey(seed), (num, z_dim), jnp.float32)


def in_chunks(draw, z_BZ, chunk: int, y_B=None):
    """Yields ``draw``'s images for ``z_BZ`` (and classes ``y_B``: then ``draw(z, y)``) in
    order, ``chunk`` latents per call. Every call gets exactly ``chunk`` latents, the last
    topped up with the first ones and cut back: EMA draws of a BatchNorm generator use the
    batch's own statistics, and a small leftover batch (1 image of 10,001) would be
    normalised by itself. It also keeps one shape to compile. With batch statistics the
    images depend on ``chunk``; keep it fixed."""
    call = (lambda z, y: draw(z)) if y_B is None else draw
    n = len(z_BZ)
    if n <= chunk:
        yield call(z_BZ, y_B)
        return
    for i in range(0, n, chunk):
        z = z_BZ[i:i + chunk]
        k = len(z)
        pad = lambda a, full: a if k == chunk else jnp.concatenate([a, full[:chunk - k]])
        y = None if y_B is None else pad(y_B[i:i + chunk], y_B)
        yield call(pad(z, z_BZ), y)[:k]


def balanced_labels(num: int, num_classes: int):
    """Classes 0, 1, ..., C-1, 0, 1, ...: a class-balanced batch of ``num`` (the counts differ
    by at most one), in an order that any prefix keeps balanced."""
    return jnp.arange(num, dtype=jnp.int32) % num_classes


def class_rows(z_KZ, num_classes: int):
    """(z, y) of a grid with one class per row: row k is class k, and column j draws z_j in
    every row, so that a column shows one latent's style across the classes. ``C * K``
    of each: the ``K`` latents tiled, the classes 0, ..., 0, 1, ..., C-1."""
    z = jnp.tile(z_KZ, (num_classes, 1))
    return z, jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), len(z_KZ))


def grid_latents(key, num: int, z_dim: int, num_classes: int = 0):
    """(z, y) of a sample grid of about ``num`` images. Unconditional (``num_classes`` 0):
    ``num`` latents of ``key``, and y None. Conditional: ``class_rows`` of max(1, num // C)
    latents of ``key``, so ``num`` is rounded down to whole rows, but at least one column."""
    if not num_classes:
        return jax.random.normal(key, (num, z_dim), jnp.float32), None
    return class_rows(jax.random.normal(key, (max(1, num // num_classes), z_dim), jnp.float32),
                      num_classes)


def class_grid(images_BHWC: np.ndarray, y_B=None) -> np.ndarray:
    """``grid`` of ``class_rows``' images, one row per class; without ``y_B``, ``grid``'s
    square layout."""
    if y_B is None:
        return grid(images_BHWC)
    return grid(images_BHWC, cols=len(images_BHWC) // len(np.unique(np.asarray(y_B))))
