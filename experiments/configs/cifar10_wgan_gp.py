"""WGAN-GP (Gulrajani et al. 2017) on CIFAR-10 32x32 with Mimicry's settings: the ResNet of
cifar10_sngan.py (G 256, D 128 channels; 4,276,739 and 1,053,825 params) without spectral
norm in D, the Wasserstein loss with a gradient penalty of weight 10 on random
interpolates of real and fake images, n_dis 5, Adam(2e-4, b1=0, b2=0.9) for both players
with both learning rates decayed linearly to 0, batch 64, 100,000 G steps.

  python -m experiments.main --config=experiments/configs/cifar10_wgan_gp.py --workdir=runs/cifar10_wgan_gp
  python -m experiments.evaluate --workdir=runs/cifar10_wgan_gp --no-ema --extractor=inception --metrics=fid,is,kid --num=50000

The dataset and the FID weights: as cifar10_sngan.py says (``tfds build cifar10
--file_format=array_record --data_dir=DIR`` on a machine with internet, then copy
DIR/cifar10 into the data dir here; without it the run stops with one ``error:`` line).

Expected result, from the source, NOT from gan_jax: Mimicry's table gives FID 22.29 +- 0.06
(IS 7.33, KID 0.0204) for WGAN-GP on CIFAR-10: 100k steps, batch 64, n_dis 5, 50,000
generated against 50,000 real training images, TF Inception, its raw G in eval mode (here
the second command: ``--no-ema``). Mimicry's WGAN-GP discriminator differs from this one
in two details: it normalises each residual block after the first with LayerNorm, and
average-pools its features over space (gan_jax's D has no normalisation and sums over
space, as SNGAN's does); Mimicry's G also upsamples bilinearly (cifar10_sngan.py). This config
has NOT been run: no GPU and no CIFAR-10 where it was written, so its time and score are
unmeasured. The in-loop FID and the grids use the EMA G (decay 0.9999 from step 1,000), as
in cifar10_sngan.py.

``:smoke`` trains a narrow model (one D update per step) for 2 steps on whatever
``cifar10`` the data dir holds (the tests write a tiny one), in seconds, gradient penalty
included; evaluation off.
"""
from experiments.configs import cifar10_sngan


def get_config(variant: str | None = None):
    c = cifar10_sngan.get_config(variant)
    c.model.spectral_norm = False
    c.loss = "wasserstein"
    c.gp_weight = 10.0
    return c
