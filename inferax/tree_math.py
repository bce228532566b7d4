"""Reductions over every leaf of a pytree: whether all its values are finite, and its norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inferax.typing import ArrayTree


def all_finite(tree: ArrayTree) -> jax.Array:
    """True when every element of every leaf of ``tree`` is finite (and for no leaves)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def tree_norm(tree: ArrayTree) -> jax.Array:
    """The Euclidean norm of all leaves of ``tree`` taken together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))


__all__ = ["all_finite", "tree_norm"]
