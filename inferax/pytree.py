"""The one pytree style of inferax: frozen dataclasses registered with JAX.

Fields made with ``static_field`` are the pytree's static structure (hashable settings
that key compiled programs); every other field is a leaf (arrays, or pytrees of arrays).
Unflattening does not call ``__init__``: JAX unflattens with tracers and placeholders,
where the checks a class makes at construction neither hold nor matter.
"""

from __future__ import annotations

import dataclasses

import jax


def static_field(*, by_identity: bool = False, **kwargs):
    """A dataclass field held in the pytree's static structure.

    Args:
      by_identity: compare the value by identity in the static structure instead of by
        equality, for metadata that compiled code never reads and that need not be
        hashable (observed data kept for output, the model a target came from).
      **kwargs: passed to ``dataclasses.field``.
    """
    return dataclasses.field(metadata={"static": True, "by_identity": by_identity}, **kwargs)


class _Identity:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self):
        return id(self.value)


def pytree_dataclass(cls=None, *, eq: bool = True):
    """Makes ``cls`` a frozen dataclass registered as a pytree.

    Args:
      cls: the class.
      eq: compare instances field by field (``True``) or by identity (``False``, for
        values that hold functions and data, such as ``inferax.Target``).

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
    if cls is None:
        return lambda cls: pytree_dataclass(cls, eq=eq)
    cls = dataclasses.dataclass(frozen=True, eq=eq)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))
    by_identity = tuple(bool(f.metadata.get("by_identity")) for f in fields if f.name in meta)
    keys = tuple(jax.tree_util.GetAttrKey(name) for name in data)

    def flatten_with_keys(obj):
        children = [(key, getattr(obj, name)) for key, name in zip(keys, data, strict=True)]
        static = tuple(
            _Identity(getattr(obj, name)) if identity else getattr(obj, name)
            for name, identity in zip(meta, by_identity, strict=True)
        )
        return children, static

    def flatten(obj):
        children, static = flatten_with_keys(obj)
        return [child for _, child in children], static

    def unflatten(static, children):
        obj = object.__new__(cls)
        for name, value in zip(data, children, strict=True):
            object.__setattr__(obj, name, value)
        for name, value, identity in zip(meta, static, by_identity, strict=True):
            object.__setattr__(obj, name, value.value if identity else value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


__all__ = ["pytree_dataclass", "static_field"]
