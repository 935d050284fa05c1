"""Epoch-exact shuffling computed on the device, O(batch) per step.

Example j of step t is ``perm_e(p mod N)`` where ``p = t * B + j`` and ``e = p div N`` is the
epoch: every epoch visits each of the N examples once, in a fresh order per epoch, and the
order is a pure function of (key, step). So the data position needs no storage beyond the
step counter, and a resumed run draws exactly the batches it would have drawn.

``perm_e`` is a 4-round Feistel network over the smallest even-bit domain >= N, walked
until it lands inside [0, N) ("cycle walking"), which makes it a bijection on [0, N).
"""
import jax
import jax.numpy as jnp

_ROUNDS = 4


def _mix32(x):
    # A well-mixing 32-bit integer hash (Wellons' lowbias32).
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _half_bits(n: int) -> int:
    return max(1, ((n - 1).bit_length() + 1) // 2)


def _feistel(x, round_keys, half: int):
    mask = jnp.uint32((1 << half) - 1)
    left, right = x >> half, x & mask
    for r in range(_ROUNDS):
        left, right = right, left ^ (_mix32(right ^ round_keys[..., r]) & mask)
    return (left << half) | right


def permute(index, round_keys, n: int):
    """The image of ``index`` (uint32, any shape) under the permutation of [0, n) that
    ``round_keys`` (uint32 [..., 4], broadcastable to index) select."""
    half = _half_bits(n)
    y = _feistel(index.astype(jnp.uint32), round_keys, half)
    # The domain is at most 4n, so each walk takes under 4 extra rounds on average.
    return jax.lax.while_loop(lambda y: jnp.any(y >= n),
                              lambda y: jnp.where(y >= n, _feistel(y, round_keys, half), y), y)


def epoch_keys(key, epoch):
    """Round keys (uint32 [..., 4]) of the given epoch(s)."""
    one = lambda e: jax.random.bits(jax.random.fold_in(key, e), (_ROUNDS,), jnp.uint32)
    return jax.vmap(one)(epoch.reshape(-1)).reshape(*epoch.shape, _ROUNDS)


def batch_indices(key, step, batch_size: int, n: int, steps: int | None = None):
    """Dataset indices (int32 [batch_size]) of the batch drawn at ``step``; with ``steps``,
    those of the batches of steps ``step .. step + steps - 1`` (int32 [steps, batch_size]),
    computed together: one walk of the permutation instead of one per step."""
    if batch_size > n:
        raise ValueError(f"A batch of {batch_size} is larger than the dataset ({n} examples).")
    step = jnp.asarray(step, jnp.int32)
    # step * batch_size overflows int32 after 2**31 images; split it so it does not. The
    # positions of consecutive steps are consecutive, so several steps are one longer range.
    q, r = step // n, step % n
    pos = r * batch_size + jnp.arange((steps or 1) * batch_size, dtype=jnp.int32)
    epoch = q * batch_size + pos // n
    idx = permute(pos % n, epoch_keys(key, epoch), n).astype(jnp.int32)
    return idx if steps is None else idx.reshape(steps, batch_size)
