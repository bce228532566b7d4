"""Minibatches drawn from a step's key: distinct data points, in ``O(batch_size)`` work.

Every sampler and trainer that subsamples data (stochastic-gradient and federated kernels,
sparse-GP training) draws its batch here, so all of them subsample the same way.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from inferax.typing import ArrayTree, PRNGKey

FEISTEL_ROUNDS = 6
"""Rounds of the keyed permutation that draws minibatch indices."""


def _mix(x: jax.Array, key: jax.Array) -> jax.Array:
    """A 32-bit integer hash of ``x`` keyed by ``key`` (the MurmurHash3 finaliser)."""
    x = (x ^ key) * jnp.uint32(0x9E3779B1)
    x = (x ^ (x >> 15)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def minibatch_indices(rng_key: PRNGKey, num_data: int, batch_size: int) -> jax.Array:
    """``batch_size`` distinct indices in ``[0, num_data)``, drawn without replacement.

    The indices are the images of ``0, ..., batch_size - 1`` under a random bijection of
    ``[0, num_data)`` keyed by ``rng_key``: a six-round Feistel network on the
    ``ceil(log2 num_data)``-bit integers whose halves are updated in turn with a keyed
    integer hash, restricted to ``[0, num_data)`` by cycle walking (an image outside is
    permuted again until it falls inside). Images of distinct inputs under a bijection are
    distinct, and for a random key each data point is in the batch with probability
    ``batch_size / num_data``. The cost is ``O(batch_size)`` integer operations and one
    draw of six random words, against ``O(num_data log num_data)`` for a permutation and
    ``O(batch_size log batch_size)`` for a sort-based rejection of repeats.

    Args:
      rng_key: the key.
      num_data: the number of data points.
      batch_size: how many to draw, at most ``num_data``.

    Returns:
      An int32 array of shape ``(batch_size,)``, in no particular order.

    References:
      Luby, Rackoff, "How to Construct Pseudorandom Permutations from Pseudorandom
      Functions", SIAM Journal on Computing 1988.
      Black, Rogaway, "Ciphers with Arbitrary Finite Domains", CT-RSA 2002.
    """
    bits = max(2, int(np.ceil(np.log2(max(num_data, 2)))))
    left_bits = bits // 2
    right_bits = bits - left_bits
    left_mask = jnp.uint32((1 << left_bits) - 1)
    right_mask = jnp.uint32((1 << right_bits) - 1)
    round_keys = jax.random.bits(rng_key, (FEISTEL_ROUNDS,), jnp.uint32)

    def permute(x):
        left, right = x >> right_bits, x & right_mask
        for r in range(FEISTEL_ROUNDS):
            if r % 2 == 0:
                left = left ^ (_mix(right, round_keys[r]) & left_mask)
            else:
                right = right ^ (_mix(left, round_keys[r]) & right_mask)
        return (left << right_bits) | right

    limit = jnp.uint32(num_data)
    images = permute(jnp.arange(batch_size, dtype=jnp.uint32))
    images = jax.lax.while_loop(
        lambda y: jnp.any(y >= limit),
        lambda y: jnp.where(y >= limit, permute(y), y),
        images,
    )
    return images.astype(jnp.int32)


def draw_minibatch(rng_key: PRNGKey, data: ArrayTree, batch_size: int) -> ArrayTree:
    """A minibatch of ``batch_size`` distinct data points: every leaf of ``data`` indexed by
    the same ``minibatch_indices`` along its leading axis."""
    num_data = jax.tree_util.tree_leaves(data)[0].shape[0]
    indices = minibatch_indices(rng_key, num_data, batch_size)
    return jax.tree.map(
        lambda leaf: jnp.asarray(leaf).at[indices].get(mode="promise_in_bounds"), data
    )


def first_points(data: ArrayTree, batch_size: int) -> ArrayTree:
    """The first ``batch_size`` data points: the batch a kernel's ``init`` evaluates on."""
    return jax.tree.map(lambda leaf: leaf[:batch_size], data)


__all__ = ["draw_minibatch", "first_points", "minibatch_indices"]
