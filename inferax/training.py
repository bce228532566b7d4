"""The one training loop: every optimiser-driven fit in inferax runs here.

The variational engine, the sparse GPs, DKLGP and the fractional SDE each write one
training step; this module runs it for ``num_steps`` steps in compiled chunks. Step ``t``
uses the key ``fold_in(rng_key, t)``, so a fit does not depend on the chunk size. Between
chunks the host advances the progress bar and calls ``on_chunk``, the hook for checks and
checkpoints; with neither, the chunks are dispatched back to back and their metrics read
at the end. Chunk lengths follow ``inferax.chunking``, as ``inferax.sample``'s do. Compiled
chunks are cached, so a second fit with the same step and shapes does not compile again.

A step may come with a ``fallback``: the same update, guarded so that no non-finite value
reaches the state. The loop runs the plain step, and runs a chunk again with the fallback,
from where that chunk started, when the chunk ends with a non-finite loss or state; the
fallback then runs the rest of the fit. A guard is a reduction over every gradient array
each step, and XLA cannot fuse the optimiser's update into its own operations once that
update waits for the reductions.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.chunking import ChunkSizer, buffer_length
from inferax.compile_cache import compiled
from inferax.progress import ProgressBar, progress_enabled
from inferax.tree_math import all_finite
from inferax.typing import ArrayTree, PRNGKey
from inferax.validation import check_count

TrainingStep = Callable[[Any, PRNGKey, ArrayTree], tuple[Any, dict[str, jax.Array]]]
"""``step(state, rng_key, data) -> (state, metrics)``: one optimiser step. ``metrics`` is a
dict of scalars recorded at every step; ``"loss"`` is the one the loop reports."""


class TrainingResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      state: the state after the last step.
      trace: every metric the step reported, one value per step (numpy arrays).
      timing: seconds spent compiling and optimising.
    """

    state: Any
    trace: dict[str, np.ndarray]
    timing: dict[str, float]


