"""Labels travel with their own images: drawn on the device (one device, 4 shards, pmap),
streamed, and after a resume. Each image's label is looked up by a hash of its pixels in a
table made on the host, inside the jitted step, so any misalignment shows as a count."""
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax import parallel, steps, trainer
from gan_jax.data import device, sources
from gan_jax.trainer import engine as trainer_engine
from tests.helpers import load_config, metric_lines

_W = np.random.default_rng(0).integers(1, 2 ** 32, 28 * 28, dtype=np.uint64).astype(np.uint32)


def _keys(images):
    """A 32-bit hash of each image's pixels (wrapping uint32 arithmetic, NumPy or JAX)."""
    flat = images.reshape(images.shape[0], -1).astype(jnp.uint32)
    return (flat * jnp.asarray(_W)).sum(axis=1, dtype=jnp.uint32)


def _table(images, labels):
    keys = np.asarray(_keys(np.asarray(images, np.uint32)))
    assert len(np.unique(keys)) == len(keys)  # No two images share a hash here.
    order = np.argsort(keys)
    return jnp.asarray(keys[order]), jnp.asarray(labels[order], jnp.int32)


def _mismatches(table, batch):
    keys, labels = table
    k = _keys(batch["image"])
    i = jnp.clip(jnp.searchsorted(keys, k), 0, len(keys) - 1)
    return jnp.sum((keys[i] != k) | (labels[i] != batch["label"]))


@flax.struct.dataclass
class _Counter:
    step: jax.Array


@pytest.mark.parametrize("layout", ["one device", "mesh", "pmap"])
def test_device_resident_batches_keep_each_label_with_its_image(layout):
    rng = np.random.default_rng(1)
    data = {"image": rng.integers(0, 256, (103, 28, 28, 1), dtype=np.uint8),
            "label": rng.integers(0, 10, 103).astype(np.int32)}
    table = _table(data["image"], data["label"])

    def step(state, batch):
        return state.replace(step=state.step + 1), {"bad": _mismatches(table, batch),
                                                    "seen": jnp.sum(batch["label"] >= 0)}

    kw = dict(rows_per_step=16, num_examples=103, key=jax.random.PRNGKey(2))
    state = _Counter(step=jnp.zeros((), jnp.int32))
    if layout == "pmap":
        devices = jax.local_devices()
        multi = device.make_data_steps(step, 7, axis_name=parallel.AXIS, **{
            **kw, "rows_per_step": 4})
        run = jax.pmap(multi, axis_name=parallel.AXIS)
        state, m = run(parallel.replicate(state, devices), device.put(data, pmap_devices=devices))
    else:
        mesh = parallel.make_mesh() if layout == "mesh" else None
        multi = device.make_data_steps(step, 7, mesh=mesh, **kw)
        state, m = jax.jit(multi)(state, device.put(data, mesh=mesh))
    assert int(np.sum(m["seen"])) == 7 * 16 and int(np.sum(m["bad"])) == 0
    # The check can fail: labels moved by one row are caught.
    shifted = {**data, "label": np.roll(data["label"], 1)}
    _, m = jax.jit(device.make_data_steps(step, 3, **kw))(_Counter(jnp.zeros((), jnp.int32)),
                                                          device.put(shifted))
    assert int(np.sum(m["bad"])) > 0


def test_a_step_takes_an_image_array_or_a_dict_with_labels():
    from tests.test_steps import _batch, _mlp
    G, D, st = _mlp()
    step = jax.jit(steps.make_train_step(G, D))
    a, ma = step(st, _batch(8))
    b, mb = step(st, {"image": _batch(8), "label": jnp.arange(8)})
    for x, y in zip(jax.tree.leaves((a, ma)), jax.tree.leaves((b, mb)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # Unconditional: ignored.


@pytest.fixture(scope="module")
def mnist_table(mnist_dir):
    d = sources.load("mnist", "train", mnist_dir)
    assert d.num_classes == 10 and d.labels is not None
    return _table(d.images, d.labels)


def _checking_labels(monkeypatch, table):
    """The trainer's own step, also counting the examples whose label is not their image's."""
    make_step = trainer_engine.make_step

    def patched(config, G, D, **options):
        inner = make_step(config, G, D, **options)
        axis = options.get("axis_name")

        def step(state, batch):
            state, metrics = inner(state, batch)
            bad, seen = _mismatches(table, batch), batch["label"].shape[0]
            if axis is not None:
                bad, seen = jax.lax.psum(bad, axis), jax.lax.psum(seen, axis)
            return state, {**metrics, "label_bad": bad.astype(jnp.float32),
                           "label_seen": jnp.float32(seen)}
        return step

    monkeypatch.setattr(trainer_engine, "make_step", patched)


@pytest.mark.parametrize("layout", [{}, {"parallel.mode": "pmap"},
                                    {"dataset.pipeline": "streaming"}])
def test_the_trainer_feeds_labels_with_their_images_through_a_resume(
        layout, mnist_dir, mnist_table, monkeypatch, tmp_path):
    _checking_labels(monkeypatch, mnist_table)
    c = load_config("mnist_mlp", "smoke")  # 40 steps of 32, checkpoints at 20 and 40.
    c.dataset.data_dir = mnist_dir
    for key, value in layout.items():
        group, name = key.split(".")
        c[group][name] = value
    c.num_steps = 20
    trainer.train_and_evaluate(c, tmp_path)
    c.num_steps = 40  # Extended: resumed from the checkpoint at 20.
    assert trainer.train_and_evaluate(c, tmp_path)["resumed_from"] == 20
    lines = metric_lines(tmp_path)
    assert [m["step"] for m in lines] == [10, 20, 30, 40]
    assert all(m["label_seen"] == 32 and m["label_bad"] == 0 for m in lines), lines
