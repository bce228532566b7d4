"""Compiled programs, kept per target so that a second call with the same target, kernel
and shapes runs without compiling, and compile time can be told apart from run time; and
JAX's persistent compilation cache, so that a second process compiles nothing either."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import time
import weakref
from collections.abc import Callable, Hashable

import jax
import numpy as np
from jax.api_util import shaped_abstractify

_programs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_compile_count = 0


_persistent_cache_checked = False

CACHE_SWITCH = "INFERAX_COMPILATION_CACHE"
"""The environment variable that turns the persistent cache off when set to ``0``."""


def default_cache_dir() -> pathlib.Path:
    """The per-user folder of the persistent cache: ``$XDG_CACHE_HOME/inferax/jax``, or
    ``~/.cache/inferax/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(base).expanduser() / "inferax" / "jax"


def _switched_off() -> bool:
    # INFERAX_COMPILE_CACHE is the command line's older name for the same switch.
    return any(
        os.environ.get(name, "1") == "0" for name in (CACHE_SWITCH, "INFERAX_COMPILE_CACHE")
    )


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path | None:
    """Turns on JAX's persistent compilation cache, so that another process with the same
    model and shapes loads its programs from disk instead of compiling them.

    ``inferax.sample``, ``inferax.variational.fit`` and the command line call this
    themselves before their first compile; call it to pick another folder. It changes
    nothing where JAX's cache is already configured (``jax_compilation_cache_dir`` or the
    ``JAX_COMPILATION_CACHE_DIR`` environment variable) or turned off
    (``jax_enable_compilation_cache=False``), nor when the environment variable
    ``INFERAX_COMPILATION_CACHE`` is ``0``. Programs of every compile time are cached,
    since the small ones add up on a first call. In a run over several processes
    (``jax.distributed``) the default folder is not used: such a run compiles its programs.

    Args:
      path: the folder; by default ``default_cache_dir()``.

    Returns:
      The folder the cache uses now, or ``None`` where it is off.

    Examples:
      >>> import inferax
      >>> folder = inferax.enable_compilation_cache()
    """
    global _persistent_cache_checked
    _persistent_cache_checked = True
    configured = jax.config.jax_compilation_cache_dir
    if configured:
        return pathlib.Path(configured) if jax.config.jax_enable_compilation_cache else None
    if _switched_off() or not jax.config.jax_enable_compilation_cache:
        return None
    if path is None and jax.distributed.is_initialized():
        # A program of a run over several processes, loaded from the cache instead of
        # compiled, waits forever in its first collective (JAX 0.12 on CPU with gloo: a
        # second identical two-process run hung where the first, which compiled, did not).
        return None
    folder = pathlib.Path(path) if path is not None else default_cache_dir()
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


def disable_compilation_cache() -> None:
    """Turns JAX's persistent compilation cache off for this process (what
    ``INFERAX_COMPILATION_CACHE=0`` does from the start), whoever turned it on.

    Examples:
      >>> import inferax
      >>> inferax.disable_compilation_cache()
      >>> folder = inferax.enable_compilation_cache()  # on again, for the examples below
    """
    global _persistent_cache_checked
    _persistent_cache_checked = True
    jax.config.update("jax_compilation_cache_dir", None)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()


def compile_count() -> int:
    """How many programs have been compiled in this process (for tests)."""
    return _compile_count


def programs_compiled(owner) -> list[str]:
    """The names of the programs compiled (or compiling) for ``owner``, one per program, in
    the order they were first asked for (for tests)."""
    return [key[0].__name__ for key in _programs.get(owner, {})]


def _cache_key(jitted: Callable, static: dict[str, Hashable], args) -> tuple:
    # Arrays and ShapeDtypeStructs of one shape and dtype give the same key, so a program
    # compiled ahead from shapes alone serves the call with arrays. A layout over a mesh
    # (chains or data over devices) is part of the key; the default device's is not.
    leaves, treedef = jax.tree.flatten(args)
    return (jitted, tuple(sorted(static.items())), treedef, tuple(map(_signature, leaves)))


