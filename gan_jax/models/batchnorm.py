"""Training-mode BatchNorm: per-group statistics, and an optional closed-form gradient."""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# How the training BatchNorm is differentiated: by JAX's autodiff of the forward, or by
# the textbook closed form (``batch_norm``). The same gradient to float rounding; the
# closed form compiles to fewer kernels on GPU (docs/benchmarks.md, the census).
BN_GRADS = ("autodiff", "closed_form")


def _row_axes(xg):
    """The axes of ``xg`` [N, G, ..., C] a group's statistics are taken over."""
    return (0, *range(2, xg.ndim - 1))


def _stats(xg, axis_name):
    """Per-group mean and biased variance of ``xg`` [N, G, ..., C] in at least float32, as
    nn.BatchNorm takes them: E[x^2] - E[x]^2 clipped at 0, averaged over ``axis_name``."""
    xf = xg.astype(jnp.promote_types(xg.dtype, jnp.float32))
    axes = _row_axes(xg)
    stats = jnp.stack([xf.mean(axes), (xf * xf).mean(axes)])  # [2, G, C]
    if axis_name is not None:
        stats = lax.pmean(stats, axis_name)
    return stats[0], jnp.maximum(0.0, stats[1] - stats[0] * stats[0])


def _broadcast(v_GC, ndim):
    return v_GC.reshape(1, v_GC.shape[0], *[1] * (ndim - 3), v_GC.shape[1])


def _normalize(xg, scale, bias, epsilon, axis_name):
    mean, var = _stats(xg, axis_name)
    inv = lax.rsqrt(var + epsilon)
    y = (xg - _broadcast(mean, xg.ndim)) * _broadcast(inv * scale, xg.ndim) + bias
    return y.astype(xg.dtype), mean, var, inv


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm(xg, scale, bias, epsilon, axis_name):
    """BatchNorm of ``xg`` [N, G, ..., C] with each group g's statistics; returns
    (y, mean [G, C], var [G, C]). Its gradient is the closed form
    dx = scale / sigma * (dy - E[dy] - x_hat E[dy x_hat]), E over the group's rows on every
    device of ``axis_name``. The statistics are for the running averages: their
    cotangents are ignored, so callers stop their gradient."""
    return _normalize(xg, scale, bias, epsilon, axis_name)[:3]


def _batch_norm_fwd(xg, scale, bias, epsilon, axis_name):
    y, mean, var, inv = _normalize(xg, scale, bias, epsilon, axis_name)
    return (y, mean, var), (xg, scale, bias, mean, inv)


def _batch_norm_bwd(epsilon, axis_name, residuals, cotangents):
    xg, scale, bias, mean, inv = residuals
    dy = cotangents[0].astype(mean.dtype)
    x_hat = (xg - _broadcast(mean, xg.ndim)) * _broadcast(inv, xg.ndim)
    axes = _row_axes(xg)
    sums = jnp.stack([dy.sum(axes), (dy * x_hat).sum(axes)])  # [2, G, C], this device's rows
    means = sums / (xg.size // (xg.shape[1] * xg.shape[-1]))
    if axis_name is not None:  # The statistics are over every device's rows.
        means = lax.pmean(means, axis_name)
    dx = (dy - _broadcast(means[0], xg.ndim) - x_hat * _broadcast(means[1], xg.ndim)
          ) * _broadcast(inv * scale, xg.ndim)
    # scale and bias are shared by the groups; like autodiff, each device gives its own rows'
    # part, which the step's gradient pmean combines.
    return (dx.astype(xg.dtype), sums[1].sum(0).astype(scale.dtype),
            sums[0].sum(0).astype(bias.dtype))


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class GroupedBatchNorm(nn.Module):
    """Training-mode BatchNorm of a batch that holds ``groups`` batches interleaved (row r
    belongs to batch r % groups), each normalised by its own statistics, as if each went
    through ``nn.BatchNorm`` in its own call, in order: the running averages take batch 0,
    then batch 1, ... It reads and writes ``nn.BatchNorm``'s variables (scale, bias; mean,
    var), so a module may create either under the same name. Interleaving keeps each
    device's rows of every batch on that device when the batch axis is sharded.
    ``grad``: one of BN_GRADS."""
    groups: int = 1
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None
    param_dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones
    bias_init: Any = nn.initializers.zeros
    axis_name: str | None = None
    grad: str = "autodiff"

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        if x.shape[0] % self.groups:
            raise ValueError(f"GroupedBatchNorm(groups={self.groups}) got a batch of "
                             f"{x.shape[0]} rows, which is not a multiple of {self.groups}.")
        if self.grad not in BN_GRADS:
            raise ValueError(f"GroupedBatchNorm grad must be one of {BN_GRADS}, "
                             f"got {self.grad!r}.")
        scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
        bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        xg = x.reshape(x.shape[0] // self.groups, self.groups, *x.shape[1:])
        axis_name = None if self.is_initializing() else self.axis_name
        if self.grad == "closed_form":
            y, mean, var = batch_norm(xg, scale, bias, self.epsilon, axis_name)
            mean, var = lax.stop_gradient(mean), lax.stop_gradient(var)
        else:
            y, mean, var, _ = _normalize(xg, scale, bias, self.epsilon, axis_name)
        if not self.is_initializing():
            m, rm, rv = self.momentum, ra_mean.value, ra_var.value
            for g in range(self.groups):
                rm, rv = m * rm + (1 - m) * mean[g], m * rv + (1 - m) * var[g]
            ra_mean.value, ra_var.value = rm, rv
        return y.reshape(x.shape).astype(self.dtype or x.dtype)