def train(
    step: TrainingStep,
    state: Any,
    rng_key: PRNGKey,
    data: ArrayTree = (),
    *,
    num_steps: int,
    chunk_size: int | None = None,
    progress: bool | None = None,
    description: str = "fit",
    owner: Hashable | None = None,
    on_chunk: Callable[[int, Any, dict[str, np.ndarray]], None] | None = None,
    fallback: TrainingStep | None = None,
) -> TrainingResult:
    """Runs ``state, metrics = step(state, fold_in(rng_key, t), data)`` for ``t < num_steps``.

    Args:
      step: the training step. It is a static argument of the compiled chunk, so it must
        be hashable and compare equal exactly when it computes the same thing: a frozen
        dataclass of its settings, or a module-level function.
      state: the initial state, a pytree (for example the parameters and the optimiser state).
      rng_key: the key; step ``t`` uses ``fold_in(rng_key, t)``.
      data: a pytree of arrays the step reads; passed as an argument, never baked into the
        program, so new data of the same shapes reuses it.
      num_steps: how many steps.
      chunk_size: steps per compiled chunk; the host runs between chunks. ``None``: the
        automatic length of ``inferax.chunking``: one chunk of up to
        ``MAX_BUFFER_LENGTH`` steps when nothing runs between chunks, else chunks of
        about ``TARGET_CHUNK_SECONDS`` at the step time measured so far.
      progress: show a progress bar; ``None``: on an interactive terminal, not under CI.
      description: the progress bar's label.
      owner: the object the compiled chunks are kept with (a ``Target``); they go when it
        does. Defaults to ``step``.
      on_chunk: called as ``on_chunk(first_step, state, metrics)`` after each chunk with
        that chunk's metrics; it may raise to stop the fit (a non-finite loss) or save the
        state (a checkpoint).
      fallback: a step that computes what ``step`` does wherever ``step``'s loss, state
        and gradient are finite, and keeps non-finite values out of the state where they
        are not. A chunk of ``step`` that ends with a non-finite state, or has a non-finite
        ``"loss"``, is run again with it from where the chunk started, and it runs every
        chunk after (a fit that went non-finite once mostly does again, and each such
        chunk would run twice). ``None``: ``step`` alone, as it is.

    Returns:
      A ``TrainingResult``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax.training import train
      >>> def step(x, rng_key, data):
      ...     return x - 0.1 * (x - data), {"loss": jnp.sum((x - data) ** 2)}
      >>> result = train(step, jnp.zeros(2), jax.random.key(0), jnp.ones(2), num_steps=100,
      ...                progress=False)
      >>> bool(jnp.allclose(result.state, 1.0, atol=1e-3)), result.trace["loss"].shape
      (True, (100,))
    """
    check_count("num_steps", num_steps, minimum=1)
    if chunk_size is not None:
        check_count("chunk_size", chunk_size, minimum=1)
    length = buffer_length(chunk_size, num_steps)
    sizer = ChunkSizer(chunk_size)
    timing = {"compile": 0.0, "optimization": 0.0}
    chunks: list[tuple[int, dict[str, Any]]] = []
    show = progress_enabled(progress)
    # Without a bar to advance or a hook to call, nothing on the host needs a chunk's
    # metrics before the next chunk starts: every chunk is dispatched at once and read
    # back at the end. Waiting for each chunk cost a round trip to the runtime's thread
    # (hundreds of microseconds on a busy machine) per chunk.
    wait_each = show or on_chunk is not None
    bar = ProgressBar(num_steps, show, description)
    bar.phase("optimization")
    # Optimisation time is the loop's wall time less compiling and the hook: with chunks
    # in flight, the host's work between dispatches overlaps the steps themselves.
    outside = 0.0
    # The caller's last operations on the state (a family's init, the optimiser's) may still
    # be running: they are not optimisation.
    state = jax.block_until_ready(state)
    begin = time.perf_counter()
    layout, packed = pack(state)

    def run_chunk(chunk_step, packed, first: int, count: int, check: bool):
        # numpy scalars: a jnp.int32(...) is an op dispatched on its own, about 0.4 ms each.
        args = (packed, rng_key, data, np.int32(first), np.int32(count))
        static = {"step": chunk_step, "chunk_size": length, "layout": layout, "check": check}
        program, seconds = compiled(step if owner is None else owner, _chunk, static, *args)
        timing["compile"] += seconds
        return program(*args)

    current, checked = step, fallback is not None

    def run_again(chunk: _Unchecked):
        nonlocal current, checked
        current, checked = fallback, False
        packed, metrics, _ = run_chunk(fallback, chunk.start, chunk.first, chunk.count, False)
        return packed, metrics

    # The last chunk dispatched back to back and not yet known finite. Checking it waits
    # for it while the next chunk is already queued behind it.
    unchecked: _Unchecked | None = None
    try:
        first = 0
        while first < num_steps:
            if wait_each or chunk_size is not None:
                count = sizer.next_count(num_steps - first, length)
            else:
                count = min(num_steps - first, length)
            chunk_start = packed
            start = time.perf_counter()
            packed, metrics, finite = run_chunk(current, packed, first, count, checked)
            if wait_each:
                if checked and not bool(finite):
                    packed, metrics = run_again(_Unchecked(first, count, chunk_start, finite))
                metrics = _host(metrics, count)
                sizer.record(count, time.perf_counter() - start)
            elif checked:
                if unchecked is not None and not bool(unchecked.finite):
                    # This chunk started where the last went non-finite: run the last again.
                    packed, metrics = run_again(unchecked)
                    chunks[-1] = (unchecked.count, metrics)
                    first, unchecked = unchecked.first + unchecked.count, None
                    continue
                unchecked = _Unchecked(first, count, chunk_start, finite)
            if on_chunk is not None:
                start = time.perf_counter()
                on_chunk(first, unpack_on_host(layout, packed), metrics)
                outside += time.perf_counter() - start
            chunks.append((count, metrics))
            first += count
            if wait_each:
                bar.advance(count)
        if unchecked is not None and not bool(unchecked.finite):
            packed, metrics = run_again(unchecked)
            chunks[-1] = (unchecked.count, metrics)
        chunks = [(count, _host(metrics, count)) for count, metrics in chunks]
        state = unpack_on_host(layout, packed)
        timing["optimization"] = time.perf_counter() - begin - timing["compile"] - outside
        if not wait_each:
            bar.advance(num_steps)
    finally:
        bar.close()
    names = chunks[0][1]
    trace = {name: np.concatenate([metrics[name] for _, metrics in chunks]) for name in names}
    return TrainingResult(state, trace, timing)


class _Unchecked(NamedTuple):
    """A chunk of the plain step: its first step, its length, the state it started from
    and whether it ended finite (a device scalar, read when needed)."""

    first: int
    count: int
    start: Any
    finite: jax.Array


def _host(metrics: dict[str, Any], count: int) -> dict[str, np.ndarray]:
    """A chunk's metrics on the host, its first ``count`` steps (a no-op when they are)."""
    return {name: np.asarray(value)[:count] for name, value in metrics.items()}


class Layout(NamedTuple):
    r"""Where each leaf of a state lives once ``pack``\ ed: ``(group, offset, shape)`` in
    the flat buffer of its dtype, or ``(None, index, None)`` among the leaves kept as they
    are. Hashable, so the compiled chunk is keyed by it."""

    treedef: Any
    dtypes: tuple[np.dtype, ...]
    entries: tuple[tuple[int | None, int, tuple[int, ...] | None], ...]


def _packable(leaf) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return (
        dtype is not None
        and not jax.dtypes.issubdtype(dtype, jax.dtypes.extended)
        and not isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding)
    )


PACK_ABOVE_LEAVES = 16
"""``pack`` joins a state of more leaves than this; a smaller one crosses calls as it is."""


