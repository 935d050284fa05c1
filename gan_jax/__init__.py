"""gan_jax: generative adversarial networks as pure JAX functions."""
from gan_jax import losses, models, sampling, state, steps

__version__ = "0.1.0"
__all__ = ["losses", "models", "sampling", "state", "steps"]
