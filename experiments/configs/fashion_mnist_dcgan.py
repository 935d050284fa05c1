"""DCGAN on Fashion-MNIST 28x28: mnist_dcgan.py's model, optimisers, batch and 5,000 steps
(5.3 epochs) on ``dataset.name="fashion_mnist"`` (the offline copy from Debian's
dataset-fashion-mnist, written into the data dir on first use), with FID, KID and IS of
10,000 EMA samples by the Fashion-MNIST classifier at steps 2,500 and 5,000.

  python -m experiments.main --config=experiments/configs/fashion_mnist_dcgan.py --workdir=runs/fashion_dcgan

Expected on a 2-core CPU: about 3 minutes (measured 2 min 58 s: 159 s of training at 33
steps/s, 10 s of compiling, 8 s of grids, evaluations and checkpoints), once the
Fashion-MNIST classifier is cached (training it first adds about 2.5 minutes); FID 166.3 at
step 5,000 (267.0 at 2,500; KID 9.75, IS 6.15; over 3 seeds 163.5 ± 4.5, docs/quality.md)
against a floor of 1.32, the real test images' FID (``python -m
experiments.eval_calibration --dataset=fashion_mnist``). The final
grid, runs/fashion_dcgan/samples/final.png, shows recognisable trousers, tops, pullovers,
sneakers and ankle boots, many of them blurred or malformed. ``:smoke`` runs 20 steps of a
narrow model on 2,048 images in seconds.
"""
from experiments.configs import mnist_dcgan


def get_config(variant: str | None = None):
    c = mnist_dcgan.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.eval.extractor = "fashion_mnist"  # What the dataset's name picks anyway; said here.
    return c
