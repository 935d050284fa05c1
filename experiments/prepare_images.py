"""Writes a folder (or .zip) of images into the tfds data dir as a dataset to train on:

  python -m experiments.prepare_images --src=DIR_OR_ZIP --name=NAME --resolution=64 \\
      [--channels=1|3] [--labels=none|folders] [--data_dir=DIR] [--overwrite]
  python -m experiments.main --config=experiments/configs/folder_dcgan.py \\
      --config.dataset.name=NAME --workdir=runs/NAME

Images are centre-cropped to squares and resized; unreadable files are skipped and listed.
With --labels=folders each subfolder of the source is a class. The data dir is --data_dir,
else $TFDS_DATA_DIR, else ~/tensorflow_datasets (pass the same to training with
--config.dataset.data_dir). See gan_jax/data/folder.py.
"""
import sys

from absl import app, flags

from experiments import cli
from gan_jax.data import folder

_SRC = flags.DEFINE_string("src", None, "A folder of images, or a .zip of one.")
_NAME = flags.DEFINE_string("name", None, "The dataset's name: lowercase, digits, underscores.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Side of the square images stored.")
_CHANNELS = flags.DEFINE_enum("channels", "3", ["1", "3"], "1: grayscale, 3: RGB.")
_LABELS = flags.DEFINE_enum("labels", "none", list(folder.LABELS),
                            "folders: each immediate subfolder of --src is a class.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "The tfds data dir (default: $TFDS_DATA_DIR, "
                                "else ~/tensorflow_datasets).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a dataset of that name.")
flags.mark_flags_as_required(["src", "name", "resolution"])


def _progress(done: int, total: int) -> None:
    if total >= 2000 and (done == total or done % (total // 10) == 0):
        print(f"prepare_images: read {done}/{total} files", file=sys.stderr, flush=True)


def main(argv):
    with cli.script(argv):
        r = folder.prepare(_SRC.value, _NAME.value, _RESOLUTION.value,
                           channels=int(_CHANNELS.value), labels=_LABELS.value,
                           data_dir=_DATA_DIR.value or None, overwrite=_OVERWRITE.value,
                           progress=_progress)
    h, w, c = r.image_shape
    print(f"prepare_images: wrote {r.num_examples} images of {h}x{w}x{c} as dataset "
          f"{r.name!r} in {r.path}")
    if r.class_names is not None:
        print(f"prepare_images: {len(r.class_names)} classes: "
              + ", ".join(f"{n} ({k})" for n, k in zip(r.class_names, r.class_counts)))
    print(f"prepare_images: skipped {len(r.skipped)} unreadable "
          f"file{'' if len(r.skipped) == 1 else 's'}" + (":" if r.skipped else "."))
    for path, why in r.skipped:
        print(f"  {path}: {why}")
    for count, what in ((r.upscaled, "images smaller than the resolution were enlarged"),
                        (r.ignored, "files without an image suffix (or hidden) were ignored"),
                        (len(r.removed), "temporary folders left by killed runs were removed")):
        if count:
            print(f"prepare_images: {count} {what}.")
    data_dir = f" --config.dataset.data_dir={_DATA_DIR.value}" if _DATA_DIR.value else ""
    print(f"prepare_images: train with: python -m experiments.main "
          f"--config=experiments/configs/folder_dcgan.py --config.dataset.name={r.name}"
          f"{data_dir} --workdir=runs/{r.name}")


if __name__ == "__main__":
    app.run(main)
