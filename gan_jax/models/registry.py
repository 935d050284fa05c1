"""Builds a (Generator, Discriminator) pair from a model config."""
import jax.numpy as jnp

from gan_jax.errors import ConfigError

from gan_jax.models import dcgan, mlp, resnet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
NAMES = ("mlp", "dcgan", "resnet")


def compute_dtype(name: str):
    if name not in DTYPES:
        raise ConfigError(f"config.dtype must be one of {sorted(DTYPES)}, got {name!r}.")
    return DTYPES[name]


def num_classes(module) -> int:
    """The classes a G or D is conditioned on; 0 for an unconditional one."""
    return getattr(module, "num_classes", 0) or 0


def build(model_cfg, image_shape, dtype: str = "float32", axis_name: str | None = None,
          num_classes: int | None = None):
    """Returns (G, D) for ``model_cfg.name`` in NAMES and images of ``image_shape``.
    ``axis_name``: the pmap axis over which BatchNorm computes its statistics;
    ``num_classes``: the dataset's, which a conditional model (``model_cfg.conditional``)
    needs."""
    h, w, c = image_shape
    dt = compute_dtype(dtype)
    name = model_cfg.name
    classes = 0
    if model_cfg.get("conditional", False):
        if name == "mlp":
            raise ConfigError("The MLP GAN has no conditional form; use model.name='dcgan' or "
                              "'resnet' with model.conditional=True.")
        if not num_classes:
            raise ConfigError("model.conditional=True needs labels, and this dataset has no "
                              "class labels (or dataset.label_key is ''); train it "
                              "unconditionally or use a labelled dataset.")
        classes = int(num_classes)
    class_input = bool(classes) and model_cfg.get("class_input", False)
    if model_cfg.get("d_bias", False) and name != "dcgan":
        raise ConfigError(f"model.d_bias applies to model.name 'dcgan' only ({name}'s layers "
                          "already have their biases); drop it.")
    if name in ("dcgan", "resnet") and h != w:
        raise ConfigError(f"{name} needs square images, the dataset has {h}x{w}; set "
                          "dataset.resolution to center-crop and resize them.")
    if name == "mlp":
        if model_cfg.get("spectral_norm", False):
            raise ConfigError("model.spectral_norm applies to model.name 'dcgan' and 'resnet'; "
                              "the MLP has none.")
        return (mlp.Generator(z_dim=model_cfg.z_dim, hidden=model_cfg.g_width,
                              image_shape=tuple(image_shape), dtype=dt),
                mlp.Discriminator(hidden=model_cfg.d_width, dtype=dt))
    if name == "dcgan":
        return (dcgan.Generator(resolution=h, z_dim=model_cfg.z_dim, width=model_cfg.g_width,
                                channels=c, num_classes=classes, class_input=class_input,
                                dtype=dt, axis_name=axis_name),
                dcgan.Discriminator(resolution=h, width=model_cfg.d_width, num_classes=classes,
                                    spectral_norm=model_cfg.get("spectral_norm", False),
                                    bias=model_cfg.get("d_bias", False),
                                    dtype=dt, axis_name=axis_name))
    if name == "resnet":
        if h not in resnet.RESOLUTIONS:
            raise ConfigError(f"The resnet model supports resolutions {resnet.RESOLUTIONS}, "
                              f"the dataset has {h}; set dataset.resolution.")
        return (resnet.Generator(resolution=h, z_dim=model_cfg.z_dim, width=model_cfg.g_width,
                                 channels=c, num_classes=classes, class_input=class_input,
                                 dtype=dt, axis_name=axis_name),
                resnet.Discriminator(resolution=h, width=model_cfg.d_width, num_classes=classes,
                                     spectral_norm=model_cfg.get("spectral_norm", True),
                                     dtype=dt))
    raise ConfigError(f"config.model.name must be one of {NAMES}, got {name!r}.")
