"""Images per second of the evaluation's feature extractors on this machine's JAX device.

  python -m experiments.eval_benchmark [--inception_batch=16] [--mnist_batch=1000]

The Inception runs on 28x28 inputs resized to 299 (its cost does not depend on the input
size) with the converted weights when found, else random weights of the same shapes.
"""
import json

from absl import app, flags, logging
from flax import traverse_util

from gan_jax.eval import features, inception_weights as iw

_INCEPTION_BATCH = flags.DEFINE_integer("inception_batch", 16, "Inception batch size.")
_MNIST_BATCH = flags.DEFINE_integer("mnist_batch", 1000, "MNIST classifier batch size.")
_BATCHES = flags.DEFINE_integer("batches", 5, "Timed batches per extractor.")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        params, digest = iw.load(iw.resolve_path())
    except iw.InceptionWeightsError:
        flat = iw.random_params(0)
        params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
        digest = "random"
    rows = [features.throughput(features.inception(params, weights_sha256=digest),
                                _INCEPTION_BATCH.value, (28, 28, 3), batches=_BATCHES.value),
            features.throughput(features.get("mnist"), _MNIST_BATCH.value, (28, 28, 1),
                                batches=_BATCHES.value)]
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    app.run(main)
