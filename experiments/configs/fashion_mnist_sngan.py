"""Class-conditional SNGAN on Fashion-MNIST 28x28, sized for a 2-core CPU: the ResNet of
cifar10_sngan.py at 28 px (G 7x7 -> 14 -> 28, conditional BatchNorm; D of four residual
blocks, spectrally normalised, with a projection of the class), both 32 channels wide, and
SNGAN's hinge loss and Adam(2e-4, b1=0, b2=0.9) with the rate decayed linearly to 0, batch
64, an EMA of G (decay 0.995), 6,000 steps of one D update each (SNGAN takes five: too slow
on a CPU).
G also takes the class one-hot beside z (``model.class_input``, as mnist_cdcgan.py), and
its classes are drawn uniformly. It scores FID, intra-FID and class accuracy of 10,000
class-balanced EMA samples by the Fashion-MNIST classifier, halfway and at the end.

  python -m experiments.main --config=experiments/configs/fashion_mnist_sngan.py --workdir=runs/fashion_sngan
  python -m experiments.sample --workdir=runs/fashion_sngan --num=100

Fashion-MNIST is the offline copy (docs/data.md), written into the data dir on first use.
Expected on a 2-core CPU: see docs/evaluation.md for the measured time, the class accuracy
(beside the classifier's own 92.6% on the real test images) and the FID against the
Fashion-MNIST floor of 1.32. ``:smoke`` runs 4 steps of a narrow model in seconds.
"""
from experiments.configs import cifar10_sngan


def get_config(variant: str | None = None):
    c = cifar10_sngan.get_config(variant)
    c.dataset.name = "fashion_mnist"
    c.model.conditional = True
    c.model.class_input = True
    c.eval.extractor = "fashion_mnist"
    if variant:
        c.dataset.max_examples = 2048
        c.num_steps, c.checkpoint.every, c.sample_every = 4, 4, 4
        return c
    c.model.z_dim, c.model.g_width, c.model.d_width = 128, 32, 32
    # One D update per G update, not SNGAN's five: on this CPU five cost 0.7 s a step, and
    # 600 such steps left class accuracy at 21% (docs/evaluation.md).
    c.n_dis = 1
    c.num_steps = 6000
    # One step per dispatch: XLA:CPU unrolls the steps of a dispatch, and a step of a
    # quarter second leaves little dispatch overhead to save.
    c.steps_per_dispatch = 1
    # 0.995 averages about the last 200 steps: the halfway evaluation at 3,000 then scores
    # that stage of the run, not an average reaching back to step 1,000 (0.999).
    c.ema.decay, c.ema.start = 0.995, 0
    c.log_every, c.sample_every = 100, 1000
    c.checkpoint.every = 1000
    c.eval.every, c.eval.num, c.eval.metrics = 3000, 10_000, "fid,intra_fid,class_acc"
    return c
