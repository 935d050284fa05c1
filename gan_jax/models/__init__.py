"""Flax Linen generator and discriminator modules.

Every generator maps ``z_BZ`` to images ``x_BHWC`` in [-1, 1] and exposes ``z_dim``;
every discriminator maps ``x_BHWC`` to logits of shape ``[B]``. Both take ``train`` so
BatchNorm models and plain ones share one calling convention.
"""
from gan_jax.models import dcgan, mlp
from gan_jax.models.registry import build

__all__ = ["build", "dcgan", "mlp"]
