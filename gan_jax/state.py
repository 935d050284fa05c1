"""GANState: everything a GAN run changes, in one pytree."""
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import optax


class GANState(flax.struct.PyTreeNode):
    """Both players' params, their mutable collections (BatchNorm statistics, spectral-norm
    vectors), both Optax states, the EMA of G's params, the step counter and the run's base
    RNG key.

    ``rng`` never changes: each step folds ``step`` into it, so step t draws the same
    numbers however the run was split into dispatches, restarts or devices.
    """
    step: jax.Array
    rng: jax.Array
    g_params: Any
    g_vars: Any  # Non-param collections, e.g. {"batch_stats": ...}; {} for the MLP.
    g_opt_state: Any
    d_params: Any
    d_vars: Any
    d_opt_state: Any
    ema_params: Any
    g_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    d_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def _split(variables):
    variables = flax.core.unfreeze(variables)
    params = variables.pop("params")
    return params, variables


def init_variables(key, module, x):
    """``module``'s variables for inputs shaped like ``x``, and class 0 for a conditional
    one; ``x`` holds two examples, so BatchNorm sees a batch with a defined variance."""
    y = {"y": jnp.zeros((x.shape[0],), jnp.int32)} if getattr(module, "num_classes", 0) else {}
    return module.init(key, x, train=False, **y)


def create(rng, G, D, *, g_tx, d_tx, image_shape) -> GANState:
    """Initialises G and D (their ``z_dim`` and ``image_shape`` fix the shapes) and both
    optimizers. Pure: ``jax.jit(create, static_argnums=(1, 2), static_argnames=...)`` works."""
    g_key, d_key, run_key = jax.random.split(rng, 3)
    g_params, g_vars = _split(init_variables(g_key, G, jnp.zeros((2, G.z_dim), jnp.float32)))
    d_params, d_vars = _split(init_variables(d_key, D,
                                             jnp.zeros((2, *image_shape), jnp.float32)))
    return GANState(
        step=jnp.zeros((), jnp.int32), rng=run_key,
        g_params=g_params, g_vars=g_vars, g_opt_state=g_tx.init(g_params),
        d_params=d_params, d_vars=d_vars, d_opt_state=d_tx.init(d_params),
        ema_params=jax.tree.map(jnp.copy, g_params), g_tx=g_tx, d_tx=d_tx)


def param_count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))
