import jax
import numpy as np
import pytest

from gan_jax.data import shuffle

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("n,b", [(1000, 64), (60000, 128), (7, 3), (1, 1), (2, 2), (513, 512)])
def test_each_epoch_is_a_permutation(n, b):
    steps = -(-2 * n // b) + 1
    draw = jax.jit(jax.vmap(lambda t: shuffle.batch_indices(KEY, t, b, n)))
    idx = np.asarray(draw(np.arange(steps))).reshape(-1)
    assert sorted(idx[:n]) == list(range(n))
    assert sorted(idx[n:2 * n]) == list(range(n))
    if n >= 100:
        assert (idx[:n] != idx[n:2 * n]).mean() > 0.9  # A fresh order every epoch.
        assert (idx[:n] != np.arange(n)).mean() > 0.9  # And not the identity.


def test_pure_function_of_key_and_step():
    draw = jax.jit(lambda k, t: shuffle.batch_indices(k, t, 32, 1000))
    a = draw(KEY, 12345)
    np.testing.assert_array_equal(a, draw(KEY, 12345))
    assert not np.array_equal(a, draw(jax.random.PRNGKey(1), 12345))
    assert not np.array_equal(a, draw(KEY, 12346))


def test_late_steps_do_not_overflow():
    # 2**31 images would overflow int32 step * batch_size.
    n, b, t = 60000, 1024, 3_000_000
    idx = np.asarray(jax.jit(lambda s: shuffle.batch_indices(KEY, s, b, n))(t))
    assert idx.min() >= 0 and idx.max() < n and len(set(idx)) == b
    # Positions t*b .. t*b+b-1 lie in one epoch here; they are distinct members of it.
    epoch, offset = divmod(t * b, n)
    full = jax.jit(lambda e: shuffle.permute(jax.numpy.arange(n, dtype=jax.numpy.uint32),
                                             shuffle.epoch_keys(KEY, e)[0], n))
    full = np.asarray(full(np.array([epoch])))
    np.testing.assert_array_equal(idx, full[offset:offset + b])


@pytest.mark.parametrize("n,b,t", [(100, 32, 1), (7, 3, 5), (60000, 1024, 3_000_000)])
def test_several_steps_at_once_are_the_steps_one_by_one(n, b, t):
    # Across epoch boundaries (100 / 32, 7 / 3) and late, where step * batch overflows int32.
    k = 4
    together = np.asarray(jax.jit(lambda s: shuffle.batch_indices(KEY, s, b, n, steps=k))(t))
    one = jax.jit(lambda s: shuffle.batch_indices(KEY, s, b, n))
    np.testing.assert_array_equal(together, np.stack([one(t + i) for i in range(k)]))


def test_batch_larger_than_dataset():
    with pytest.raises(ValueError, match="larger than the dataset"):
        shuffle.batch_indices(KEY, 0, 11, 10)
