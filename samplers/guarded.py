"""The end of every step that can fail: check the new point is finite, undo the step if it
is not, and report it as diverging."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from inferax.tree_math import all_finite
from inferax.typing import ArrayTree


def guarded[State](
    new_state: State, old_state: State, checked: ArrayTree, valid: jax.Array | bool = True
) -> tuple[State, jax.Array]:
    """``new_state`` when ``valid`` holds and every value in ``checked`` is finite, otherwise
    ``old_state``; and whether the step diverged (was undone).

    Args:
      new_state: the state the step moved to.
      old_state: the state it started from.
      checked: the values that must be finite, typically the new log density and gradient.
      valid: a further condition, such as the new point lying in the mirror map's domain.

    Returns:
      ``(state, diverging)``.
    """
    keep = jnp.asarray(valid) & all_finite(checked)
    state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, old_state)
    return state, ~keep


__all__ = ["guarded"]
