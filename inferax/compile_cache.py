"""Compiled programs, kept per target so that a second call with the same target, kernel
and shapes runs without compiling, and compile time can be told apart from run time."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable

import jax

_programs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_compile_count = 0


def compile_count() -> int:
    """How many programs have been compiled in this process (for tests)."""
    return _compile_count


def compiled(
    owner, jitted: Callable, static: dict[str, Hashable], *args
) -> tuple[Callable, float]:
    """The compiled ``jitted`` for these static settings and argument shapes.

    Args:
      owner: the object the program belongs to (a ``Target``); its programs go when it does.
      jitted: a ``jax.jit`` function whose static arguments are the keys of ``static``.
      static: the static keyword arguments.
      *args: the dynamic arguments, whose shapes and dtypes key the cache.

    Returns:
      ``(program, seconds spent compiling)``, zero seconds on a cache hit. Call the program
      with ``*args`` only.
    """
    global _compile_count
    # A program is compiled for its inputs' shardings too (chains or data over devices).
    shapes = jax.tree.map(lambda leaf: (jax.typeof(leaf), getattr(leaf, "sharding", None)), args)
    leaves, treedef = jax.tree.flatten(shapes)
    key = (jitted, tuple(sorted(static.items())), treedef, tuple(leaves))
    programs = _programs.setdefault(owner, {})
    if key in programs:
        return programs[key], 0.0
    start = time.perf_counter()
    program = jitted.lower(*args, **static).compile()
    _compile_count += 1
    programs[key] = program
    return program, time.perf_counter() - start
