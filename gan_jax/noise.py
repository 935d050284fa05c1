"""Per-example random numbers that do not depend on how the batch is split over devices."""
import jax


def per_example(sample, key, shape, *, batch_axis: int = 0, axis_name=None):
    """``sample(key, shape)``, e.g. a ``jax.random`` draw, for this batch's examples along
    ``batch_axis``. Under ``pmap`` (``axis_name``) each device takes its slice of the draw
    for the global batch, so the devices together draw exactly what one device would for
    the whole batch; the same key on every device would repeat one draw per device."""
    if axis_name is None:
        return sample(key, shape)
    n, i = jax.lax.psum(1, axis_name), jax.lax.axis_index(axis_name)
    b = shape[batch_axis]
    full = sample(key, (*shape[:batch_axis], b * n, *shape[batch_axis + 1:]))
    return jax.lax.dynamic_slice_in_dim(full, i * b, b, axis=batch_axis)
