"""Any folder of images as a dataset: experiments.prepare_images (gan_jax.data.folder) writes
it into the tfds data dir; sources.load, the streaming pipeline and the trainer read it."""
import io
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from gan_jax.data import folder, sources, streaming
from tests.helpers import REPO, run_module

PREPARE = "experiments.prepare_images"
R = 32
RED, BLUE = (200, 40, 40), (40, 40, 200)
# (height, width): square, wide, tall, and not a multiple of anything.
SIZES = [(32, 32), (24, 40), (48, 30), (37, 53), (64, 64), (20, 20)]
FORMATS = ["png", "jpg", "webp"]


def _noisy(rng, size, color):
    base = np.asarray(color, np.int16) + rng.integers(-20, 21, (*size, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def make_source(root: pathlib.Path) -> pathlib.Path:
    """200 files in cats/ (red images) and dogs/ (blue ones), of mixed formats and sizes; in
    cats a grayscale PNG and a tall PNG whose centre square is white and whose top and bottom
    quarters are black; in dogs one corrupt file."""
    rng = np.random.default_rng(0)
    for cls, color in (("cats", RED), ("dogs", BLUE)):
        (root / cls).mkdir(parents=True)
        for i in range(98):
            fmt = FORMATS[i % 3]
            Image.fromarray(_noisy(rng, SIZES[i % len(SIZES)], color)).save(
                root / cls / f"{i:03d}.{fmt}", quality=90)
    Image.fromarray(np.full((30, 45), 120, np.uint8), "L").save(root / "cats/gray.png")
    tall = np.zeros((64, 32, 3), np.uint8)
    tall[16:48] = 255
    Image.fromarray(tall).save(root / "cats/tall.png")
    rgba = np.concatenate([_noisy(rng, (32, 32), BLUE), np.full((32, 32, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(root / "dogs/rgba.png")  # The 99th in dogs.
    (root / "dogs/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 20)
    assert sum(1 for _ in root.rglob("*.*")) == 200
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data dir, the CLI's stdout) of the 200-file folder prepared as ``photos``."""
    src = make_source(tmp_path_factory.mktemp("src"))
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    proc = run_module(f"--src={src}", "--name=photos", f"--resolution={R}", "--labels=folders",
                      module=PREPARE, data_dir=data_dir, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return data_dir, proc.stdout


def test_prepare_keeps_199_labels_by_folder_and_lists_the_skipped(prepared):
    data_dir, out = prepared
    assert "skipped 1 unreadable file:" in out and "dogs/corrupt.png" in out, out
    assert "wrote 199 images of 32x32x3" in out and "cats (100), dogs (99)" in out, out
    assert sorted(os.listdir(data_dir)) == ["photos"]  # No temporary folder is left.

    info = tfds.builder("photos", data_dir=data_dir).info
    assert info.features["image"].shape == (R, R, 3)
    assert info.features["label"].num_classes == 2
    assert info.features["label"].names == ["cats", "dogs"]
    assert info.splits["train"].num_examples == 199

    d = sources.load("photos", data_dir=data_dir)
    assert d.images.shape == (199, R, R, 3) and d.images.dtype == np.uint8
    assert np.bincount(d.labels).tolist() == [100, 99]
    assert len(set(d.labels[:20].tolist())) == 2  # Stored shuffled: max_examples gets both.
    mean = d.images.reshape(199, -1, 3).mean(1)
    red, blue = mean[:, 0] - mean[:, 2] > 80, mean[:, 2] - mean[:, 0] > 80
    assert red.sum() == 98 and blue.sum() == 99
    assert (d.labels[red] == 0).all() and (d.labels[blue] == 1).all()
    # The grayscale one has three equal channels; the tall one lost its black quarters.
    gray = np.flatnonzero([(im[..., 0] == im[..., 1]).all() and (im[..., 1] == im[..., 2]).all()
                           and 100 < im.mean() < 140 for im in d.images])
    white = np.flatnonzero(d.images.reshape(199, -1).min(1) >= 250)
    assert len(gray) == 1 and len(white) == 1
    assert d.labels[gray[0]] == 0 and d.labels[white[0]] == 0


def test_the_streaming_pipeline_reads_it(prepared):
    data_dir, _ = prepared
    stored = {im.tobytes() for im in sources.load("photos", data_dir=data_dir).images}
    p = streaming.Pipeline("photos", "train", data_dir, rows=8, seed=0, threads=2)
    assert p.examples_per_shard == 199
    seen = set()
    for _ in range(3):
        batch = next(p)
        batch = batch["image"] if isinstance(batch, dict) else batch
        assert batch.shape == (8, R, R, 3) and batch.dtype == np.uint8
        seen |= {im.tobytes() for im in batch}
    assert len(seen) == 24 and seen <= stored


def test_twenty_dcgan_steps_on_it(prepared, tmp_path):
    data_dir, _ = prepared
    proc = run_module("--config=experiments/configs/folder_dcgan.py:smoke",
                      "--config.dataset.name=photos", f"--workdir={tmp_path}/run",
                      data_dir=data_dir, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "photos (32, 32, 3)" in proc.stdout + proc.stderr
    with Image.open(tmp_path / "run/samples/final.png") as grid:
        assert grid.mode == "RGB"
    assert (tmp_path / "run/checkpoints/20").is_dir()


def test_a_zip_with_one_top_folder_works_like_the_folder(tmp_path):
    src = make_source(tmp_path / "src")
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        for path in sorted(src.rglob("*.*"))[::10] + [src / "dogs/corrupt.png"]:
            zf.write(path, "album/" + path.relative_to(src).as_posix())
        zf.writestr("__MACOSX/album/._x.png", b"junk")
    r = folder.prepare(tmp_path / "photos.zip", "zipped", 16, labels="folders", channels=1,
                       data_dir=str(tmp_path / "tfds"))
    assert r.class_names == ("cats", "dogs") and r.skipped[0][0] == "dogs/corrupt.png"
    assert r.num_examples == 20 and r.ignored == 1
    d = sources.load("zipped", data_dir=str(tmp_path / "tfds"))
    assert d.images.shape == (20, 16, 16, 1) and sorted(set(d.labels.tolist())) == [0, 1]


class Stop(Exception):
    pass


@pytest.mark.parametrize("phase", ["reading", "writing"])
def test_an_interrupted_import_leaves_nothing(tmp_path, monkeypatch, phase):
    src = make_source(tmp_path / "src")
    data_dir = tmp_path / "tfds"
    if phase == "reading":  # Ctrl-C on the 100th image.
        convert, calls = folder.convert_image, []

        def failing_convert(*args):
            calls.append(1)
            if len(calls) == 100:
                raise KeyboardInterrupt
            return convert(*args)
        monkeypatch.setattr(folder, "convert_image", failing_convert)
        error = KeyboardInterrupt
    else:  # The writer fails halfway through the examples.
        examples = folder._examples

        def failing_examples(*args):
            for i, example in enumerate(examples(*args)):
                if i == 100:
                    raise Stop
                yield example
        monkeypatch.setattr(folder, "_examples", failing_examples)
        error = Stop
    with pytest.raises(error):
        folder.prepare(src, "photos", R, labels="folders", data_dir=str(data_dir), threads=2)
    assert os.listdir(data_dir) == []
    with pytest.raises(sources.DatasetError):
        sources.load("photos", data_dir=str(data_dir))


_KILL_HALFWAY = """
import os, signal, sys
from gan_jax.data import folder
examples = folder._examples
def killed_halfway(*args):
    for i, example in enumerate(examples(*args)):
        if i == 100:
            os.kill(os.getpid(), signal.SIGKILL)
        yield example
folder._examples = killed_halfway
folder.prepare(sys.argv[1], "photos", 32, data_dir=sys.argv[2])
"""


def test_a_killed_import_leaves_no_dataset_and_the_next_run_cleans_up(tmp_path):
    src = make_source(tmp_path / "src")
    data_dir = tmp_path / "tfds"
    proc = subprocess.run([sys.executable, "-c", _KILL_HALFWAY, str(src), str(data_dir)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-3000:]
    left = os.listdir(data_dir)
    assert len(left) == 1 and left[0].startswith("."), left  # Its temporary folder only.
    with pytest.raises(sources.DatasetError):
        sources.load("photos", data_dir=str(data_dir))
    proc = run_module(f"--src={src}", "--name=photos", "--resolution=8", module=PREPARE,
                      data_dir=str(data_dir), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 temporary folders left by killed runs were removed" in proc.stdout, proc.stdout
    assert os.listdir(data_dir) == ["photos"]
    assert sources.load("photos", data_dir=str(data_dir)).images.shape == (199, 8, 8, 3)


def test_bad_input_is_one_error_line(tmp_path):
    src = make_source(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    data_dir = tmp_path / "tfds"
    (data_dir / "taken").mkdir(parents=True)
    (data_dir / "taken/keep").write_text("x")
    cases = {  # args -> a word the message must hold
        (f"--src={tmp_path}/nope", "--name=a", "--resolution=32"): "does not exist",
        (f"--src={tmp_path}/empty", "--name=a", "--resolution=32"): "no image files",
        (f"--src={src}", "--name=a", "--resolution=0"): "resolution",
        (f"--src={src}", "--name=a", "--resolution=100000"): "resolution",
        (f"--src={src}", "--name=My Photos!", "--resolution=32"): "name",
        (f"--src={src}", "--name=taken", "--resolution=32"): "already exists",
    }
    procs = {args: subprocess.Popen([sys.executable, "-m", PREPARE, *args], cwd=REPO,
                                    env={**os.environ, "TFDS_DATA_DIR": str(data_dir)},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in cases}
    for args, word in cases.items():
        out, err = procs[args].communicate(timeout=120)
        lines = err.strip().splitlines()
        assert procs[args].returncode == 1, (args, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert word in lines[0], (args, err)
    assert sorted(os.listdir(data_dir)) == ["taken"]
    assert os.listdir(data_dir / "taken") == ["keep"]


@pytest.mark.parametrize("kwargs, word", [
    (dict(name="cifar10"), "taken by a tfds"),
    (dict(name="mnist"), "taken by a tfds"),
    (dict(resolution=True), "resolution"),
    (dict(channels=4), "channels"),
    (dict(labels="files"), "labels"),
])
def test_bad_arguments_are_folder_errors(tmp_path, kwargs, word):
    args = dict(src=tmp_path, name="ok", resolution=8, data_dir=str(tmp_path / "tfds"))
    with pytest.raises(folder.FolderError, match=word):
        folder.prepare(**{**args, **kwargs})
    assert not (tmp_path / "tfds").exists()


def test_loose_images_with_folder_labels_or_only_unreadable_files_are_errors(tmp_path):
    src = tmp_path / "src"
    (src / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "cats/a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(src / "loose.png")
    with pytest.raises(folder.FolderError, match="directly in"):
        folder.prepare(src, "ok", 8, labels="folders", data_dir=str(tmp_path / "tfds"))
    for name in ("a.png", "b.jpg"):
        (tmp_path / "bad" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "bad" / name).write_bytes(b"garbage")
    with pytest.raises(folder.FolderError, match="None of the 2"):
        folder.prepare(tmp_path / "bad", "ok", 8, data_dir=str(tmp_path / "tfds"))
    assert os.listdir(tmp_path / "tfds") == []


def test_convert_image_crops_the_centre_and_converts_modes():
    # 8x24: red outside the centre square; in it, a transparent left half over black
    # (white once composited) and an opaque green right half.
    wide = np.zeros((8, 24, 4), np.uint8)
    wide[...] = (255, 0, 0, 255)
    wide[:, 8:12] = (0, 0, 0, 0)
    wide[:, 12:16] = (0, 255, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(wide, "RGBA").save(buf, "PNG")
    out, enlarged = folder.convert_image(buf.getvalue(), 8, 3)
    assert out.shape == (8, 8, 3) and enlarged is False
    assert (out[:, :4] == 255).all() and (out[:, 4:] == (0, 255, 0)).all()
    gray16 = Image.fromarray(np.full((4, 4), 40_000, np.uint16))  # 16-bit: 155 in 8 bits
    buf = io.BytesIO()
    gray16.save(buf, "PNG")
    out, enlarged = folder.convert_image(buf.getvalue(), 8, 1)
    assert out.shape == (8, 8, 1) and enlarged is True and (out == 155).all()
