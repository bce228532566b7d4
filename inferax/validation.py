"""Checks of user input that every entry point shares: counts, keys and log densities,
made before anything compiles, with errors that name the argument."""

from __future__ import annotations

import numbers
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from inferax.target import Target
from inferax.typing import PRNGKey


def check_count(name: str, value, *, minimum: int) -> None:
    """Raises unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_key(rng_key) -> PRNGKey:
    """The key as a typed JAX key; a legacy ``uint32[2]`` key is wrapped, anything else (an
    int seed included) is refused rather than silently turned into a key."""
    if isinstance(rng_key, jax.Array) and jnp.issubdtype(rng_key.dtype, jax.dtypes.prng_key):
        if rng_key.shape != ():
            raise ValueError(f"rng_key must be a single key, got shape {rng_key.shape}")
        return rng_key
    if isinstance(rng_key, jax.Array | np.ndarray) and rng_key.shape == (2,):
        if rng_key.dtype == np.uint32:
            return jax.random.wrap_key_data(jnp.asarray(rng_key))
    raise TypeError(
        "rng_key must be a JAX random key, such as jax.random.key(0), "
        f"got {type(rng_key).__name__}"
    )


_traced_shapes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _traced(target: Target, name: str):
    """The shape of ``target.<name>(target.init)``, traced once per target: a target is
    immutable, and a repeated call on it should not pay for tracing again."""
    memo = _traced_shapes.setdefault(target, {})
    if name not in memo:
        memo[name] = jax.eval_shape(getattr(target, name), target.init)
    return memo[name]


def site_shapes(target: Target):
    """The shapes and dtypes of ``target.constrain(target.init)``, traced once per target."""
    return _traced(target, "constrain")


def check_logdensity_shape(target: Target) -> None:
    """The log density must be a float scalar; traced, not compiled."""
    out = _traced(target, "logdensity")
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise TypeError(f"the log density must return a scalar, got shape {shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"the log density must return a float, got dtype {out.dtype}")


RESERVED_SITE_NAMES = ("chain", "draw")
"""ArviZ's sample dims: a site of that name would be lost in the DataTree."""

SUPPORTED_DTYPES = (jnp.float32, jnp.float64)
"""Position dtypes the samplers compute in; half precision loses the gradient's digits."""


def check_target_for_output(target: Target) -> None:
    """The position is float32 or float64, and ``constrain`` returns a dict of arrays whose
    names can be DataTree variables; traced, not compiled.

    Raises:
      TypeError: a half-precision position, or ``constrain`` returning something else.
      ValueError: a site named ``chain`` or ``draw``, or a name with ``/``.
    """
    for leaf in jax.tree.leaves(target.init):
        dtype = jnp.result_type(leaf)
        if dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"init: positions must be float32 or float64, got {dtype}; cast the example "
                "position, for example jnp.zeros(2, jnp.float32)"
            )
    sites = site_shapes(target)
    if not isinstance(sites, dict) or not all(isinstance(name, str) for name in sites):
        raise TypeError(
            "constrain must return a dict of named arrays, such as {'x': x}, "
            f"got {type(sites).__name__}"
        )
    for name in sites:
        if name in RESERVED_SITE_NAMES or "/" in name:
            raise ValueError(
                f"site name {name!r}: 'chain' and 'draw' are the sample dims of the output, "
                "and '/' separates groups in it; rename the site"
            )


__all__ = [
    "check_count",
    "check_key",
    "check_logdensity_shape",
    "check_target_for_output",
    "site_shapes",
]
