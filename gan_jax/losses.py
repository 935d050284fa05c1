"""Adversarial losses from discriminator logits, and gradient penalties.

Each loss is a pair of functions: ``d(real_logits, fake_logits)`` and ``g(fake_logits)``,
both returning a float32 scalar that the respective player minimises. log-sigmoids are
written with softplus, so no logit is large enough to give inf or nan.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gan_jax.errors import ConfigError
from gan_jax.noise import per_example


class AdversarialLoss(NamedTuple):
    d: Callable[[jax.Array, jax.Array], jax.Array]
    g: Callable[[jax.Array], jax.Array]


def _f32(x):
    return jnp.asarray(x, jnp.float32)


def _d_bce(real, fake):
    # -[log D(x) + log(1 - D(G(z)))] with D = sigmoid: -log sigmoid(t) = softplus(-t).
    return jnp.mean(jax.nn.softplus(-_f32(real))) + jnp.mean(jax.nn.softplus(_f32(fake)))


# The seed's game: D maximises log D(x) + log(1 - D(G(z))), G minimises log(1 - D(G(z))).
minimax = AdversarialLoss(d=_d_bce, g=lambda fake: -jnp.mean(jax.nn.softplus(_f32(fake))))

# G maximises log D(G(z)) instead, which does not saturate when D rejects the fakes.
non_saturating = AdversarialLoss(d=_d_bce, g=lambda fake: jnp.mean(jax.nn.softplus(-_f32(fake))))

hinge = AdversarialLoss(
    d=lambda real, fake: (jnp.mean(jax.nn.relu(1.0 - _f32(real)))
                          + jnp.mean(jax.nn.relu(1.0 + _f32(fake)))),
    g=lambda fake: -jnp.mean(_f32(fake)))

wasserstein = AdversarialLoss(
    d=lambda real, fake: jnp.mean(_f32(fake)) - jnp.mean(_f32(real)),
    g=lambda fake: -jnp.mean(_f32(fake)))

# Mao et al.'s LSGAN with targets a=0 (fake), b=1 (real), c=1 (what G wants D to say).
least_squares = AdversarialLoss(
    d=lambda real, fake: 0.5 * (jnp.mean((_f32(real) - 1.0) ** 2) + jnp.mean(_f32(fake) ** 2)),
    g=lambda fake: 0.5 * jnp.mean((_f32(fake) - 1.0) ** 2))

LOSSES = {"minimax": minimax, "non_saturating": non_saturating, "hinge": hinge,
          "wasserstein": wasserstein, "least_squares": least_squares}


def get(loss) -> AdversarialLoss:
    """A loss by name, or an ``AdversarialLoss`` passed through unchanged."""
    if isinstance(loss, AdversarialLoss):
        return loss
    if loss not in LOSSES:
        raise ConfigError(f"Unknown loss {loss!r}; choose one of {sorted(LOSSES)} "
                          "or pass gan_jax.losses.AdversarialLoss(d=..., g=...).")
    return LOSSES[loss]


def _input_grad(d_fn, x_BHWC):
    # Summing over the batch gives every example its own gradient, since D scores each alone
    # (true for D in eval mode or without BatchNorm; with train-mode BatchNorm it is the
    # gradient of the batch's summed score, which is what those implementations use too).
    return jax.grad(lambda x: jnp.sum(_f32(d_fn(x))))(x_BHWC)


def _sq_norms(g_BHWC):
    return jnp.sum(jnp.square(_f32(g_BHWC)).reshape(g_BHWC.shape[0], -1), axis=1)


def gradient_penalty(d_fn, real_BHWC, fake_BHWC, key, target: float = 1.0, axis_name=None):
    """WGAN-GP: E[(||grad D(x_hat)|| - target)^2] on random interpolates of real and fake.
    Under ``pmap`` pass ``axis_name``: each device takes its share of the global draw."""
    eps = per_example(jax.random.uniform, key,
                      (real_BHWC.shape[0],) + (1,) * (real_BHWC.ndim - 1), axis_name=axis_name)
    x_hat = eps * _f32(real_BHWC) + (1.0 - eps) * _f32(fake_BHWC)
    norms = jnp.sqrt(_sq_norms(_input_grad(d_fn, x_hat)) + 1e-12)
    return jnp.mean((norms - target) ** 2)


def r1_penalty(d_fn, real_BHWC):
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data; the caller applies gamma/2."""
    return jnp.mean(_sq_norms(_input_grad(d_fn, _f32(real_BHWC))))


def penalty(kind: str, weight: float):
    """A ``d_penalty(d_fn, real, fake, key, axis_name=None) -> scalar`` for
    ``steps.make_train_step``: "gp" (WGAN-GP, ``weight`` = lambda) or "r1" (``weight`` =
    gamma; applies gamma / 2)."""
    if kind == "gp":
        return lambda d_fn, real, fake, key, axis_name=None: weight * gradient_penalty(
            d_fn, real, fake, key, axis_name=axis_name)
    if kind == "r1":
        return lambda d_fn, real, fake, key, axis_name=None: 0.5 * weight * r1_penalty(d_fn, real)
    raise ConfigError(f"Unknown penalty {kind!r}; choose 'gp' or 'r1'.")
