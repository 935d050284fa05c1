"""The state pytrees, one per family: everything a run changes. ``GANState`` (G, D, two
optimizers) and ``VAEState`` (encoder and decoder, one optimizer)."""
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

    def parts(self) -> dict:
        """The state as named parts (a checkpoint's items); "generator" is what draws."""
        return {"generator": {"params": self.g_params, "ema_params": self.ema_params,
                              "vars": self.g_vars},
                "discriminator": {"params": self.d_params, "vars": self.d_vars},
                "optimizer": {"g": self.g_opt_state, "d": self.d_opt_state},
                "progress": {"step": self.step, "rng": self.rng}}

    def with_parts(self, parts: dict) -> "GANState":
        g, d, o, p = (parts[k] for k in ("generator", "discriminator", "optimizer", "progress"))
        return self.replace(g_params=g["params"], ema_params=g["ema_params"], g_vars=g["vars"],
                            d_params=d["params"], d_vars=d["vars"], g_opt_state=o["g"],
                            d_opt_state=o["d"], step=p["step"], rng=p["rng"])


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


class VAEState(flax.struct.PyTreeNode):
    """The encoder's and decoder's params as one tree ``{"encoder": ..., "decoder": ...}``
    (and their non-param collections, ``vars``, alike), one Optax state over both, their EMA,
    the step counter and the run's base RNG key (folded with ``step`` as in ``GANState``)."""
    step: jax.Array
    rng: jax.Array
    params: Any
    vars: Any
    opt_state: Any
    ema_params: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    def parts(self) -> dict:
        """As ``GANState.parts``: the decoder is the "generator" part, so a VAE checkpoint's
        generator is read like a GAN's."""
        part = lambda k: {"params": self.params[k], "ema_params": self.ema_params[k],
                          "vars": self.vars[k]}
        return {"generator": part("decoder"), "encoder": part("encoder"),
                "optimizer": {"vae": self.opt_state},
                "progress": {"step": self.step, "rng": self.rng}}

    def with_parts(self, parts: dict) -> "VAEState":
        e, d = parts["encoder"], parts["generator"]
        both = lambda k: {"encoder": e[k], "decoder": d[k]}
        return self.replace(params=both("params"), ema_params=both("ema_params"),
                            vars=both("vars"), opt_state=parts["optimizer"]["vae"],
                            step=parts["progress"]["step"], rng=parts["progress"]["rng"])


def create_vae(rng, encoder, decoder, *, tx, image_shape) -> VAEState:
    """Initialises the encoder and decoder (``decoder.z_dim`` and ``image_shape`` fix the
    shapes) and the optimizer. Pure, like ``create``."""
    e_key, d_key, run_key = jax.random.split(rng, 3)
    e_params, e_vars = _split(init_variables(e_key, encoder,
                                             jnp.zeros((2, *image_shape), jnp.float32)))
    d_params, d_vars = _split(init_variables(d_key, decoder,
                                             jnp.zeros((2, decoder.z_dim), jnp.float32)))
    params = {"encoder": e_params, "decoder": d_params}
    return VAEState(step=jnp.zeros((), jnp.int32), rng=run_key, params=params,
                    vars={"encoder": e_vars, "decoder": d_vars}, opt_state=tx.init(params),
                    ema_params=jax.tree.map(jnp.copy, params), tx=tx)


def param_count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))
