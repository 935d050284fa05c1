"""Conditional evaluation: intra-FID and class accuracy against brute-force versions, the
class-balanced draw, the per-class reference cache, class_acc_real, the errors before any
image is drawn, and the trainer's wiring (scheduled and checkpoint evaluations)."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from gan_jax import sampling
from gan_jax.data import sources
from gan_jax.errors import ConfigError
from gan_jax.eval import conditional, evaluate, features, reference
from gan_jax.eval.metrics import MetricError
from gan_jax.trainer import config as config_lib
from gan_jax.trainer import evaluation

C = 3
CODES = (np.arange(C) + 0.5) / C * 2 - 1  # Class k's pixel value in the made images.


def _fid(a_ND, b_MD) -> float:
    """FID by the textbook formula, scipy's sqrtm of S_a S_b."""
    mu = a_ND.mean(0) - b_MD.mean(0)
    sa, sb = np.cov(a_ND, rowvar=False), np.cov(b_MD, rowvar=False)
    return float(mu @ mu + np.trace(sa + sb) - 2 * np.trace(scipy.linalg.sqrtm(sa @ sb).real))


def _pixel_features(x):
    """The made extractor's features: four pixels that the latents set, and the class pixel."""
    return jnp.concatenate([x[:, 0, :4, 0], x[:, 1, :1, 0]], axis=1)


def _extractor(name="fake", classes=C, apply=None):
    """A classifier of the made 8x8 images: its logits read the class pixel."""
    def classify(p, x):
        return _pixel_features(x), -100.0 * (x[:, 1, :1, 0] - jnp.asarray(CODES)[None]) ** 2
    return features.Extractor(
        name=name, params={}, apply=apply or classify, feature_dim=5 if apply is None else 4,
        image_shapes="made", accepts=lambda h, w, c: h >= 2 and w >= 4 and c == 1,
        info={"classifier_test_accuracy": 0.875, "code_sha256": name}, batch_size=64,
        classes=classes)


def _images(z, drawn):
    """8x8 images in [-1, 1] whose row 0 comes from ``z`` (shifted by class) and whose pixel
    (1, 0) is near the value of the class ``drawn``."""
    x = jnp.zeros((len(z), 8, 8, 1))
    x = x.at[:, 0, :4, 0].set(0.5 * jnp.tanh(z[:, :4]) + 0.2 * drawn[:, None] - 0.2)
    return x.at[:, 1, 0, 0].set(jnp.asarray(CODES, jnp.float32)[drawn] + 0.1 * jnp.tanh(z[:, 4]))


def _draw(calls):
    """A conditional generator that draws class 2 as class 0 (and records the classes)."""
    def draw(z, y):
        calls.append(np.asarray(y))
        return _images(z, jnp.where(y == 2, 0, y))
    return draw


def _quantized(x):
    return np.round((np.clip(np.asarray(x, np.float64), -1, 1) + 1) * 127.5) / 127.5 - 1


def _made_reference(ex, n=240):
    labels = np.arange(n) % C
    z = np.random.RandomState(1).randn(n, 8).astype(np.float32)
    real = np.asarray(sampling.to_uint8(_images(jnp.asarray(z), jnp.asarray(labels))))
    return reference.from_images(ex, real, {"dataset": "made"}, labels=labels), real, labels


def test_intra_fid_and_class_accuracy_match_brute_force():
    rng = np.random.RandomState(0)
    k, d = 4, 6
    ref_labels = rng.randint(0, k, 500)
    ref = rng.randn(500, d) * (1 + ref_labels[:, None]) + ref_labels[:, None]
    fake_labels = np.arange(400) % k
    fake = rng.randn(400, d) @ rng.randn(d, d) * 0.5 + 0.3 * fake_labels[:, None]
    moments = conditional.class_moments(ref, ref_labels, k)
    for c, m in enumerate(moments):
        np.testing.assert_allclose(m.cov, np.cov(ref[ref_labels == c], rowvar=False),
                                   rtol=1e-10)
    got, per_class = conditional.intra_fid(moments, fake, fake_labels)
    want = [_fid(ref[ref_labels == c], fake[fake_labels == c]) for c in range(k)]
    np.testing.assert_allclose(per_class, want, rtol=1e-6)
    assert got == pytest.approx(np.mean(want), rel=1e-6) and len(set(np.round(want))) == k

    logits = rng.randn(400, k)
    acc, acc_per_class = conditional.class_accuracy(logits, fake_labels, k)
    hits = [[logits[i].argmax() == fake_labels[i] for i in range(400) if fake_labels[i] == c]
            for c in range(k)]
    assert acc == sum(map(sum, hits)) / 400
    assert acc_per_class == [sum(h) / len(h) for h in hits]


