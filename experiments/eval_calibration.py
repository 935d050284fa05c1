"""The calibration tables of docs/evaluation.md: FID, KID and IS of the 10,000 real test
images against the 60,000 training images (the floor), then of the test images with
increasing Gaussian noise and blur, with the dataset's own classifier as the extractor;
then the floor's precision and recall (k = 3, 10,000 images a side).

  python -m experiments.eval_calibration [--dataset=fashion_mnist]
"""
from absl import app, flags

from experiments import cli
from gan_jax.data import sources
from gan_jax.eval import calibration, features, reference

_DATASET = flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist"],
                             "The dataset, measured with its own classifier.")


def main(argv):
    with cli.script(argv):
        name = _DATASET.value
        test = sources.load(name, "test")  # Written into the data dir first where needed.
        extractor = features.get(name)
        ref = reference.get(extractor, name, "train")
        print(calibration.markdown(calibration.table(extractor, ref, test.images)))
        pr = calibration.floor_precision_recall(extractor, ref, test.images)
        print(f"\nthe floor's precision {pr['precision']:.4f}, recall {pr['recall']:.4f}")


if __name__ == "__main__":
    app.run(main)
