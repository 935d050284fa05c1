"""The Flax FID Inception: shapes, the pieces that differ from torchvision's network, and its
weights file (conversion, shape checks, the errors for a missing or wrong file)."""
import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from gan_jax import files
from gan_jax.eval import features, inception, inception_weights as iw


def _tree(flat):
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


@pytest.fixture(scope="module")
def random_flat():
    return iw.random_params(0)


def test_output_shapes_through_the_extractor(random_flat):
    # 75x75 is the smallest input the network takes; 299 is the FID size but slow on CPU.
    ex = features.inception(_tree(random_flat), weights_sha256="random", resize=75,
                            batch_size=2)
    images = np.random.RandomState(0).uniform(-1, 1, (3, 20, 24, 1)).astype(np.float32)
    out = features.extract(ex, features.padded_batches(images, 2))
    assert out.features.shape == (3, 2048) and out.logits.shape == (3, 1008)
    assert np.isfinite(out.features).all() and out.features.std() > 0
    assert out.moments.cov.shape == (2048, 2048)
    # The Inception Score's logits: pool3 times the kernel, the bias left out.
    kernel = random_flat["fc/kernel"].astype(np.float64)
    unbiased = out.features.astype(np.float64) @ kernel
    scale = np.abs(unbiased).max()
    assert np.abs(out.logits - unbiased).max() < 1e-5 * scale
    assert np.abs(out.logits - (unbiased + random_flat["fc/bias"])).max() > 1e-2 * scale


def test_parameter_count_and_names():
    shapes = iw.param_shapes()
    # pytorch-fid's FID Inception: 23,851,784 parameters + 2 x 17,216 BatchNorm statistics
    # (1008 classes, no aux classifier).
    assert sum(int(np.prod(s)) for s in shapes.values()) == 23_885_392
    assert shapes["Mixed_7c/branch_pool/conv/kernel"] == (1, 1, 2048, 192)
    assert shapes["fc/kernel"] == (2048, 1008)
    assert shapes["Conv2d_1a_3x3/var"] == (32,)


def test_average_pool_excludes_padding_and_last_block_pools_by_max():
    ones = jnp.ones((1, 4, 4, 1))
    np.testing.assert_array_equal(inception._avg_pool_3x3(ones), ones)  # With padding: 4/9.
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    pooled = inception._max_pool(x, 1, 1)
    assert float(pooled[0, 0, 0, 0]) == 5.0 and float(pooled[0, 3, 3, 0]) == 15.0


def test_resize_matrix_matches_pytorch_bilinear_align_corners_false():
    up = inception.resize_matrix(2, 4)
    np.testing.assert_allclose(up, [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    down = inception.resize_matrix(4, 2)  # No antialiasing: pytorch-fid's F.interpolate.
    np.testing.assert_allclose(down, [[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(inception.resize_matrix(28, 299).sum(1), 1.0, rtol=1e-6)


def test_state_dict_conversion_round_trip_and_load(tmp_path, random_flat):
    sd = iw.to_state_dict(random_flat)
    assert "Mixed_5b.branch1x1.conv.weight" in sd and sd["fc.weight"].shape == (1008, 2048)
    flat = iw.from_state_dict(sd)
    assert set(flat) == set(random_flat)
    for k in flat:
        np.testing.assert_array_equal(flat[k], random_flat[k])
    path = tmp_path / "w.npz"
    digest = iw.save(flat, path, {"source": "test"})
    tree, got = iw.load(path)
    assert got == digest == files.file_sha256(path)
    np.testing.assert_array_equal(tree["Mixed_6e"]["branch7x7_2"]["conv"]["kernel"],
                                  random_flat["Mixed_6e/branch7x7_2/conv/kernel"])
    with np.load(path) as z:
        assert json.loads(str(z["__meta__"])) == {"source": "test"}


def test_one_wrong_shape_fails_naming_the_array(tmp_path, random_flat):
    flat = dict(random_flat)
    flat["Mixed_6b/branch7x7_2/conv/kernel"] = np.zeros((7, 1, 128, 128), np.float32)
    path = tmp_path / "bad.npz"
    np.savez(path, **flat)
    with pytest.raises(iw.InceptionWeightsError) as e:
        iw.load(path)
    msg = str(e.value)
    assert "1 arrays differ" in msg
    assert "Mixed_6b/branch7x7_2/conv/kernel: [7, 1, 128, 128] in the file, model has " \
           "[1, 7, 128, 128]" in msg and iw.PTH_NAME in msg


def test_unexpected_and_missing_arrays_are_listed(random_flat):
    sd = iw.to_state_dict(random_flat)
    sd["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)  # torchvision's, not FID's
    del sd["Mixed_7c.branch_pool.bn.running_var"]
    with pytest.raises(iw.InceptionWeightsError) as e:
        iw.save(iw.from_state_dict(sd), "/nonexistent/never_written.npz", {})
    msg = str(e.value)
    assert "AuxLogits.fc.weight: [1000, 768] in the file, not in the model" in msg
    assert "Mixed_7c/branch_pool/var: missing, model has [192]" in msg


def test_missing_weights_file_says_where_it_looked_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(iw.ENV, raising=False)
    with pytest.raises(iw.InceptionWeightsError) as e:
        iw.resolve_path(tmp_path / "nope.npz")
    msg = str(e.value)
    assert str(tmp_path / "nope.npz") in msg and "looked for" in msg
    assert iw.PTH_URL in msg and "python -m gan_jax.eval.convert_inception" in msg
    monkeypatch.setenv(iw.ENV, str(tmp_path / "env.npz"))
    with pytest.raises(iw.InceptionWeightsError, match=f"env.npz \\(\\${iw.ENV}\\)"):
        iw.resolve_path()
    monkeypatch.delenv(iw.ENV)
    with pytest.raises(iw.InceptionWeightsError, match="default location"):
        features.get("inception")
    pth = tmp_path / iw.PTH_NAME
    pth.write_bytes(b"not really")
    with pytest.raises(iw.InceptionWeightsError, match="is a PyTorch file.*convert_inception"):
        iw.resolve_path(pth)


def test_converter_without_pytorch_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as without it.
    from gan_jax.eval import convert_inception
    pth = tmp_path / iw.PTH_NAME
    pth.write_bytes(b"x")
    with pytest.raises(iw.InceptionWeightsError, match=r'pip install "gan_jax\[torch\]"'):
        convert_inception.convert(pth, tmp_path / "out.npz")
    assert not os.path.exists(tmp_path / "out.npz")


def test_converter_command_reports_a_missing_file_and_defines_no_flags_at_import(tmp_path):
    import importlib
    import subprocess

    from absl import flags

    importlib.import_module("gan_jax.eval.convert_inception")
    assert "pth" not in flags.FLAGS and "out" not in flags.FLAGS
    out = tmp_path / "out.npz"
    proc = subprocess.run([sys.executable, "-m", "gan_jax.eval.convert_inception",
                           f"--pth={tmp_path / 'missing.pth'}", f"--out={out}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "No file at" in proc.stderr and iw.PTH_URL in proc.stderr
    assert not out.exists()