def _signature(leaf) -> tuple:
    # What an abstract value holds, read off the leaf: ``shaped_abstractify`` took several
    # microseconds a leaf, which every chunk's call paid for each of its arguments.
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct | np.ndarray | np.generic):
        return (leaf.shape, leaf.dtype, getattr(leaf, "weak_type", False), _laid_out(leaf))
    aval = shaped_abstractify(leaf)
    return (aval.shape, aval.dtype, aval.weak_type, None)


def _laid_out(leaf):
    sharding = getattr(leaf, "sharding", None)
    return sharding if isinstance(sharding, jax.sharding.NamedSharding) else None


RUN_ONCE_OPTIONS = {"xla_backend_optimization_level": 0}
"""XLA's options for a program that runs once a call (a run's start, the end of its
warmup): the backend's optimisations would cost more compile time than they save."""

_run_once: set[Callable] = set()


def runs_once(jitted: Callable) -> Callable:
    """Marks ``jitted`` as a program that runs once a call, so ``compiled`` and
    ``compile_ahead`` compile it with ``RUN_ONCE_OPTIONS``; returns it (a decorator)."""
    _run_once.add(jitted)
    return jitted


def _options(jitted: Callable) -> dict | None:
    return RUN_ONCE_OPTIONS if jitted in _run_once else None


def _compile(jitted: Callable, static: dict[str, Hashable], args):
    global _compile_count
    program = jitted.lower(*args, **static).compile(_options(jitted))
    _compile_count += 1
    return program


def compile_ahead(owner, jitted: Callable, static: dict[str, Hashable], *args) -> bool:
    """Starts compiling ``jitted`` for these static settings and argument shapes in a
    background thread, unless it is compiled or compiling already; ``compiled`` then waits
    for it. XLA compiles without holding Python's lock, so programs that a run will need
    compile side by side, and beside the tracing of the next one.

    Args:
      owner: as in ``compiled``.
      jitted: as in ``compiled``.
      static: as in ``compiled``.
      *args: arrays or ``jax.ShapeDtypeStruct``s of the arguments the program will get.

    Returns:
      Whether a compile was started (``False`` where the program is known already).
    """
    ensure_compilation_cache()
    programs = _programs.setdefault(owner, {})
    key = _cache_key(jitted, static, args)
    if key in programs:
        return False
    lowered = jitted.lower(*args, **static)
    options = _options(jitted)

    def compile_lowered():
        global _compile_count
        program = lowered.compile(options)
        _compile_count += 1
        return program

    programs[key] = _executor().submit(compile_lowered)
    return True


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
      ``(program, seconds spent compiling)``: the seconds this call waited, zero on a cache
      hit. Call the program with ``*args`` only.
    """
    ensure_compilation_cache()
    programs = _programs.setdefault(owner, {})
    key = _cache_key(jitted, static, args)
    start = time.perf_counter()
    program = programs.get(key)
    if program is None:
        program = programs[key] = _compile(jitted, static, args)
    elif isinstance(program, concurrent.futures.Future):
        program = programs[key] = program.result()
    else:
        return program, 0.0
    return program, time.perf_counter() - start


def ensure_compilation_cache() -> None:
    """Turns the persistent cache on with its defaults (``enable_compilation_cache()``),
    unless this process has already turned it on or off: what a first compile does. Called
    before work that compiles outside ``compiled``, such as building a ``Target`` from a
    NumPyro model."""
    if not _persistent_cache_checked:
        enable_compilation_cache()


_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        workers = max(1, min(4, os.cpu_count() or 1))
        _pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="inferax-compile"
        )
    return _pool


__all__ = [
    "CACHE_SWITCH",
    "RUN_ONCE_OPTIONS",
    "compile_ahead",
    "compile_count",
    "compiled",
    "default_cache_dir",
    "disable_compilation_cache",
    "enable_compilation_cache",
    "ensure_compilation_cache",
    "programs_compiled",
    "runs_once",
]
