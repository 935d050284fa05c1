"""Builds a (Generator, Discriminator) pair from a model config."""
import jax.numpy as jnp

from gan_jax.errors import ConfigError

from gan_jax.models import dcgan, mlp
from gan_jax.models.batchnorm import BN_GRADS
from gan_jax.models.layers import UPSAMPLE_IMPLS

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
    upsample = model_cfg.get("upsample", "auto")
    if upsample not in UPSAMPLE_IMPLS:
        raise ConfigError(f"config.model.upsample must be one of {UPSAMPLE_IMPLS}, "
                          f"got {upsample!r}.")
    bn_grad = model_cfg.get("bn_grad", "autodiff")
    if bn_grad not in BN_GRADS:
        raise ConfigError(f"config.model.bn_grad must be one of {BN_GRADS}, got {bn_grad!r}.")
    if model_cfg.name == "mlp":
        return (mlp.Generator(z_dim=model_cfg.z_dim, hidden=model_cfg.g_width,
                              image_shape=tuple(image_shape), dtype=dt),
                mlp.Discriminator(hidden=model_cfg.d_width, dtype=dt))
    if model_cfg.name == "dcgan":
        if h != w:
            raise ConfigError(f"DCGAN needs square images, the dataset has {h}x{w}; set "
                              "dataset.resolution to center-crop and resize them.")
        return (dcgan.Generator(resolution=h, z_dim=model_cfg.z_dim, width=model_cfg.g_width,
                                channels=c, dtype=dt, axis_name=axis_name, upsample=upsample,
                                bn_grad=bn_grad),
                dcgan.Discriminator(resolution=h, width=model_cfg.d_width, dtype=dt,
                                    axis_name=axis_name, bn_grad=bn_grad))
    raise ConfigError(f"config.model.name must be 'mlp' or 'dcgan', got {model_cfg.name!r}.")
