"""Evaluation, separate from training: feature extractors (the FID Inception-v3 port, an MNIST
classifier), metrics (FID, KID, IS, precision/recall, density/coverage), cached reference
statistics, and ``evaluate_generator`` / ``evaluate_checkpoint``."""
from gan_jax.eval import features, metrics, reference
from gan_jax.eval.evaluate import evaluate_checkpoint, evaluate_generator, prepare

__all__ = ["evaluate_checkpoint", "evaluate_generator", "features", "metrics", "prepare",
           "reference"]
