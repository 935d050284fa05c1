"""SNGAN (Miyato et al. 2018) on CIFAR-10 32x32 with Mimicry's settings (Lee and Town 2020,
github.com/kwotsin/mimicry): the CIFAR ResNet (G: z 128, 256 channels in every block,
4,276,739 params; D: 128 channels, spectral norm on every layer, 1,053,825 params), hinge
loss, n_dis 5, Adam(2e-4, b1=0, b2=0.9) for both players with both learning rates decayed
linearly to 0, batch 64, 100,000 G steps, on the 50,000 training images. The other
CIFAR-10 and CelebA configs start from ``get_config`` here.

  python -m experiments.main --config=experiments/configs/cifar10_sngan.py --workdir=runs/cifar10_sngan
  python -m experiments.evaluate --workdir=runs/cifar10_sngan --no-ema --extractor=inception --metrics=fid,is,kid --num=50000

The dataset: gan_jax does not download it. On a machine with internet and TensorFlow
(``pip install tensorflow tensorflow-datasets``) run ``tfds build cifar10
--file_format=array_record --data_dir=DIR`` and copy DIR/cifar10 into the data dir here
(--config.dataset.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets). Without it the
run stops at once with one ``error:`` line saying this. The FID Inception's weights (the
converted pytorch-fid file, docs/evaluation.md) must be there too: the in-loop FID loads them
before the first step and stops the run without them; --config.eval.every=0 trains without.

Expected result, from the source, NOT from gan_jax: Mimicry's table gives FID 16.77 +- 0.04
(IS 7.97, KID 0.0125) for SNGAN on CIFAR-10 (its 100k steps, batch 64, n_dis 5, 50,000
generated against 50,000 real training images, TF Inception); on the same footing its
WGAN-GP scores 22.29 (cifar10_wgan_gp.py) and cGAN-PD 10.84 (cifar10_cgan_pd.py).
PyTorch-StudioGAN's protocol gives SNGAN 9.01: another training and evaluation setup, not
comparable with this config's number. This config has NOT been run: it was written on a
2-core CPU without a GPU and without CIFAR-10, so neither its time nor its score is
measured. For scale, the same model and step in PyTorch took 152 ms per iteration (eager,
fp32) on one H200 (measured 2026-11-28), about 4.2 hours for 100,000 steps.

The number to compare with Mimicry's is the second command's: the raw G (``--no-ema``,
whose BatchNorm layers use their running statistics, as Mimicry's ``netG.eval()``), 50,000
samples, all 50,000 training images as the reference (the run's training split), FID
Inception. Mimicry keeps no EMA of G. This config keeps one (decay 0.9999 from step 1,000,
BigGAN-PyTorch's CIFAR setting: it averages about the last 10,000 steps, the last tenth of
the run, where the decayed learning rate is under a tenth of its start) for the grids and
the in-loop evaluation, which always scores the EMA G (its BatchNorm layers use each
draw's batch statistics): FID of 10,000 samples every 10,000 steps and at the end. An
FID of 10,000 samples reads a few points higher than one of 50,000, so those values chart
progress; they are not the comparable number. ``experiments.evaluate`` without
``--no-ema`` scores the EMA G at 50,000 samples too.

Mimicry's ResNets upsample bilinearly in G; gan_jax's, like the Chainer SNGAN of Miyato
et al., repeat pixels (nearest). At 32 px the layers and parameter counts are Mimicry's.

``:smoke`` trains a narrow model (one D update per step) for 2 steps on whatever
``cifar10`` the data dir holds (the tests write a tiny one), in seconds; evaluation off.
"""
from gan_jax.trainer.config import defaults


def get_config(variant: str | None = None):
    c = defaults()
    c.dataset.name = "cifar10"
    c.model.name = "resnet"
    c.model.z_dim, c.model.g_width, c.model.d_width = 128, 256, 128
    c.model.spectral_norm = True
    c.loss, c.n_dis = "hinge", 5
    for opt in (c.optimizer.g, c.optimizer.d):
        opt.learning_rate, opt.b1, opt.b2, opt.eps = 2e-4, 0.0, 0.9, 1e-8
        opt.decay = "linear"
    c.batch_size = 64
    c.num_steps = 100_000
    c.ema.decay, c.ema.start = 0.9999, 1000
    c.log_every, c.sample_every = 500, 5000
    c.checkpoint.every = 5000
    c.eval.every, c.eval.num, c.eval.metrics = 10_000, 10_000, "fid"
    c.eval.extractor = "inception"
    if variant == "smoke":
        # Narrow, one D update per step and one step per dispatch: XLA:CPU unrolls the D
        # updates and the steps of a dispatch, and compiling them is most of a smoke run.
        c.model.z_dim, c.model.g_width, c.model.d_width = 16, 16, 16
        c.n_dis = 1
        c.batch_size = 8
        c.num_steps, c.steps_per_dispatch, c.log_every, c.sample_every = 2, 1, 1, 2
        c.checkpoint.every = 2  # Saving takes seconds here: the final checkpoint only.
        c.num_samples = 16
        c.ema.start = 0
        c.eval.every = 0
    elif variant:
        raise ValueError(f"Unknown variant {variant!r}; use 'smoke' or none.")
    return c
