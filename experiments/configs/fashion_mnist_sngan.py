"""Class-conditional SNGAN on Fashion-MNIST 28x28 in Miyato et al.'s standard-CNN form: the
conditional DCGAN of mnist_cdcgan.py (G 7x7x64 -> 14x14x32 -> 28x28x1 with the class one-hot
beside z and conditional BatchNorm; D every layer spectrally normalised, no BatchNorm, a
projection of the class), hinge loss, Adam(2e-4, b1=0, b2=0.9), batch 64, 5,000 steps, an
EMA of G (0.999). It scores FID, intra-FID and class accuracy of 10,000 class-balanced EMA
samples by the Fashion-MNIST classifier at steps 2,500 and 5,000.

  python -m experiments.main --config=experiments/configs/fashion_mnist_sngan.py --workdir=runs/fashion_sngan
  python -m experiments.sample --workdir=runs/fashion_sngan --num=100

``:resnet`` is the SNGAN ResNet form (cifar10_sngan.py's blocks at 28 px, 32 channels, one
D update per step, the rate decayed to 0 over 15,000 steps, EMA 0.995, evaluated every
5,000 steps): on this CPU it takes about 70 minutes alone and stayed short of the
standard-CNN form's class accuracy (docs/evaluation.md has both).

Fashion-MNIST is the offline copy (docs/data.md), written into the data dir on first use.
Expected on a 2-core CPU: see docs/evaluation.md for the measured time, the class accuracy
(beside the classifier's own 92.6% on the real test images) and the FID against the
Fashion-MNIST floor of 1.32. ``:smoke`` runs 20 steps of a narrow model in seconds.
"""
from experiments.configs import cifar10_sngan, mnist_cdcgan


def get_config(variant: str | None = None):
    if variant == "resnet":
        return _resnet()
    c = mnist_cdcgan.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.eval.extractor = "fashion_mnist"
    return c


def _resnet():
    c = cifar10_sngan.get_config()
    c.dataset.name = "fashion_mnist"
    c.model.conditional = True
    c.model.class_input = True
    c.eval.extractor = "fashion_mnist"
    c.model.z_dim, c.model.g_width, c.model.d_width = 128, 32, 32
    # One D update per G update, not SNGAN's five: on this CPU five cost 0.7 s a step, and
    # 600 such steps left class accuracy at 21% (docs/evaluation.md).
    c.n_dis = 1
    c.num_steps = 15000
    # One step per dispatch: XLA:CPU unrolls the steps of a dispatch, and a step of a
    # quarter second leaves little dispatch overhead to save.
    c.steps_per_dispatch = 1
    # 0.995 averages about the last 200 steps: each evaluation scores that stage of the
    # run, not an average reaching back a thousand steps (0.999).
    c.ema.decay, c.ema.start = 0.995, 0
    c.log_every, c.sample_every = 100, 2500
    c.checkpoint.every = 2500
    c.eval.every, c.eval.num, c.eval.metrics = 5000, 10_000, "fid,intra_fid,class_acc"
    return c
