"""The one pytree style of inferax: frozen dataclasses registered with JAX.

Fields made with ``static_field`` are the pytree's static structure (hashable settings
that key compiled programs); every other field is a leaf (arrays, or pytrees of arrays).
"""

from __future__ import annotations

import dataclasses

import jax


def static_field(**kwargs):
    """A dataclass field held in the pytree's static structure (hashable configuration)."""
    return dataclasses.field(metadata={"static": True}, **kwargs)


def pytree_dataclass(cls):
    """Makes ``cls`` a frozen dataclass registered as a pytree.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax.pytree import pytree_dataclass, static_field
      >>> @pytree_dataclass
      ... class Shift:
      ...     offset: jax.Array
      ...     name: str = static_field(default="shift")
      >>> jax.tree.leaves(Shift(jnp.ones(2)))
      [Array([1., 1.], dtype=float32)]
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    meta = [f.name for f in fields if f.metadata.get("static")]
    data = [f.name for f in fields if not f.metadata.get("static")]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


__all__ = ["pytree_dataclass", "static_field"]