def pack(state: Any) -> tuple[Layout | None, Any]:
    """The state as one flat buffer per dtype plus the leaves that cannot join one (keys,
    arrays laid out over a mesh), and its ``Layout``; ``(None, state)`` when a leaf is
    laid out over a mesh, or when there are at most ``PACK_ABOVE_LEAVES`` leaves.

    A compiled call costs a few microseconds per argument and per result on top of its
    work: a flow's state (its weights and Adam's two moments of each) can be some eighty
    arrays, which made every chunk's call cost more than a tenth of its 500 steps on the
    small models. Joining them, and cutting them apart at the end, costs a few hundred
    microseconds a fit, more than a few arrays' calls.
    """
    leaves, treedef = jax.tree.flatten(state)
    leaves = [
        jnp.asarray(leaf) if isinstance(leaf, int | float | bool) else leaf for leaf in leaves
    ]
    if len(leaves) <= PACK_ABOVE_LEAVES:
        return None, jax.tree.unflatten(treedef, leaves)
    if any(
        isinstance(getattr(leaf, "sharding", None), jax.sharding.NamedSharding) for leaf in leaves
    ):
        return None, state
    dtypes: list[np.dtype] = []
    parts: list[list[np.ndarray]] = []
    sizes: list[int] = []
    loose: list[Any] = []
    entries = []
    for leaf in leaves:
        if not _packable(leaf):
            entries.append((None, len(loose), None))
            loose.append(leaf)
            continue
        dtype = np.dtype(leaf.dtype)
        if dtype not in dtypes:
            dtypes.append(dtype)
            parts.append([])
            sizes.append(0)
        group = dtypes.index(dtype)
        entries.append((group, sizes[group], tuple(np.shape(leaf))))
        parts[group].append(np.asarray(leaf).ravel())
        sizes[group] += int(np.size(leaf))
    buffers = jax.device_put(
        tuple(
            np.concatenate(group) if group else np.zeros(0, dtype)
            for group, dtype in zip(parts, dtypes, strict=True)
        )
    )
    return Layout(treedef, tuple(dtypes), tuple(entries)), (buffers, tuple(loose))


def _unpack(layout: Layout | None, packed, take: Callable) -> Any:
    if layout is None:
        return packed
    buffers, loose = packed
    leaves = []
    for group, where, shape in layout.entries:
        if group is None:
            leaves.append(loose[where])
        else:
            leaves.append(take(buffers[group], where, shape))
    return jax.tree.unflatten(layout.treedef, leaves)


def unpack_on_host(layout: Layout | None, packed) -> Any:
    """The state ``pack`` made ``packed`` from, as arrays (one compiled call per layout:
    moving each leaf to the device on its own cost far more)."""
    if layout is None:
        return packed
    return _unpack_program(packed, layout)


@functools.partial(jax.jit, static_argnames=("layout",))
def _unpack_program(packed, layout):
    return _unpack(layout, packed, _cut)


def _cut(buffer, start: int, shape: tuple[int, ...]):
    return buffer[start : start + math.prod(shape)].reshape(shape)


def _pack_traced(layout: Layout | None, state) -> Any:
    if layout is None:
        return state
    leaves = jax.tree.leaves(state)
    buffers = []
    for group, dtype in enumerate(layout.dtypes):
        parts = [
            jnp.ravel(leaf)
            for leaf, entry in zip(leaves, layout.entries, strict=True)
            if entry[0] == group
        ]
        buffers.append(jnp.concatenate(parts) if parts else jnp.zeros(0, dtype))
    loose = tuple(
        leaf for leaf, entry in zip(leaves, layout.entries, strict=True) if entry[0] is None
    )
    return tuple(buffers), loose


@functools.partial(jax.jit, static_argnames=("step", "chunk_size", "layout", "check"))
def _chunk(packed, rng_key, data, first, count, step, chunk_size, layout, check):
    state = _unpack(layout, packed, _cut)
    _, shapes = jax.eval_shape(step, state, rng_key, data)
    metrics = {name: jnp.zeros((chunk_size,), shape.dtype) for name, shape in shapes.items()}

    def one_step(offset, carry):
        state, metrics = carry
        state, values = step(state, jax.random.fold_in(rng_key, first + offset), data)
        metrics = {name: metrics[name].at[offset].set(values[name]) for name in metrics}
        return state, metrics

    # A traced trip count: XLA unrolls a scan of fixed length on CPU, and compile time would
    # then grow with chunk_size.
    state, metrics = jax.lax.fori_loop(0, count, one_step, (state, metrics))
    return _pack_traced(layout, state), metrics, _finite(state, metrics) if check else True


def _finite(state, metrics) -> jax.Array:
    """Whether every floating-point number of ``state`` and every loss is finite (the
    losses past a chunk's last step are the buffer's zeros)."""
    numbers = [leaf for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return all_finite((numbers, metrics.get("loss")))


__all__ = ["TrainingResult", "TrainingStep", "train"]
