"""Drawing images from a generator's params, raw or EMA."""
import jax
import jax.numpy as jnp
import numpy as np


def generate(G, params, g_vars, z_BZ, *, batch_stats: bool = False):
    """Images in [-1, 1], float32. BatchNorm uses the running statistics in ``g_vars``, or
    with ``batch_stats=True`` the statistics of this batch: the EMA params never produced
    the running statistics, so their samples are drawn with the batch's own statistics."""
    variables = {"params": params, **g_vars}
    if batch_stats and "batch_stats" in g_vars:
        x, _ = G.apply(variables, z_BZ, train=True, mutable=["batch_stats"])
    else:
        x = G.apply(variables, z_BZ, train=False)
    return x.astype(jnp.float32)


def to_uint8(x_BHWC) -> np.ndarray:
    x = np.asarray(jax.device_get(x_BHWC), np.float32)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images_BHWC: np.ndarray, cols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tiles uint8 images into one uint8 [H', W', C] image with ``pad`` black pixels between."""
    b, h, w, c = images_BHWC.shape
    cols = cols or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / cols))
    out = np.zeros((rows * (h + pad) + pad, cols * (w + pad) + pad, c), np.uint8)
    for i, im in enumerate(images_BHWC):
        r, q = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + q * (w + pad):pad + q * (w + pad) + w] = im
    return out


def load_generator(workdir, *, step: int | None = None, ema: bool = True):
    """Reads G's part of a run's checkpoint (D and the optimizer states are never built).
    Returns (draw, z_dim, step, run_info): ``draw(z_BZ)`` is a jitted function giving float32
    images in [-1, 1], NHWC."""
    import pathlib

    import ml_collections

    from gan_jax import models
    from gan_jax.checkpoint import CheckpointError, Checkpointer, leaf_specs, shape_mismatches

    directory = pathlib.Path(workdir) / "checkpoints"
    ckpt = Checkpointer(directory, read_only=True)
    try:
        step, info, g = ckpt.restore_generator(step)
    finally:
        ckpt.close()
    config = ml_collections.ConfigDict(info["config"])
    G, _ = models.build(config.model, tuple(info["image_shape"]), config.dtype)
    expected = jax.eval_shape(lambda: G.init(jax.random.PRNGKey(0),
                                             jnp.zeros((2, G.z_dim)), train=False))
    saved = {"params": g["params"], **(g.get("vars") or {})}
    problems = shape_mismatches(leaf_specs(saved), leaf_specs(expected))
    if problems:
        raise CheckpointError(f"The generator in {directory / str(step)} does not match the "
                              f"{config.model.name} model of its config:\n  "
                              + "\n  ".join(problems[:20]))
    params = g["ema_params"] if ema else g["params"]
    g_vars = g.get("vars") or {}
    draw = jax.jit(lambda z: generate(G, params, g_vars, z, batch_stats=ema))
    return draw, G.z_dim, step, info


def latents(seed: int, num: int, z_dim: int):
    """The latent batch of ``seed``, drawn whole: the same seed gives the same ``z`` however
    it is later cut into chunks."""
    return jax.random.normal(jax.random.PRNGKey(seed), (num, z_dim), jnp.float32)


def in_chunks(draw, z_BZ, chunk: int):
    """Yields ``draw``'s images for ``z_BZ`` in order, ``chunk`` latents per call. Every call
    gets exactly ``chunk`` latents, the last topped up with the first ones and cut back:
    EMA draws of a BatchNorm generator use the batch's own statistics, and a small leftover
    batch (1 image of 10,001) would be normalised by itself. It also keeps one shape to
    compile. With batch statistics the images depend on ``chunk``; keep it fixed."""
    n = len(z_BZ)
    if n <= chunk:
        yield draw(z_BZ)
        return
    for i in range(0, n, chunk):
        z = z_BZ[i:i + chunk]
        k = len(z)
        yield draw(z if k == chunk else jnp.concatenate([z, z_BZ[:chunk - k]]))[:k]


def from_checkpoint(workdir, num: int = 64, *, step: int | None = None, ema: bool = True,
                    seed: int = 0, chunk: int = 1000):
    """Draws ``num`` images (uint8 NHWC) from a run's checkpoint, reading only G's part and
    the run info; D and the optimizer states are never built. ``z`` comes from ``seed``
    alone, so the same call draws the same images. Returns (images, step)."""
    draw, z_dim, step, _ = load_generator(workdir, step=step, ema=ema)
    z = latents(seed, num, z_dim)
    out = [to_uint8(x) for x in in_chunks(draw, z, chunk)]
    return np.concatenate(out), step
