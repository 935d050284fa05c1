"""Builds a (Generator, Discriminator) pair from a model config."""
import jax.numpy as jnp

from gan_jax.errors import ConfigError

from gan_jax.models import dcgan, mlp

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def compute_dtype(name: str):
    if name not in DTYPES:
        raise ConfigError(f"config.dtype must be one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def build(model_cfg, image_shape, dtype: str = "float32", axis_name: str | None = None):
    """Returns (G, D) for ``model_cfg.name`` in {"mlp", "dcgan"} and images of ``image_shape``.
    ``axis_name``: the pmap axis over which BatchNorm computes its statistics."""
    h, w, c = image_shape
    dt = compute_dtype(dtype)
    if model_cfg.name == "mlp":
        return (mlp.Generator(z_dim=model_cfg.z_dim, hidden=model_cfg.g_width,
                              image_shape=tuple(image_shape), dtype=dt),
                mlp.Discriminator(hidden=model_cfg.d_width, dtype=dt))
    if model_cfg.name == "dcgan":
        if h != w:
            raise ConfigError(f"DCGAN needs square images, the dataset has {h}x{w}; set "
                              "dataset.resolution to center-crop and resize them.")
        return (dcgan.Generator(resolution=h, z_dim=model_cfg.z_dim, width=model_cfg.g_width,
                                channels=c, dtype=dt, axis_name=axis_name),
                dcgan.Discriminator(resolution=h, width=model_cfg.d_width, dtype=dt,
                                    axis_name=axis_name))
    raise ConfigError(f"config.model.name must be 'mlp' or 'dcgan', got {model_cfg.name!r}.")
