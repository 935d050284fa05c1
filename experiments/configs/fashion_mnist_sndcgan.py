"""The README's main-job recipe on Fashion-MNIST 28x28: mnist_sndcgan.py (DCGAN G, SN-DCGAN
D, hinge loss, Adam(4e-4, b1=0, b2=0.9), batch 64) for 10,000 steps on
``dataset.name="fashion_mnist"``, with FID, KID, IS, precision and recall of 10,000 EMA
samples by the Fashion-MNIST classifier every 2,500 steps.

  python -m experiments.main --config=experiments/configs/fashion_mnist_sndcgan.py --workdir=runs/fashion_sndcgan

Expected on a 2-core CPU: about 6 minutes a run once the classifier is cached; over 3 seeds
FID 91.6 ± 1.6 at step 10,000 against the floor of 1.32, against 166.3 for
fashion_mnist_dcgan.py (docs/quality.md). ``:smoke`` runs 20 steps of a narrow model on
2,048 images in seconds.
"""
from experiments.configs import mnist_sndcgan


def get_config(variant: str | None = None):
    c = mnist_sndcgan.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.eval.extractor = "fashion_mnist"
    if not variant:
        c.num_steps = 10_000
    return c
