"""The trainer: everything around the pure step that a run needs (config, engine,
checkpoints, writers, periodic work, stop signals, the workdir). The only I/O in gan_jax
besides the data and evaluation caches; nothing outside it imports it."""

__all__ = ["train_and_evaluate"]


def __getattr__(name):
    # Lazily: the loop brings in tfds, which the benchmark's GPU machines lack, and the
    # benchmark needs only the engine and the config.
    if name == "train_and_evaluate":
        from gan_jax.trainer.loop import train_and_evaluate
        return train_and_evaluate
    raise AttributeError(f"module 'gan_jax.trainer' has no attribute {name!r}")
