"""Evaluates a run's checkpoint and appends one JSON line per metric to WORKDIR/eval.jsonl.

  python -m experiments.evaluate --workdir=runs/mnist_dcgan --metrics=fid,kid,is,pr \
      --num=50000 [--step=N] [--extractor=mnist|fashion_mnist|inception] [--no-ema] \
      [--seed=0] [--inception_weights=PATH]

Metrics: fid, kid, is, pr (precision/recall), dc (density/coverage), and for a conditional
generator intra_fid (mean of per-class FIDs) and class_acc (share of samples the dataset's
classifier assigns to the class asked for; MNIST and Fashion-MNIST), and for a VAE nll (the
test split's negative ELBO: nats per image and bits_per_dim; alone, it draws no samples).
A conditional
generator's samples are class-balanced. The extractor defaults to the MNIST (Fashion-MNIST)
classifier for MNIST (Fashion-MNIST) runs and the FID Inception otherwise; the reference is
the run's training split.
"""
import json
import sys

from absl import flags

from experiments import cli
from gan_jax.trainer.evaluation import evaluate_checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
_METRICS = flags.DEFINE_string("metrics", "fid,kid,is",
                               "Comma-separated: fid,kid,is,pr,dc; for a conditional "
                               "generator also intra_fid,class_acc; for a VAE nll.")
_NUM = flags.DEFINE_integer("num", 10_000, "Generated samples.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
_EXTRACTOR = flags.DEFINE_string("extractor", None,
                                 "mnist, fashion_mnist or inception; default by dataset.")
_EMA = flags.DEFINE_boolean("ema", True, "Use the EMA generator (--noema / --no-ema: raw G).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latents and of KID's subsets.")
_WEIGHTS = flags.DEFINE_string("inception_weights", None,
                               "Converted FID Inception .npz, for the inception extractor "
                               "only; default $GAN_JAX_INCEPTION_WEIGHTS.")
_REF_SPLIT = flags.DEFINE_string("reference_split", None, "Default: the run's training split.")
_REF_NUM = flags.DEFINE_integer("reference_num", None, "Reference images; default all.")
_KNN_NUM = flags.DEFINE_integer("knn_num", 10_000, "Samples per set for pr and dc.")
_RUN = flags.DEFINE_integer("run", None, "Which run of a job of several runs (config.runs); "
                            "default every run, then their mean, std, min and max.")


def main(argv):
    with cli.script(argv):
        rows = evaluate_checkpoint(
            _WORKDIR.value, _METRICS.value, _NUM.value, step=_STEP.value,
            extractor=_EXTRACTOR.value, ema=_EMA.value, seed=_SEED.value,
            inception_weights=_WEIGHTS.value, reference_split=_REF_SPLIT.value,
            reference_num=_REF_NUM.value, knn_num=_KNN_NUM.value, run=_RUN.value)
    for row in rows:
        values = {k: v for k, v in row.items() if k not in ("provenance", "time")}
        print(json.dumps(values))
    print(f"appended {len(rows)} lines to {_WORKDIR.value}/eval.jsonl "
          f"({rows[0]['provenance']['seconds']:.1f}s)")


if __name__ == "__main__":
    sys.argv = ["--noema" if a == "--no-ema" else a for a in sys.argv]
    cli.run(main)