def test_conditional_evaluation_draws_balanced_classes():
    ex = _extractor()
    ref, real, real_labels = _made_reference(ex)
    calls, num = [], 301
    result = evaluate.evaluate_generator(_draw(calls), num, z_dim=8, extractor=ex,
                                         reference=ref, metrics="fid,intra_fid,class_acc",
                                         num_classes=C)
    y = np.concatenate(calls)
    np.testing.assert_array_equal(y, np.arange(num) % C)  # Class counts 101, 100, 100.
    # Class 2 is drawn as class 0: the classifier finds it wrong every time.
    assert result["class_acc_per_class"] == [1.0, 1.0, 0.0]
    assert result["class_acc"] == np.mean(y != 2) and result["class_acc_real"] == 0.875
    # intra-FID from the images themselves, class by class.
    z = sampling.latents(0, num, 8)
    fake_x = _quantized(_images(z, jnp.where(jnp.asarray(y) == 2, 0, jnp.asarray(y))))
    fake_f = np.concatenate([fake_x[:, 0, :4, 0], fake_x[:, 1, :1, 0]], axis=1)
    real_x = real.astype(np.float64) / 127.5 - 1
    real_f = np.concatenate([real_x[:, 0, :4, 0], real_x[:, 1, :1, 0]], axis=1)
    want = [_fid(real_f[real_labels == c], fake_f[y == c]) for c in range(C)]
    np.testing.assert_allclose(result["intra_fid_per_class"], want, rtol=1e-4, atol=1e-6)
    assert result["intra_fid"] == pytest.approx(np.mean(want), rel=1e-4)
    assert result["fid"] == pytest.approx(_fid(real_f, fake_f), rel=1e-4)
    p = result["provenance"]
    assert p["classes"] == C and p["labels"] == "balanced"
    assert p["reference_class_counts"] == [80, 80, 80]

    rows = evaluate.records(result, "fid,intra_fid,class_acc", step=5)
    by = {r["metric"]: r for r in rows}
    assert set(by["intra_fid"]) >= {"intra_fid", "intra_fid_per_class", "provenance"}
    assert by["class_acc"]["class_acc_per_class"] == [1.0, 1.0, 0.0]
    assert "intra_fid" not in by["fid"] and json.dumps(rows)
    assert evaluate.fields("fid,intra_fid,class_acc") == (
        "fid", "intra_fid", "class_acc", "class_acc_real")


def test_conditional_metrics_fail_before_any_image_is_drawn():
    ex = _extractor()
    ref, _, _ = _made_reference(ex)
    calls = []
    run = lambda metrics, num_classes, ex=ex, ref=ref: evaluate.evaluate_generator(
        _draw(calls), 60, z_dim=8, extractor=ex, reference=ref, metrics=metrics,
        num_classes=num_classes)
    with pytest.raises(MetricError, match="intra_fid needs a class-conditional generator, "
                                          "and this one is unconditional"):
        run("fid,intra_fid", 0)
    with pytest.raises(MetricError, match="intra_fid and class_acc need a class-conditional"):
        run("intra_fid,class_acc", 0)
    inception = _extractor("inception", classes=0)
    with pytest.raises(MetricError, match="class_acc needs a classifier of the dataset's "
                                          "classes.*MNIST.*the inception extractor is none"):
        run("class_acc", C, ex=inception)
    with pytest.raises(MetricError, match="the generator has 5 classes and the fake "
                                          "classifier 3"):
        run("class_acc", 5)
    without = reference.from_images(ex, np.zeros((20, 8, 8, 1), np.uint8), {})
    with pytest.raises(MetricError, match="intra_fid needs per-class reference statistics"):
        run("intra_fid", C, ref=without)
    assert calls == []
    with pytest.raises(MetricError, match="class_acc needs a classifier"):
        conditional.check(["class_acc"], 10, "inception")


@pytest.mark.parametrize("overrides,message", [
    (dict(metrics="fid,intra_fid"), "intra_fid needs a class-conditional generator.*"
                                    "model.conditional=True"),
    (dict(metrics="class_acc", conditional=True, dataset="cifar10"),
     "class_acc needs a classifier.*the inception extractor"),
])
def test_config_refuses_conditional_metrics_it_cannot_compute(overrides, message):
    c = config_lib.defaults()
    c.eval.metrics = overrides["metrics"]
    c.model.name, c.model.conditional = "dcgan", overrides.get("conditional", False)
    c.dataset.name = overrides.get("dataset", "mnist")
    with pytest.raises(ConfigError, match="Config group 'eval'.*" + message):
        config_lib.validate(c)
    c.eval.metrics, c.model.conditional = "fid,intra_fid", True
    c.dataset.name = "mnist"
    config_lib.validate(c)


def _band_means(p, x):  # Features of MNIST digits: the mean of four bands of rows.
    return x.reshape(len(x), 4, 7, 28).mean((2, 3)), jnp.zeros((len(x), 10))


