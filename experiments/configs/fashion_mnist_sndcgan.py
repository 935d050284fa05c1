"""The README's main job on Fashion-MNIST 28x28: mnist_sndcgan.py (DCGAN G, SN-DCGAN D with
biases, hinge loss, batch 64, 16,000 steps) on ``dataset.name="fashion_mnist"``, with FID,
KID, IS, precision and recall of 10,000 EMA samples by the Fashion-MNIST classifier every
4,000 steps, at the learning rate it was measured with, Adam(4e-4, b1=0, b2=0.9): MNIST's
8e-4 is untried on Fashion-MNIST (docs/quality.md).

  python -m experiments.main --config=experiments/configs/fashion_mnist_sndcgan.py --workdir=runs/fashion_sndcgan

Expected on a 2-core CPU: about 9 minutes a run once the classifier is cached; the mean and
spread over 3 seeds are in docs/quality.md. ``:smoke`` runs 20 steps of a narrow model on
2,048 images in seconds.
"""
from experiments.configs import mnist_sndcgan


def get_config(variant: str | None = None):
    c = mnist_sndcgan.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.eval.extractor = "fashion_mnist"
    for opt in (c.optimizer.g, c.optimizer.d):
        opt.learning_rate = 4e-4
    return c
