"""Evaluation, separate from training: feature extractors (the FID Inception-v3 port, an MNIST
classifier), metrics (FID, KID, IS, precision/recall, density/coverage), conditional metrics
(intra-FID, class accuracy), cached reference statistics, and ``evaluate_generator`` for any
``draw(z) -> images`` (``draw(z, y)`` for a conditional generator). Scoring a run's
checkpoint is the trainer's (``gan_jax.trainer.evaluation.evaluate_checkpoint``)."""
from gan_jax.eval import conditional, features, metrics, reference
from gan_jax.eval.evaluate import evaluate_generator, prepare

__all__ = ["conditional", "evaluate_generator", "features", "metrics", "prepare", "reference"]
