"""The pure VAE train step, ``(state, batch) -> (state, metrics)``, shaped like the GAN's:
jit it, ``steps.scan``/``steps.repeat`` it for K steps per dispatch, shard it or pmap it.

One step: encode the batch, draw z by reparameterisation, decode, and take one optimizer
step on the mean of -ELBO with the KL term weighted by beta (ramped up over
``kl_warmup`` steps); then the EMA. Noise (z's and a binarisation's) is drawn per example
from ``fold_in(rng, step)``, so one device, a mesh and pmap draw the same numbers.
"""
import jax
import jax.numpy as jnp
import optax

from gan_jax import elbo
from gan_jax.noise import per_example
from gan_jax.state import VAEState
from gan_jax.steps import (Metrics, _normal, _pmean, _y, apply_model, ema_update,
                           images_and_labels, to_float_images)


def targets(decoder, x_BHWC, key, binarize: bool, axis_name=None, sharding=None):
    """What the decoder's likelihood scores: ``x`` for a Gaussian; for a Bernoulli its
    [0, 1] intensities, or with ``binarize`` a fresh binary draw from them (dynamic
    binarisation)."""
    if decoder.likelihood == "gaussian":
        return x_BHWC
    p = (x_BHWC + 1.0) / 2.0
    if not binarize:
        return p
    u = per_example(jax.random.uniform, key, x_BHWC.shape, axis_name=axis_name)
    if sharding is not None:
        u = jax.lax.with_sharding_constraint(u, sharding)
    return (u < p).astype(jnp.float32)


def terms(encoder, decoder, params, variables, x_BHWC, target_BHWC, eps_BZ, labels=None,
          train: bool = True):
    """Per image: (reconstruction -log p(x | z), KL(q || prior)), in nats, and the updated
    non-param collections."""
    (mean, logvar), e_vars = apply_model(encoder, params["encoder"], variables["encoder"],
                                         x_BHWC, train, **_y(labels))
    z = elbo.reparameterize(mean, logvar, eps_BZ)
    (loc, log_sigma), d_vars = apply_model(decoder, params["decoder"], variables["decoder"],
                                           z, train, method="stats", **_y(labels))
    if decoder.likelihood == "gaussian":
        recon = elbo.gaussian_nll(loc, log_sigma, target_BHWC)
    else:
        recon = elbo.bernoulli_nll(loc, target_BHWC)
    return recon, elbo.gaussian_kl(mean, logvar), {"encoder": e_vars, "decoder": d_vars}


def make_vae_step(encoder, decoder, *, beta: float = 1.0, kl_warmup: int = 0,
                  binarize: bool = False, ema_decay: float = 0.999, ema_start: int = 0,
                  axis_name: str | None = None, batch_sharding=None):
    """Returns ``train_step(state, batch) -> (state, metrics)`` for a ``VAEState``.
    ``axis_name``/``batch_sharding``: as for ``steps.make_train_step``. A conditional
    encoder and decoder (``num_classes > 0``) read the batch's labels."""
    conditional = getattr(encoder, "num_classes", 0) > 0

    def train_step(state: VAEState, batch) -> tuple[VAEState, Metrics]:
        images, labels = images_and_labels(batch)
        if not conditional:
            labels = None
        elif labels is None:
            raise ValueError("A conditional VAE needs labels: pass batches as a dict "
                             "{'image': ..., 'label': ...}.")
        x = to_float_images(images)
        key = jax.random.fold_in(state.rng, state.step)
        eps = _normal(jax.random.fold_in(key, 0), (x.shape[0], decoder.z_dim), axis_name,
                      batch_sharding)
        target = targets(decoder, x, jax.random.fold_in(key, 1), binarize, axis_name,
                         batch_sharding)
        weight = elbo.kl_weight(state.step, beta, kl_warmup)

        def loss_fn(params):
            recon, kl, new_vars = terms(encoder, decoder, params, state.vars, x, target, eps,
                                        labels)
            recon, kl = jnp.mean(recon), jnp.mean(kl)
            return recon + weight * kl, ({"recon": recon, "kl": kl}, new_vars)

        (value, (aux, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params)
        grads, value, aux = _pmean((grads, value, aux), axis_name)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, state.step, ema_decay, ema_start)
        metrics = {"loss": value, "nelbo": aux["recon"] + aux["kl"], **aux,
                   "kl_weight": weight, "grad_norm": optax.tree.norm(grads),
                   "param_norm": optax.tree.norm(params)}
        metrics = {k: v.astype(jnp.float32) for k, v in metrics.items()}
        return state.replace(params=params, vars=new_vars, opt_state=opt_state, ema_params=ema,
                             step=state.step + 1), metrics

    return train_step


def encode(encoder, params, variables, x_BHWC, labels=None):
    """q(z | x)'s (mean, log-variance) in evaluation mode; ``params``/``variables``: the
    state's ``{"encoder", "decoder"}`` trees."""
    return apply_model(encoder, params["encoder"], variables["encoder"],
                       to_float_images(x_BHWC), False, **_y(labels))[0]


def decode(decoder, params, variables, z_BZ, labels=None):
    """The decoder's mean images in [-1, 1]."""
    return apply_model(decoder, params["decoder"], variables["decoder"], z_BZ, False,
                       **_y(labels))[0]


def reconstruct(encoder, decoder, params, variables, x_BHWC, labels=None):
    """Images decoded from their posterior means: the VAE's reconstructions, in [-1, 1]."""
    mean, _ = encode(encoder, params, variables, x_BHWC, labels)
    return decode(decoder, params, variables, mean, labels)


def interpolate(encoder, decoder, params, variables, a_BHWC, b_BHWC, num: int = 8,
                labels_a=None, labels_b=None):
    """For each pair (a_i, b_i): ``num`` images decoded along the line between their
    posterior means, a_i's first. Returns [B, num, H, W, C] in [-1, 1]. A CVAE decodes the
    first half of each line with a_i's class and the rest with b_i's."""
    if (labels_a is None) != (labels_b is None):
        raise ValueError("interpolate: pass labels for both ends (labels_a and labels_b) of "
                         "a CVAE's lines, or neither for an unconditional VAE.")
    za, _ = encode(encoder, params, variables, a_BHWC, labels_a)
    zb, _ = encode(encoder, params, variables, b_BHWC, labels_b)
    t = jnp.linspace(0.0, 1.0, num)[None, :, None]
    z = (za[:, None] * (1.0 - t) + zb[:, None] * t).reshape(-1, za.shape[-1])
    y = None
    if labels_a is not None:
        y = jnp.where(jnp.arange(num)[None, :] < (num + 1) // 2, labels_a[:, None],
                      labels_b[:, None]).reshape(-1)
    x = decode(decoder, params, variables, z, y)
    return x.reshape(a_BHWC.shape[0], num, *x.shape[1:])


def negative_elbo(encoder, decoder, params, variables, x_BHWC, key, *, binarize: bool,
                  labels=None):
    """-ELBO per image in nats (an upper bound on -log p(x)), one sample of z from ``key``;
    a ``binarize``d Bernoulli decoder scores a binary draw of the images from the same key."""
    x = to_float_images(x_BHWC)
    eps_key, bin_key = jax.random.split(key)
    eps = jax.random.normal(eps_key, (x.shape[0], decoder.z_dim), jnp.float32)
    recon, kl, _ = terms(encoder, decoder, params, variables, x,
                         targets(decoder, x, bin_key, binarize), eps, labels, train=False)
    return recon + kl
