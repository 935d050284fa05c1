import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from gan_jax.data import augment, streaming

N = 24


class TinyIds(tfds.core.GeneratorBasedBuilder):
    """Images whose pixels all hold the example's index, so batches can be traced back."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(4, 4, 1), dtype=np.uint8)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(N):
            yield i, {"image": np.full((4, 4, 1), i, np.uint8)}


@pytest.fixture(scope="module")
def ids_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("ids"))
    TinyIds(data_dir=d, file_format="array_record").download_and_prepare()
    return d


def _pipe(ids_dir, shard, shards=2, rows=3, seed=0):
    return streaming.Pipeline("tiny_ids", "train", ids_dir, rows=rows, seed=seed,
                              shard_index=shard, shard_count=shards, threads=2)


def _ids(batch):
    return batch[:, 0, 0, 0].tolist()


def test_each_example_once_per_epoch_across_hosts(ids_dir):
    per_host = N // 2 // 3  # batches per host per epoch
    epochs = {0: [], 1: []}
    for shard in (0, 1):
        p = _pipe(ids_dir, shard)
        assert p.examples_per_shard == 12
        for epoch in (0, 1):
            for _ in range(per_host):
                b = next(p)
                assert b.shape == (3, 4, 4, 1) and b.dtype == np.uint8
                epochs[epoch] += _ids(b)
    assert sorted(epochs[0]) == list(range(N)) and sorted(epochs[1]) == list(range(N))
    assert epochs[0] != epochs[1]  # Reshuffled every epoch.
    assert epochs[0] != sorted(epochs[0])


def test_resume_reproduces_the_batch_sequence(ids_dir):
    a = _pipe(ids_dir, 0, shards=1, rows=5)
    for _ in range(3):
        next(a)
    state = a.get_state()
    want = [_ids(next(a)) for _ in range(6)]
    b = _pipe(ids_dir, 0, shards=1, rows=5)
    b.set_state(state)
    assert [_ids(next(b)) for _ in range(6)] == want
    assert [_ids(next(_pipe(ids_dir, 0, shards=1, rows=5, seed=1)))] != [want[0]]


def test_prefetcher_keeps_order_and_positions(ids_dir):
    p = _pipe(ids_dir, 0, shards=1, rows=4)
    ref = _pipe(ids_dir, 0, shards=1, rows=4)
    pre = streaming.DevicePrefetcher(p, k=2, put=jnp.asarray)
    try:
        for _ in range(3):
            state, batches = pre.next()
            assert batches.shape == (2, 4, 4, 4, 1)
            replay = _pipe(ids_dir, 0, shards=1, rows=4)
            replay.set_state(state)
            expect = [next(ref), next(ref)]
            np.testing.assert_array_equal(np.asarray(batches), np.stack(expect))
            np.testing.assert_array_equal(next(replay), expect[0])
    finally:
        pre.close()


def test_diffaugment_ops():
    x = jax.random.uniform(jax.random.PRNGKey(0), (8, 16, 16, 3), minval=-1, maxval=1)
    key = jax.random.PRNGKey(1)
    t = augment.translation(x, key)
    # Each image moved by an integer shift of at most 2 pixels (1/8 of 16), zeros filled in.
    shifts = []
    for i in range(8):
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                shifted = np.roll(np.asarray(x[i]), (dy, dx), axis=(0, 1))
                ys = slice(max(dy, 0), 16 + min(dy, 0))
                xs = slice(max(dx, 0), 16 + min(dx, 0))
                if np.allclose(np.asarray(t[i])[ys, xs], shifted[ys, xs]):
                    found.append((dy, dx))
        assert len(found) == 1, (i, found)
        shifts += found
    # Drawn per image and per axis, not one shift for all or the same along both axes.
    assert len(set(shifts)) > 1 and any(dy != dx for dy, dx in shifts), shifts
    c = np.asarray(augment.cutout(x, key))
    zeros = (c == 0).all(axis=-1)
    zero_frac = zeros.mean(axis=(1, 2))
    assert np.all(zero_frac > 0.05) and np.all(zero_frac <= 0.25 + 1e-6)
    rows, cols = zeros.any(axis=2), zeros.any(axis=1)
    first = lambda m: [int(np.argmax(r)) for r in m]
    assert len(set(first(rows))) > 1 and first(rows) != first(cols)  # Centres drawn per image.
    col = augment.color(x, key)
    assert col.shape == x.shape and not np.allclose(col, x)
    # Brightness, saturation and contrast drawn separately: their effects are not one factor.
    means, spreads = col.mean(axis=(1, 2, 3)), col.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))
    assert np.corrcoef(means, spreads)[0, 1] < 0.99
    aug = augment.make("color,translation,cutout")
    g = jax.grad(lambda x: jnp.sum(aug(x, key) ** 2))(x)
    assert float(jnp.abs(g).sum()) > 0  # Differentiable: G learns through it.
    assert augment.make("") is None
    with pytest.raises(ValueError, match="flip"):
        augment.make("color,flip")
