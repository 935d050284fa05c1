"""The MNIST calibration table of docs/evaluation.md: FID, KID and IS of the 10,000 real test
images against the 60,000 training images (the floor), then of the test images with
increasing Gaussian noise and blur.

  python -m experiments.eval_calibration
"""
from absl import app

from experiments import cli
from gan_jax.data import sources
from gan_jax.eval import calibration, features, reference


def main(argv):
    with cli.script(argv):
        extractor = features.get("mnist")
        ref = reference.get(extractor, "mnist", "train")
        test = sources.load("mnist", "test")
        print(calibration.markdown(calibration.table(extractor, ref, test.images)))


if __name__ == "__main__":
    app.run(main)
