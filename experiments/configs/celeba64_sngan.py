"""SNGAN on CelebA at 64x64 with Mimicry's settings: tfds's ``celeb_a`` (aligned and cropped
faces, 218x178, no class label), each image centre-cropped to 178x178 and resized to 64x64
as it loads; the 64-px SNGAN ResNet with Mimicry's widths (G from 1024 channels halving to
64; D from 64 doubling to 1024, spectral norm; 12,220,675 and 10,141,441 params, as
Mimicry's), hinge loss, n_dis 5, Adam(2e-4, b1=0, b2=0.9) for both players with both
learning rates decayed linearly to 0, batch 64, 100,000 G steps. The rest (EMA of G,
grids, in-loop FID every 10,000 steps) is cifar10_sngan.py's.

  python -m experiments.main --config=experiments/configs/celeba64_sngan.py --workdir=runs/celeba64_sngan
  python -m experiments.evaluate --workdir=runs/celeba64_sngan --no-ema --extractor=inception --metrics=fid,is,kid --num=50000 --reference_num=50000

The dataset: gan_jax does not download it. On a machine with internet and TensorFlow
(``pip install tensorflow tensorflow-datasets``) run ``tfds build celeb_a
--file_format=array_record --data_dir=DIR`` (tfds fetches it from Google Drive, which may
refuse while its quota is spent: try again later) and copy DIR/celeb_a into the data dir
here (--config.dataset.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets). Without
it the run stops at once with one ``error:`` line saying this. The run reads the 162,770
training images (2.0 GB at 64x64, held on the device), decoding and resizing them first on
the host (minutes). The FID weights: as cifar10_sngan.py says.

Expected result, from the source, NOT from gan_jax: Mimicry's table gives FID 5.71 +- 0.02
(IS 2.68, KID 0.0033) for SNGAN on CelebA 64x64 (100k steps, batch 64, n_dis 5, linear
decay, 50,000 generated against 50,000 real images, TF Inception, its raw G in eval mode:
here the second command, ``--no-ema``, against the first 50,000 training images).
Where this differs from Mimicry's run: Mimicry trains on all 202,599 images (train,
validation and test; gan_jax reads one split, so here the 162,770 of "train") and resizes
with torchvision's bilinear filter (gan_jax: bicubic); G upsamples as cifar10_sngan.py
says. This config has NOT been run: no GPU and no CelebA where it was written, so its time
and score are unmeasured.

``:smoke`` trains cifar10_sngan.py's narrow smoke model at 32x32 (one D update per step)
for 2 steps on whatever ``celeb_a`` the data dir holds (the tests write a tiny one),
centre-cropped and resized to 32, in seconds; evaluation off.
"""
from experiments.configs import cifar10_sngan


def get_config(variant: str | None = None):
    c = cifar10_sngan.get_config(variant)
    c.dataset.name = "celeb_a"
    c.dataset.label_key = ""  # celeb_a has attributes and landmarks, no class label.
    c.dataset.resolution = 64
    # The in-loop FID's reference: 50,000 real images, as Mimicry's (0 would be all 162,770).
    c.eval.reference_num = 50_000
    if variant == "smoke":
        # 32 px, as folder_dcgan.py's smoke run: the 64-px nets take twice as long to compile.
        c.dataset.resolution = 32
        return c
    c.model.g_width, c.model.d_width = 1024, 1024
    return c