def test_per_class_reference_statistics_are_cached_once(mnist_dir, tmp_path, monkeypatch):
    ex = _extractor("bands", classes=0, apply=_band_means)
    extracted, said = [], []
    real_extract = features.extract
    monkeypatch.setattr(features, "extract",
                        lambda *a, **k: extracted.append(1) or real_extract(*a, **k))
    get = lambda per_class, root=tmp_path: reference.get(
        ex, "mnist", "test", data_dir=mnist_dir, num=300, cache_dir=root, per_class=per_class,
        log=said.append)
    plain = get(False)  # An entry of before per-class moments: extended, not recomputed.
    (npz,) = tmp_path.glob("*.npz")
    assert plain.class_moments is None and "class_cov" not in np.load(npz).files
    ref = get(True)
    assert len(extracted) == 1 and "adding per-class statistics" in said[-1]
    labels = sources.load("mnist", "test", mnist_dir, max_examples=300).labels
    for c, m in enumerate(ref.class_moments):
        rows = np.asarray(ref.features, np.float64)[labels == c]
        assert m.n == len(rows)
        np.testing.assert_allclose(m.cov, np.cov(rows, rowvar=False), rtol=1e-9, atol=1e-15)
    assert np.load(npz)["class_cov"].shape == (10, 4, 4)
    assert json.loads(npz.with_suffix(".json").read_text())["class_label_key"] == "label"
    count = len(said)
    again = get(True)  # Read back: nothing computed, nothing said.
    assert len(extracted) == 1 and len(said) == count
    np.testing.assert_array_equal(again.class_moments[3].cov, ref.class_moments[3].cov)
    assert get(False).class_moments is None and len(extracted) == 1
    fresh = get(True, tmp_path / "fresh")  # Asked for at once: one pass computes both.
    assert len(extracted) == 2
    np.testing.assert_array_equal(fresh.class_moments[7].mean, ref.class_moments[7].mean)


def test_class_acc_real_is_the_classifiers_accuracy_on_the_test_split(mnist_classifier,
                                                                     mnist_dir):
    ex = features.get("mnist", data_dir=mnist_dir, log=lambda *a: None)
    assert ex.classes == 10 and features.dataset_classes("inception") == 0
    test = sources.load("mnist", "test", mnist_dir)
    logits = features.extract(ex, features.padded_batches(test.images, ex.batch_size),
                              keep_features=False).logits
    fake = features.Features(len(logits), None, None, logits)
    got = conditional.compute(fake, test.labels, None, ex, ["class_acc"])
    assert got["class_acc_real"] == np.mean(logits.argmax(1) == test.labels)
    assert got["class_acc"] == got["class_acc_real"] >= 0.99


def _mnist_like(z, y):
    """28x28 'samples' whose brightness follows the class."""
    return jnp.zeros((len(z), 28, 28, 1)) + jnp.tanh(z[:, :1, None, None]) * 0.1 \
        + (y[:, None, None, None] / 10.0 - 0.5)


class _Writer:
    def __init__(self):
        self.scalars = {}

    def write_scalars(self, step, scalars):
        self.scalars.update(scalars)


def test_scheduled_and_checkpoint_evaluations_pass_the_classes(private_cache, mnist_dir,
                                                               tmp_path, monkeypatch):
    c = config_lib.defaults()
    c.dataset.data_dir = mnist_dir
    c.model.name, c.model.conditional = "dcgan", True
    c.eval.update(every=10, num=60, metrics="fid,intra_fid,class_acc", reference_num=300)
    with pytest.raises(MetricError, match="need a class-conditional generator"):
        evaluation.ScheduledEval(c, None, 8, tmp_path, log=lambda *a: None)
    assert not (private_cache / "reference_stats").exists()  # Refused before the reference.

    seen = []

    def generate(params, g_vars, z, y=None, batch_stats=False):
        seen.append(np.asarray(y))
        return _mnist_like(z, y)
    ev = evaluation.ScheduledEval(c, generate, 8, tmp_path, log=lambda *a: None,
                                  num_classes=10)
    writer = _Writer()
    values = ev({}, {}, 10, writer)
    np.testing.assert_array_equal(np.concatenate(seen), np.arange(60) % 10)
    assert set(values) == {"fid", "intra_fid", "class_acc", "class_acc_real"}
    assert writer.scalars == {f"eval/{k}": v for k, v in values.items()}
    rows = [json.loads(s) for s in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [r["metric"] for r in rows] == ["fid", "intra_fid", "class_acc"]
    assert len(rows[1]["intra_fid_per_class"]) == 10 and rows[1]["source"] == "train"
    assert rows[0]["provenance"]["classes"] == 10

    # experiments.evaluate's path: the classes come from the checkpoint's run info.
    def load_generator(workdir, step=None, ema=True):
        info = {"config": config_lib.to_dict(c), "conditional_classes": classes}
        return lambda z, y=None: _mnist_like(z, y), 8, 20, info
    monkeypatch.setattr(evaluation, "load_generator", load_generator)
    classes = 0
    with pytest.raises(MetricError, match="class_acc needs a class-conditional generator"):
        evaluation.evaluate_checkpoint(tmp_path / "run", "class_acc", 60,
                                       log=lambda *a: None)
    classes = 10
    rows = evaluation.evaluate_checkpoint(tmp_path / "run", "intra_fid,class_acc", 60,
                                          reference_num=300, log=lambda *a: None)
    assert rows[0]["step"] == 20 and rows[1]["class_acc_real"] == values["class_acc_real"]
    assert rows[0]["intra_fid"] == values["intra_fid"]  # Same seed, same samples.
