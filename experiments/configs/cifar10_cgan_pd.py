"""cGAN-PD on CIFAR-10 32x32 with Mimicry's settings: cifar10_sngan.py's model, loss,
optimisers, schedule and evaluation, made class-conditional as in Miyato and Koyama 2018
(the SNGAN generator with conditional BatchNorm: each BatchNorm's scale and shift looked up
from the class asked for, 4,304,387 params; the projection discriminator: D's logit plus
<embed(y), features>, 1,055,105 params). D sees the real images' labels; G's classes are
drawn uniformly, per step, like its latents (Mimicry draws them uniformly too).

  python -m experiments.main --config=experiments/configs/cifar10_cgan_pd.py --workdir=runs/cifar10_cgan_pd
  python -m experiments.evaluate --workdir=runs/cifar10_cgan_pd --no-ema --extractor=inception --metrics=fid,is,kid --num=50000

The dataset and the FID weights: as cifar10_sngan.py says (``tfds build cifar10
--file_format=array_record --data_dir=DIR`` on a machine with internet, then copy
DIR/cifar10 into the data dir here; without it the run stops with one ``error:`` line).

Expected result, from the source, NOT from gan_jax: Mimicry's table gives FID 10.84 +- 0.03
(IS 8.25, KID 0.0070) for cGAN-PD on CIFAR-10: 100k steps, batch 64, n_dis 5, 50,000
generated against 50,000 real training images, TF Inception, its raw G in eval mode
(here the second command: ``--no-ema``; gan_jax's FID of a conditional G draws a
class-balanced sample, 5,000 of each class, where Mimicry draws the classes uniformly at
random). With ``--metrics=fid,intra_fid`` it adds intra-FID, the mean of the ten per-class
FIDs against each class's own training images. This config has NOT been run: no GPU and no
CIFAR-10 where it was written, so its time and score are unmeasured. The grids (one class
per row) and the in-loop FID (class-balanced, 10,000 samples every 10,000 steps) use the
EMA G (decay 0.9999 from step 1,000), as in cifar10_sngan.py.

``:smoke`` trains a narrow conditional model (one D update per step) for 2 steps on
whatever ``cifar10`` the data dir holds (the tests write a tiny one), in seconds;
evaluation off.
"""
from experiments.configs import cifar10_sngan


def get_config(variant: str | None = None):
    c = cifar10_sngan.get_config(variant)
    c.model.conditional = True
    c.model.fake_labels = "uniform"
    c.num_samples = 20 if variant == "smoke" else 100  # Grids of 10 rows, one per class.
    return c
