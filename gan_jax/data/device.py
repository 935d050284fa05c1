"""Datasets held on the accelerator as uint8, with batches drawn inside the jitted step.

No host input pipeline stands between steps: the step gathers its own batch from the
device-resident array, at indices given by ``shuffle.batch_indices`` (epoch-exact, a pure
function of the step), so resuming at step t draws the same batches as the first run.
"""
import jax
import jax.numpy as jnp

from gan_jax.data import shuffle


def make_data_step(train_step, *, rows_per_step: int, num_examples: int, key):
    """Turns ``train_step(state, batch)`` into ``step(state, images_NHWC)`` that draws
    ``rows_per_step`` images (``n_dis * batch_size``) of the device-resident ``images``."""
    if rows_per_step > num_examples:
        raise ValueError(f"One step needs {rows_per_step} images (n_dis * batch_size) but the "
                         f"dataset has only {num_examples}.")

    def data_step(state, images_NHWC):
        idx = shuffle.batch_indices(key, state.step, rows_per_step, num_examples)
        return train_step(state, jnp.take(images_NHWC, idx, axis=0))

    return data_step


def put(images_NHWC, sharding=None):
    """Copies host uint8 images to the device (or across devices with ``sharding``)."""
    return jax.device_put(jnp.asarray(images_NHWC, jnp.uint8), sharding)
