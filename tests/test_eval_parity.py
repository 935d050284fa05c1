"""Parity with pytorch-fid: its own FID Inception, given random weights (BatchNorm statistics
included) instead of the download, against the Flax port loaded through the converter.
Needs PyTorch, torchvision and pytorch-fid (pip install "gan_jax[torch]"); skips otherwise."""
import numpy as np
import pytest

_WHY = 'needs PyTorch, torchvision and pytorch-fid: pip install "gan_jax[torch]"'
torch = pytest.importorskip("torch", reason=_WHY)
pytest.importorskip("torchvision", reason=_WHY)
pfi = pytest.importorskip("pytorch_fid.inception", reason=_WHY)
fid_score = pytest.importorskip("pytorch_fid.fid_score", reason=_WHY)

from gan_jax.eval import convert_inception, features, inception_weights as iw  # noqa: E402
from gan_jax.eval import metrics as M  # noqa: E402

N = 24  # Images per set: enough to compare features and two FIDs, small enough for a CPU.


def _images(seed, smooth):
    """Two visibly different kinds of 48x64 RGB uint8 images."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 255, (N, 12, 16, 3))
    x = np.repeat(np.repeat(x, 4, 1), 4, 2) if smooth else rng.uniform(0, 255, (N, 48, 64, 3))
    return np.rint(x).astype(np.uint8)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    flat = iw.random_params(seed=1)
    state_dict = {k: torch.from_numpy(np.asarray(v)) for k, v in iw.to_state_dict(flat).items()}
    # pytorch-fid builds its network exactly as for FID and loads this (strictly: every key
    # and shape must match) instead of downloading the weights.
    original = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda *a, **k: state_dict
    try:
        net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
        fc = pfi.fid_inception_v3().fc.eval()
    finally:
        pfi.load_state_dict_from_url = original
    # The Flax side gets the weights through the converter, from a .pth PyTorch wrote.
    tmp = tmp_path_factory.mktemp("parity")
    torch.save(state_dict, tmp / iw.PTH_NAME)
    convert_inception.convert(tmp / iw.PTH_NAME, tmp / "fid.npz")
    params, digest = iw.load(tmp / "fid.npz")
    return net, fc, features.inception(params, weights_sha256=digest, batch_size=8)


def _torch_features(net, fc, images):
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        pool3 = net(x)[0].squeeze(-1).squeeze(-1)
        # The Inception Score's logits leave out the bias (torch-fidelity's logits_unbiased).
        logits = pool3 @ fc.weight.T
        return pool3.numpy().astype(np.float64), logits.numpy().astype(np.float64)


def test_features_and_fid_agree_with_pytorch_fid(both):
    net, fc, extractor = both
    a, b = _images(0, smooth=True), _images(1, smooth=False)
    ta, ta_logits = _torch_features(net, fc, a)
    tb, _ = _torch_features(net, fc, b)
    ja = features.extract(extractor, features.padded_batches(a, 8))
    jb = features.extract(extractor, features.padded_batches(b, 8))
    for t, j in ((ta, ja.features), (tb, jb.features)):
        assert t.std() > 0.1  # Random weights that still give informative features.
        rel = np.linalg.norm(j - t, axis=1) / np.linalg.norm(t, axis=1)
        print(f"pool3 relative error per image: max {rel.max():.2e}, "
              f"max |diff| / max |x| {np.abs(j - t).max() / np.abs(t).max():.2e}")
        assert rel.max() < 1e-4
    rel_logits = np.linalg.norm(ja.logits - ta_logits, axis=1) / np.linalg.norm(ta_logits, axis=1)
    print(f"logits relative error per image: max {rel_logits.max():.2e}")
    assert rel_logits.max() < 1e-4

    theirs = fid_score.calculate_frechet_distance(ta.mean(0), np.cov(ta, rowvar=False),
                                                  tb.mean(0), np.cov(tb, rowvar=False))
    ours = M.frechet_distance(ja.moments, jb.moments)
    print(f"FID pytorch-fid {theirs:.6f}, gan_jax {ours:.6f}, relative difference "
          f"{abs(ours - theirs) / theirs:.2e}")
    assert abs(ours - theirs) / theirs < 1e-3
    assert ours > 10 * M.frechet_distance(ja.moments, ja.moments) + 1e-3
