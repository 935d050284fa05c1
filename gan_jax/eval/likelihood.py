"""A VAE's test-set negative ELBO: nats per image and bits per dimension, on the dataset's
held-out split. The bound is computed in batches with one sample of z per image from a fixed
seed, so a checkpoint gives the same number each time."""
import time

import jax
import numpy as np

from gan_jax import elbo
from gan_jax.data import sources

BATCH = 1000


def test_nelbo(nelbo_fn, dataset: dict, *, likelihood: str, split: str = "test",
               data_dir: str | None = None, seed: int = 0, max_examples: int | None = None):
    """``nelbo_fn(images_uint8, labels or None, key) -> -ELBO per image`` (nats) over the
    ``split`` of ``dataset`` (a config's dataset group, as a dict). Returns {"nll", "bits_per_dim",
    "nll_provenance"}: the mean -ELBO (an upper bound on -log p(x)), its bits per dimension
    (a Gaussian decoder's density counted on 8-bit bins, ``elbo.bits_per_dim``)."""
    t = time.time()
    d = sources.load_split(dataset, split, data_dir, max_examples)
    key = jax.random.PRNGKey(seed)
    total, n = 0.0, len(d.images)
    for i, start in enumerate(range(0, n, BATCH)):
        x = d.images[start:start + BATCH]
        y = None if d.labels is None else d.labels[start:start + BATCH].astype(np.int32)
        total += float(np.sum(np.asarray(nelbo_fn(x, y, jax.random.fold_in(key, i)),
                                         np.float64)))
    nats = total / n
    dims = int(np.prod(d.image_shape))
    return {"nll": nats, "bits_per_dim": float(elbo.bits_per_dim(nats, dims, likelihood)),
            "nll_provenance": {"split": split, "num": n, "seed": seed, "z_samples": 1,
                               "likelihood": likelihood, "dims": dims,
                               "seconds": round(time.time() - t, 2)}}
