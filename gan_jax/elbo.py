"""The VAE's evidence lower bound, per image, in nats: pure functions of arrays.

-ELBO(x) = E_q[-log p(x | z)] + KL(q(z | x) || N(0, I)), estimated with one reparameterised
sample of z. Images are on the step's scale, [-1, 1]; a Bernoulli decoder models
``(x + 1) / 2`` (binarised or not), a Gaussian one ``x`` itself.
"""
import math

import jax.numpy as jnp


def gaussian_kl(mean_BZ, logvar_BZ):
    """KL(N(mean, exp(logvar)) || N(0, I)) per row, summed over z: the closed form
    0.5 * sum(mean^2 + var - 1 - logvar)."""
    return 0.5 * jnp.sum(jnp.square(mean_BZ) + jnp.exp(logvar_BZ) - 1.0 - logvar_BZ, axis=-1)


def reparameterize(mean_BZ, logvar_BZ, eps_BZ):
    """z = mean + std * eps for eps ~ N(0, I): differentiable in mean and log-variance."""
    return mean_BZ + jnp.exp(0.5 * logvar_BZ) * eps_BZ


def bernoulli_nll(logits_BHWC, target_BHWC):
    """-log p(target | logits) per image, summed over pixels; ``target`` in [0, 1] (binary
    for a proper likelihood; grey values give the usual cross-entropy)."""
    per_pixel = jnp.logaddexp(0.0, logits_BHWC) - target_BHWC * logits_BHWC
    return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1)


def gaussian_nll(mean_BHWC, log_sigma_C, x_BHWC):
    """-log N(x; mean, sigma^2) per image (a density on [-1, 1] pixels), summed over pixels."""
    z = (x_BHWC - mean_BHWC) * jnp.exp(-log_sigma_C)
    per_pixel = 0.5 * jnp.square(z) + log_sigma_C + 0.5 * math.log(2 * math.pi)
    return jnp.sum(per_pixel.reshape(per_pixel.shape[0], -1), axis=-1)


def bits_per_dim(nats_B, num_dims: int, likelihood: str):
    """Nats per image -> bits per pixel value. A Gaussian's density on [-1, 1] becomes the
    probability of 8-bit values (bins 2/256 wide): -log P = -log p + D log 128."""
    if likelihood == "gaussian":
        nats_B = nats_B + num_dims * math.log(128.0)
    return nats_B / (num_dims * math.log(2.0))


def kl_weight(step, beta: float, warmup_steps: int):
    """beta, ramped linearly from 0 over the first ``warmup_steps`` steps (0: none)."""
    if not warmup_steps:
        return jnp.float32(beta)
    return jnp.float32(beta) * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)
