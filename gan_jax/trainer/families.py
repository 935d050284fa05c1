"""The model families the loop trains. Each gives the loop the same few things, so the loop
never asks which one it has: its networks, a pure ``create(key) -> state``, the pure train
step, the generator that draws samples (G, or the VAE's decoder) and where its params are
in the state, the arrays checked for NaN, and the log line's text."""
import functools

import jax

from gan_jax import models
from gan_jax import state as state_lib
from gan_jax import vae_steps
from gan_jax.errors import ConfigError
from gan_jax.models import registry, vae


class GAN:
    """G and D, their two optimizers, ``steps.make_train_step``."""

    def __init__(self, config, G, D):
        self.config, self.G, self.D = config, G, D
        self.networks, self.generator = (G, D), G
        self.optimizer_parts = {"g": "g", "d": "d"}  # config.optimizer.<k> -> state part

    def create(self, image_shape):
        from gan_jax.trainer import engine  # Looked up per call: tests patch it.
        return engine.make_create(self.config, self.G, self.D, image_shape)

    def step(self, **options):
        from gan_jax.trainer import engine
        return engine.make_step(self.config, self.G, self.D, **options)

    @staticmethod
    def generator_view(state):
        """(params, non-param collections, EMA params) of the generator."""
        return state.g_params, state.g_vars, state.ema_params

    @staticmethod
    def checked(state):
        return state.g_params, state.d_params, state.ema_params

    @staticmethod
    def sizes(state) -> str:
        return (f"G {state_lib.param_count(state.g_params):,} params, "
                f"D {state_lib.param_count(state.d_params):,} params")

    @staticmethod
    def nelbo(state):
        """A GAN has no likelihood bound (see ``VAE.nelbo``)."""
        return None

    @staticmethod
    def log_text(m: dict) -> str:
        return (f"d_loss {m['d_loss']:.4f} g_loss {m['g_loss']:.4f} | D(x) {m['d_real']:.3f} "
                f"D(G(z)) {m['d_fake']:.3f}")


class VAE:
    """Encoder and decoder, one optimizer (``config.optimizer.g``),
    ``vae_steps.make_vae_step``; the decoder draws samples from the prior."""

    def __init__(self, config, encoder, decoder):
        self.config, self.encoder, self.decoder = config, encoder, decoder
        self.networks, self.generator = (encoder, decoder), decoder
        self.optimizer_parts = {"g": "vae"}
        self._nelbo = nelbo_fn(encoder, decoder, config.vae.binarize)

    def create(self, image_shape):
        from gan_jax.trainer import engine
        tx = engine.make_optimizer(self.config.optimizer.g, self.config.num_steps,
                                   engine.injected(self.config, "g"))
        return functools.partial(state_lib.create_vae, encoder=self.encoder,
                                 decoder=self.decoder, tx=tx, image_shape=tuple(image_shape))

    def step(self, *, axis_name=None, batch_sharding=None, class_probs=None, hparams=None):
        """``hparams``: per-run values of ``vae.beta`` or ``ema.decay`` (as in a sweep)."""
        c, hp = self.config, hparams or {}
        del class_probs  # Classes come from the data: a VAE draws no fake labels.
        return vae_steps.make_vae_step(
            self.encoder, self.decoder, beta=hp.get("vae.beta", c.vae.beta),
            kl_warmup=c.vae.kl_warmup, binarize=c.vae.binarize,
            ema_decay=hp.get("ema.decay", c.ema.decay), ema_start=c.ema.start,
            axis_name=axis_name, batch_sharding=batch_sharding)

    @staticmethod
    def generator_view(state):
        return state.params["decoder"], state.vars["decoder"], state.ema_params["decoder"]

    @staticmethod
    def checked(state):
        return state.params, state.ema_params

    def nelbo(self, state):
        """``fn(images, labels, key) -> -ELBO per image`` of the EMA weights in ``state``."""
        return functools.partial(self._nelbo, state.ema_params, state.vars)

    @staticmethod
    def sizes(state) -> str:
        return (f"encoder {state_lib.param_count(state.params['encoder']):,} params, "
                f"decoder {state_lib.param_count(state.params['decoder']):,} params")

    @staticmethod
    def log_text(m: dict) -> str:
        return (f"-elbo {m['nelbo']:.2f} (recon {m['recon']:.2f} kl {m['kl']:.2f}) | "
                f"loss {m['loss']:.2f} kl weight {m['kl_weight']:.3f}")


def nelbo_fn(encoder, decoder, binarize: bool):
    """The jitted -ELBO per image, ``fn(params, vars, images, labels, key)``; with the
    weights bound, as ``eval.likelihood.test_nelbo`` calls it."""
    fn = jax.jit(functools.partial(vae_steps.negative_elbo, encoder, decoder, binarize=binarize))
    return lambda params, variables, x, y, key: fn(params, variables, x, key, labels=y)


def build_vae(config, image_shape, num_classes=None):
    """(encoder, decoder) for ``config.model`` (name "vae") and ``config.vae``."""
    m, v = config.model, config.vae
    h, w, c = image_shape
    if h != w or h not in vae.RESOLUTIONS:
        raise ConfigError(f"The VAE supports square images of sides {list(vae.RESOLUTIONS)}, "
                          f"the dataset has {h}x{w}; set dataset.resolution.")
    if v.likelihood not in vae.LIKELIHOODS:
        raise ConfigError(f"Config key 'vae.likelihood' must be one of {vae.LIKELIHOODS}, got "
                          f"{v.likelihood!r}.")
    if v.binarize and v.likelihood != "bernoulli":
        raise ConfigError("vae.binarize=True draws binary pixels for a Bernoulli decoder; set "
                          "vae.likelihood='bernoulli' or vae.binarize=False.")
    if v.sigma <= 0:
        raise ConfigError(f"Config key 'vae.sigma' must be > 0, got {v.sigma}.")
    classes = 0
    if m.conditional:
        if not num_classes:
            raise ConfigError("model.conditional=True needs labels, and this dataset has no "
                              "class labels (or dataset.label_key is ''); train it "
                              "unconditionally or use a labelled dataset.")
        classes = int(num_classes)
    dt = registry.compute_dtype(config.dtype)
    encoder = vae.Encoder(resolution=h, z_dim=m.z_dim, width=m.d_width, hidden=v.hidden,
                          num_classes=classes, dtype=dt)
    decoder = vae.Decoder(resolution=h, z_dim=m.z_dim, width=m.g_width, hidden=v.hidden,
                          channels=c, likelihood=v.likelihood, sigma=v.sigma,
                          learn_sigma=v.learn_sigma, num_classes=classes, dtype=dt)
    return encoder, decoder


# model.name -> (family, its networks' builder); every other name is a GAN's.
_FAMILIES = {"vae": (VAE, build_vae)}


def build(config, image_shape, num_classes=None, axis_name=None):
    """The family ``config.model.name`` belongs to, with its networks built."""
    family, builder = _FAMILIES.get(config.model.name, (None, None))
    if family is not None:
        return family(config, *builder(config, image_shape, num_classes))
    return GAN(config, *models.build(config.model, image_shape, config.dtype,
                                     axis_name=axis_name, num_classes=num_classes))


def generator(config, image_shape, num_classes=None):
    """The network that draws a run's samples (G, or the VAE's decoder), built alone."""
    return build(config, image_shape, num_classes).generator
