"""The VAE: its KL term against the closed form, training that raises the ELBO and
reconstructs better than the prior draws, the step on 4 fake devices and under pmap equal
to one device, and a bit-exact resume through the trainer."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gan_jax import elbo, parallel, trainer, vae_steps
from gan_jax import state as state_lib
from gan_jax.data import sources
from gan_jax.errors import ConfigError
from gan_jax.models import vae
from gan_jax.trainer import families
from tests.helpers import assert_trees_equal, smoke_config, straight_and_resumed
from tests.test_parallel import _close

SHAPE = (28, 28, 1)


def _nets(classes=0, likelihood="bernoulli", learn_sigma=False):
    return (vae.Encoder(resolution=28, z_dim=8, width=8, hidden=32, num_classes=classes),
            vae.Decoder(resolution=28, z_dim=8, width=8, hidden=32, channels=1,
                        likelihood=likelihood, learn_sigma=learn_sigma, sigma=0.3,
                        num_classes=classes))


def _create(enc, dec, tx=None):
    return lambda key: state_lib.create_vae(key, enc, dec, tx=tx or optax.adam(1e-3),
                                            image_shape=SHAPE)


def test_kl_matches_the_closed_form_and_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 5)).astype(np.float32)
    logvar = rng.normal(scale=0.7, size=(3, 5)).astype(np.float32)
    got = np.asarray(elbo.gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    # KL(N(m, s^2) || N(0, 1)) = log(1 / s) + (s^2 + m^2) / 2 - 1/2, per dimension.
    s = np.exp(0.5 * logvar.astype(np.float64))
    want = np.sum(-np.log(s) + (s ** 2 + mean ** 2) / 2 - 0.5, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # E_q[log q(z) - log p(z)] with 400k draws of z from q.
    z = mean[0] + s[0] * rng.normal(size=(400_000, 5))
    log_q = -0.5 * ((z - mean[0]) / s[0]) ** 2 - np.log(s[0])
    log_p = -0.5 * z ** 2
    assert abs(np.mean(np.sum(log_q - log_p, axis=-1)) - got[0]) < 0.02
    assert float(elbo.gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


@pytest.mark.parametrize("side,channels", [(28, 1), (32, 3), (64, 3)])
def test_shapes_at_every_resolution(side, channels):
    enc = vae.Encoder(resolution=side, z_dim=4, width=4, hidden=8, num_classes=3)
    dec = vae.Decoder(resolution=side, z_dim=4, width=4, hidden=8, channels=channels,
                      likelihood="gaussian", learn_sigma=True, num_classes=3)
    st = state_lib.create_vae(jax.random.PRNGKey(0), enc, dec, tx=optax.sgd(0.1),
                              image_shape=(side, side, channels))
    x = jnp.zeros((2, side, side, channels), jnp.uint8)
    y = jnp.array([0, 2])
    mean, logvar = vae_steps.encode(enc, st.params, st.vars, x, y)
    assert mean.shape == logvar.shape == (2, 4)
    loc, log_sigma = dec.apply({"params": st.params["decoder"]}, mean, y, method="stats")
    assert loc.shape == (2, side, side, channels) and log_sigma.shape == (channels,)
    images = vae_steps.decode(dec, st.params, st.vars, mean, y)
    assert images.shape == (2, side, side, channels)
    assert float(jnp.max(jnp.abs(images))) <= 1.0


def test_likelihoods_and_bits_per_dim():
    logits = jnp.array([[[[0.3], [-1.2]]]])
    target = jnp.array([[[[1.0], [0.0]]]])
    want = -(math.log(1 / (1 + math.exp(-0.3))) + math.log(1 - 1 / (1 + math.exp(1.2))))
    np.testing.assert_allclose(float(elbo.bernoulli_nll(logits, target)[0]), want, rtol=1e-6)
    x, mu, ls = jnp.array([[[[0.5], [-0.2]]]]), jnp.array([[[[0.1], [0.0]]]]), jnp.array([-1.0])
    s = math.exp(-1.0)
    want = sum(0.5 * ((a - m) / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)
               for a, m in ((0.5, 0.1), (-0.2, 0.0)))
    np.testing.assert_allclose(float(elbo.gaussian_nll(mu, ls, x)[0]), want, rtol=1e-6)
    assert float(elbo.bits_per_dim(784 * math.log(2), 784, "bernoulli")) == pytest.approx(1.0)
    assert float(elbo.bits_per_dim(0.0, 10, "gaussian")) == pytest.approx(7.0)
    assert float(elbo.kl_weight(jnp.int32(25), 2.0, 100)) == pytest.approx(0.5)
    assert float(elbo.kl_weight(jnp.int32(500), 2.0, 100)) == pytest.approx(2.0)


@pytest.fixture(scope="module")
def mnist_images(mnist_dir):
    d = sources.load("mnist", "train", mnist_dir, max_examples=512)
    return d.images, d.labels.astype(np.int32)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_training_raises_the_elbo_and_reconstructs_better_than_the_prior(mnist_images,
                                                                          likelihood):
    images, _ = mnist_images
    enc, dec = _nets(likelihood=likelihood, learn_sigma=likelihood == "gaussian")
    st = jax.jit(_create(enc, dec))(jax.random.PRNGKey(0))
    step = jax.jit(vae_steps.make_vae_step(enc, dec, binarize=likelihood == "bernoulli",
                                           kl_warmup=20))
    fixed = images[:64]
    nelbo = jax.jit(lambda s: jnp.mean(vae_steps.negative_elbo(
        enc, dec, s.params, s.vars, fixed, jax.random.PRNGKey(9),
        binarize=likelihood == "bernoulli")))
    before = float(nelbo(st))
    for i in range(60):
        rows = (np.arange(64) + 64 * i) % len(images)
        st, metrics = step(st, images[rows])
    after = float(nelbo(st))
    assert after < before - 0.1 * abs(before), (before, after)
    assert float(metrics["kl_weight"]) == 1.0 and float(metrics["kl"]) > 0
    x = vae_steps.to_float_images(fixed)
    recon = vae_steps.reconstruct(enc, dec, st.params, st.vars, fixed)
    prior = vae_steps.decode(dec, st.params, st.vars, jax.random.normal(
        jax.random.PRNGKey(1), (64, 8)))
    mse = lambda y: float(jnp.mean(jnp.square(y - x)))
    assert mse(recon) < 0.9 * mse(prior), (mse(recon), mse(prior))


def _batches(n=2, rows=16):
    return [{"image": jax.random.randint(jax.random.PRNGKey(i), (rows, *SHAPE), 0, 256
                                         ).astype(jnp.uint8),
             "label": jax.random.randint(jax.random.PRNGKey(100 + i), (rows,), 0, 10)}
            for i in range(n)]


KW = dict(binarize=True, beta=0.5, kl_warmup=3)


@pytest.fixture(scope="module")
def one_device():
    assert jax.device_count() == 4
    enc, dec = _nets(classes=10)
    st = jax.jit(_create(enc, dec))(jax.random.PRNGKey(0))
    step = jax.jit(vae_steps.make_vae_step(enc, dec, **KW))
    for b in _batches():
        st, _ = step(st, b)
    return st


def test_vae_step_on_four_devices_matches_one_device(one_device):
    enc, dec = _nets(classes=10)
    mesh = parallel.make_mesh()
    st = parallel.create_state(_create(enc, dec), jax.random.PRNGKey(0), mesh)
    step = parallel.shard_step(vae_steps.make_vae_step(
        enc, dec, batch_sharding=parallel.batch_sharded(mesh), **KW), mesh)
    for b in _batches():
        st, _ = step(st, jax.device_put(b, parallel.batch_sharded(mesh)))
    _close(one_device, st)


def test_vae_pmap_matches_one_device(one_device):
    enc, dec = _nets(classes=10)
    st = parallel.replicate(jax.jit(_create(enc, dec))(jax.random.PRNGKey(0)))
    step = parallel.pmap_step(vae_steps.make_vae_step(enc, dec, axis_name=parallel.AXIS, **KW))
    for b in _batches():
        st, _ = step(st, jax.tree.map(lambda a: parallel.split_for_pmap(a, 4), b))
    _close(one_device, parallel.unreplicate(st))


def test_the_labels_reach_a_cvae():
    # Guard on the equalities above: other labels give other updates.
    enc, dec = _nets(classes=10)
    st = jax.jit(_create(enc, dec))(jax.random.PRNGKey(0))
    step = jax.jit(vae_steps.make_vae_step(enc, dec, **KW))
    b = _batches(1)[0]
    a, _ = step(st, b)
    c, _ = step(st, {**b, "label": (b["label"] + 1) % 10})
    assert not np.allclose(a.params["decoder"]["Dense_0"]["kernel"],
                           c.params["decoder"]["Dense_0"]["kernel"])
    with pytest.raises(ValueError, match="needs labels"):
        step(st, b["image"])


def test_cvae_interpolation_switches_class_halfway_and_needs_both_ends_labels():
    enc, dec = _nets(classes=10)
    st = jax.jit(_create(enc, dec))(jax.random.PRNGKey(0))
    b = _batches(1, rows=2)[0]
    x, y = b["image"], b["label"]
    lines = vae_steps.interpolate(enc, dec, st.params, st.vars, x, x, num=4,
                                  labels_a=y, labels_b=(y + 1) % 10)
    assert lines.shape == (2, 4, *SHAPE)
    # Each end is its image encoded and decoded with its own class (a CVAE's encoder sees
    # the class too).
    ends = [vae_steps.decode(dec, st.params, st.vars, vae_steps.encode(
        enc, st.params, st.vars, x, c)[0], c) for c in (y, (y + 1) % 10)]
    want_a, want_b = ends
    np.testing.assert_allclose(lines[:, 0], want_a, atol=1e-5)
    np.testing.assert_allclose(lines[:, 3], want_b, atol=1e-5)
    assert not np.allclose(want_a, want_b, atol=1e-3)
    with pytest.raises(ValueError, match="labels for both ends"):
        vae_steps.interpolate(enc, dec, st.params, st.vars, x, x, labels_a=y)


def test_resume_is_bit_exact_and_the_checkpoint_holds_the_decoder_as_generator(mnist_dir,
                                                                              tmp_path):
    c = smoke_config(mnist_dir, "mnist_vae", num_steps=20, log_every=10, sample_every=20,
                     **{"checkpoint.every": 10, "model.conditional": True,
                        "vae.kl_warmup": 15})
    a, b, info = straight_and_resumed(c, tmp_path, 10)
    assert isinstance(a, state_lib.VAEState) and info["num_classes"] == 10
    assert_trees_equal(a, b)  # Params, Adam state, EMA, step, key.
    fresh = jax.jit(families.build(c, SHAPE, 10).create(SHAPE))(jax.random.PRNGKey(0))
    assert not np.array_equal(a.params["decoder"]["Dense_0"]["kernel"],
                              fresh.params["decoder"]["Dense_0"]["kernel"])
    from gan_jax.trainer.workdir import load_generator
    draw, z_dim, step, gen_info = load_generator(tmp_path / "straight")
    x = draw(jnp.zeros((3, z_dim)), jnp.arange(3))
    want = vae_steps.decode(families.build(c, SHAPE, 10).decoder, a.ema_params, a.vars,
                            jnp.zeros((3, z_dim)), jnp.arange(3))
    np.testing.assert_allclose(np.asarray(x), np.asarray(want), atol=1e-6)
    assert step == 20 and gen_info["conditional_classes"] == 10


def test_config_errors(mnist_dir):
    c = smoke_config(mnist_dir, "mnist_vae", **{"vae.likelihood": "gaussian"})
    with pytest.raises(ConfigError, match="binarize"):
        families.build(c, SHAPE, 10)
    c = smoke_config(mnist_dir, "mnist_vae")
    with pytest.raises(ConfigError, match="square images of sides"):
        families.build(c, (30, 30, 1), 10)


def test_a_diverging_vae_stops_with_the_nan_message_and_keeps_its_checkpoint(mnist_dir,
                                                                             tmp_path):
    from gan_jax.errors import DivergenceError
    c = smoke_config(mnist_dir, "mnist_vae", num_steps=20, **{"checkpoint.every": 10,
                                                               "optimizer.g.learning_rate": 1e3,
                                                               "vae.likelihood": "gaussian",
                                                               "vae.binarize": False,
                                                               "vae.learn_sigma": True})
    with pytest.raises(DivergenceError, match=r"Step \d+: \w+ is (nan|inf|-inf)"):
        trainer.train_and_evaluate(c, tmp_path / "run")
    ckpts = tmp_path / "run/checkpoints"
    saved = sorted(int(p.name) for p in ckpts.iterdir()
                   if p.name.isdigit()) if ckpts.exists() else []
    assert saved in ([], [10])  # Only a state whose metrics were all finite is saved.
