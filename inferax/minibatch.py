"""Minibatches drawn from a step's key: distinct data points, in ``O(batch_size)`` work.

Every sampler and trainer that subsamples data (stochastic-gradient and federated kernels,
sparse-GP training) draws its batch here, so all of them subsample the same way.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from inferax.typing import ArrayTree, PRNGKey

FEISTEL_ROUNDS = 6
"""Rounds of the keyed permutation that draws minibatch indices."""

MIN_EXACT_HALF = 16
"""The smallest half ``feistel_sizes`` takes from an exact factorisation."""


def _mix(x: jax.Array, key: jax.Array) -> jax.Array:
    """A 32-bit integer hash of ``x`` keyed by ``key`` (the MurmurHash3 finaliser)."""
    x = (x ^ key) * jnp.uint32(0x9E3779B1)
    x = (x ^ (x >> 15)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def feistel_sizes(num_data: int) -> tuple[int, int]:
    """The halves ``(L, R)`` of ``minibatch_indices``' Feistel network for ``num_data``
    points: ``L R = num_data`` where a factorisation has ``16 <= R <= L <= 2 R`` (its
    rounds then need no cycle walking, whose loop is a large part of a cheap step), else
    ``L = ceil(sqrt(num_data))``, ``R = ceil(num_data / L)``. Halves of a few values, or
    far apart in size, give a keyed permutation too few distinct round functions to draw
    batches uniformly."""
    right = math.isqrt(num_data)
    while right >= MIN_EXACT_HALF and 2 * right * right >= num_data:
        if num_data % right == 0:
            return num_data // right, right
        right -= 1
    left = max(1, math.isqrt(num_data - 1) + 1)
    return left, -(-num_data // left)


def minibatch_indices(rng_key: PRNGKey, num_data: int, batch_size: int) -> jax.Array:
    """``batch_size`` distinct indices in ``[0, num_data)``, drawn without replacement.

    The indices are the images of ``0, ..., batch_size - 1`` under a random bijection of
    ``[0, num_data)`` keyed by ``rng_key``: a six-round Feistel network on the pairs
    ``Z_L x Z_R`` (``feistel_sizes``) whose halves are moved in turn by a keyed integer hash
    of the other, added modulo the half's size. Where ``L R = num_data`` that is a bijection
    of ``[0, num_data)`` itself. Otherwise (``L R - num_data < L``) it is restricted to
    ``[0, num_data)`` by cycle walking: an image outside is permuted again until it falls
    inside, which happens with probability below ``1 / sqrt(num_data)`` a point. Images
    of distinct inputs under a bijection are distinct, and for a random key each data point
    is in the batch with probability ``batch_size / num_data``. The cost is
    ``O(batch_size)`` integer operations and one draw of six random words, against
    ``O(num_data log num_data)`` for a permutation and ``O(batch_size log batch_size)`` for a
    sort-based rejection of repeats.

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
    num_data = max(int(num_data), 1)
    left_size, right_size = feistel_sizes(num_data)
    sizes = (jnp.uint32(left_size), jnp.uint32(right_size))
    round_keys = jax.random.bits(rng_key, (FEISTEL_ROUNDS,), jnp.uint32)

    def permute(x):
        halves = [x // sizes[1], x % sizes[1]]
        for r in range(FEISTEL_ROUNDS):
            moved, other = r % 2, 1 - r % 2
            value = halves[moved] + _mix(halves[other], round_keys[r]) % sizes[moved]
            halves[moved] = jnp.where(value >= sizes[moved], value - sizes[moved], value)
        return halves[0] * sizes[1] + halves[1]

    images = permute(jnp.arange(batch_size, dtype=jnp.uint32))
    if left_size * right_size == num_data:
        return images.astype(jnp.int32)
    limit = jnp.uint32(num_data)
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


__all__ = ["draw_minibatch", "feistel_sizes", "first_points", "minibatch_indices"]
