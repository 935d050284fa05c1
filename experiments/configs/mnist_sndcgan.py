"""The README's main job: DCGAN on MNIST 28x28 with the recipe the quality study chose
(docs/quality.md): mnist_dcgan.py's G (BatchNorm, width 32) and an SN-DCGAN D (every layer
spectrally normalised and with a bias, no BatchNorm), hinge loss, Adam(8e-4, b1=0, b2=0.9)
for both players, batch 64, 16,000 steps; FID, KID, IS, precision and recall of 10,000 EMA
samples with the MNIST classifier every 4,000 steps. It is mnist_cdcgan.py without the
classes, with D's biases, at 4 times the learning rate and 3.2 times the steps.

  python -m experiments.main --config=experiments/configs/mnist_sndcgan.py --workdir=runs/mnist_sndcgan

Expected on a 2-core CPU: see README.md for the time and scores of one run, and
docs/quality.md for the mean and spread over 3 seeds. ``:smoke`` runs 20 steps of a narrow
model on 2,048 images in seconds.
"""
from experiments.configs import mnist_dcgan


def get_config(variant: str | None = None):
    c = mnist_dcgan.get_config(variant)
    c.model.spectral_norm = True
    c.model.d_bias = True
    c.loss = "hinge"
    for opt in (c.optimizer.g, c.optimizer.d):
        opt.learning_rate, opt.b1, opt.b2 = 8e-4, 0.0, 0.9
    if not variant:
        c.num_steps = 16_000
        c.eval.every, c.eval.metrics = 4000, "fid,kid,is,pr"
    return c
