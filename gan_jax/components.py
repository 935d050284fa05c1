"""What a config asks for, built: optimizers, the pure train step, the state constructor."""
import functools

import jax
import optax

from gan_jax import steps
from gan_jax import state as state_lib
from gan_jax.data import augment as augment_lib
from gan_jax.errors import ConfigError


def make_optimizer(cfg) -> optax.GradientTransformation:
    if cfg.name == "adam":
        return optax.adam(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.name == "adamw":
        return optax.adamw(cfg.learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return optax.rmsprop(cfg.learning_rate, eps=cfg.eps)
    if cfg.name == "sgd":
        return optax.sgd(cfg.learning_rate, momentum=cfg.b1 or None)
    raise ConfigError(f"optimizer name must be adam, adamw, rmsprop or sgd, got {cfg.name!r}.")


def make_step(config, G, D, axis_name: str | None = None, **options):
    """The pure ``(state, batch) -> (state, metrics)`` step that ``config`` describes;
    ``options`` go to ``steps.make_train_step`` as they are (e.g. ``reuse_forward``)."""
    penalties = [steps.penalty(k, w) for k, w in (("gp", config.gp_weight),
                                                   ("r1", config.r1_weight)) if w]
    d_penalty = None
    if penalties:
        d_penalty = lambda *a: sum(p(*a) for p in penalties)
    try:
        augment = augment_lib.make(config.dataset.augment)
    except ValueError as e:
        raise ConfigError(f"config.dataset.augment: {e}") from None
    return steps.make_train_step(G, D, loss=config.loss, n_dis=config.n_dis,
                                 ema_decay=config.ema.decay, ema_start=config.ema.start,
                                 d_penalty=d_penalty, augment=augment, axis_name=axis_name,
                                 share_fake=config.share_fake,
                                 d_joint_pass=config.d_joint_pass,
                                 **{"norms": config.norm_metrics, **options})


def make_create(config, G, D, image_shape):
    """``create(key) -> GANState`` for this config (pure; jit or shard it as needed)."""
    return functools.partial(
        state_lib.create, G=G, D=D, g_tx=make_optimizer(config.optimizer.g),
        d_tx=make_optimizer(config.optimizer.d), image_shape=tuple(image_shape))


@jax.jit
def all_finite(state):
    trees = (state.g_params, state.d_params, state.ema_params)
    return jax.numpy.all(jax.numpy.array([jax.numpy.all(jax.numpy.isfinite(x))
                                          for x in jax.tree.leaves(trees)]))
