"""Flax Linen generator and discriminator modules.

Every generator maps ``z_BZ`` to images ``x_BHWC`` in [-1, 1] and exposes ``z_dim``;
every discriminator maps ``x_BHWC`` to logits of shape ``[B]``. Both take ``y`` (int
classes ``[B]``; used when ``num_classes > 0``, else None) and ``train``, so conditional,
BatchNorm and plain models share one calling convention: ``G(z, y, train=...)``.
"""
from gan_jax.models import dcgan, layers, mlp, resnet
from gan_jax.models.registry import build, num_classes

__all__ = ["build", "dcgan", "layers", "mlp", "num_classes", "resnet"]
