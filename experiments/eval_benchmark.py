"""Images per second of the evaluation's feature extractors on this machine's JAX device, and
the FID shift of computing the Inception in bfloat16.

  python -m experiments.eval_benchmark [--inception_batch=16] [--mnist_batch=1000] \
      [--dtypes=float32,bfloat16] [--extractors=inception,mnist] [--fid_shift_num=0] [--out=F]

The Inception runs on 28x28 inputs resized to 299 (its cost does not depend on the input
size) with the converted weights when found, else random weights of the same shapes.
``--fid_shift_num=N`` extracts features of two sets of N synthetic images (blocky and
noisy) in float32 and in each other dtype and reports FID(bfloat16) - FID(float32); with
random weights that says only how far the arithmetic moves FID, not where real FIDs land.
On a GPU (no tensorflow-datasets needed): --extractors=inception --inception_batch=500.
"""
import json
import pathlib

import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import traverse_util

from experiments import cli
from gan_jax import files
from gan_jax.eval import features, inception_weights as iw
from gan_jax.eval import metrics as M

_INCEPTION_BATCH = flags.DEFINE_integer("inception_batch", 16, "Inception batch size.")
_MNIST_BATCH = flags.DEFINE_integer("mnist_batch", 1000, "MNIST classifier batch size.")
_BATCHES = flags.DEFINE_integer("batches", 5, "Timed batches per extractor.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Inception compute dtypes.")
_EXTRACTORS = flags.DEFINE_list("extractors", ["inception", "mnist"], "What to time.")
_FID_SHIFT_NUM = flags.DEFINE_integer("fid_shift_num", 0, "Images per set for the FID "
                                      "shift of each dtype against float32; 0: skip.")
_OUT = flags.DEFINE_string("out", None, "Also write the rows to this JSON file.")


def _inception_params():
    try:
        params, digest = iw.load(iw.resolve_path())
    except iw.InceptionWeightsError:
        flat = iw.random_params(0)
        params = traverse_util.unflatten_dict(flat, sep="/")
        digest = "random"
    return params, digest


# The throughput's images and the FID shift's sets share shape and dtype, so each dtype's
# Inception compiles once (on a GPU a batch-500 compile is the slow part of this script).
_INCEPTION_INPUT = (28, 28, 3)


def _two_sets(n: int):
    """Blocky and noisy images, float32 on the 8-bit grid in [-1, 1]."""
    rng = np.random.RandomState(0)
    blocky = np.repeat(np.repeat(rng.uniform(0, 255, (n, 7, 7, 3)), 4, 1), 4, 2)
    noisy = rng.uniform(0, 255, (n, *_INCEPTION_INPUT))
    return [(np.rint(x) / 127.5 - 1).astype(np.float32) for x in (blocky, noisy)]


def fid_shift(extractors: dict, dtype: str, n: int, batch: int, digest: str) -> dict:
    """FID between two synthetic sets with features in ``dtype`` and in float32
    (``extractors``: dtype name -> Inception extractor)."""
    sets = _two_sets(n)
    fids = {}
    for dt in ("float32", dtype):
        a, b = (features.extract(extractors[dt], features.padded_batches(s, batch),
                                 keep_features=False, keep_logits=False) for s in sets)
        fids[dt] = M.frechet_distance(a.moments, b.moments)
    return {"dtype": dtype, "images_per_set": n, "weights_sha256": digest,
            "fid_float32": fids["float32"], f"fid_{dtype}": fids[dtype],
            "fid_shift": fids[dtype] - fids["float32"]}


def main(argv):
    with cli.script(argv):
        _main()


def _main():
    rows = []
    if "inception" in _EXTRACTORS.value:
        params, digest = _inception_params()
        extractors = {dt: features.inception(params, weights_sha256=digest, dtype=jnp.dtype(dt))
                      for dt in ("float32", *_DTYPES.value)}
        for dt in _DTYPES.value:
            rows.append({**features.throughput(extractors[dt], _INCEPTION_BATCH.value,
                                               _INCEPTION_INPUT, batches=_BATCHES.value),
                         "dtype": dt, "weights_sha256": digest})
            print(json.dumps(rows[-1]), flush=True)
            if _FID_SHIFT_NUM.value and dt != "float32":
                rows.append(fid_shift(extractors, dt, _FID_SHIFT_NUM.value,
                                      _INCEPTION_BATCH.value, digest))
                print(json.dumps(rows[-1]), flush=True)
    if "mnist" in _EXTRACTORS.value:
        rows.append(features.throughput(features.get("mnist"), _MNIST_BATCH.value,
                                        (28, 28, 1), batches=_BATCHES.value))
        print(json.dumps(rows[-1]), flush=True)
    if _OUT.value:
        files.atomic_write_bytes(pathlib.Path(_OUT.value), json.dumps(rows, indent=2).encode())


if __name__ == "__main__":
    app.run(main)
