"""The one training loop: every optimiser-driven fit in inferax runs here.

The variational engine, the sparse GPs, DKLGP and the fractional SDE each write one
training step; this module runs it for ``num_steps`` steps in compiled chunks. Step ``t``
uses the key ``fold_in(rng_key, t)``, so a fit does not depend on the chunk size. Between
chunks the host advances the progress bar and calls ``on_chunk``, the hook for checks and
checkpoints; with neither, the chunks are dispatched back to back and their metrics read
at the end. Compiled chunks are cached, so a second fit with the same step and shapes
does not compile again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from inferax.compile_cache import compiled
from inferax.progress import ProgressBar, progress_enabled
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
    chunk_size: int = 500,
    progress: bool | None = None,
    description: str = "fit",
    owner: Hashable | None = None,
    on_chunk: Callable[[int, Any, dict[str, np.ndarray]], None] | None = None,
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
      chunk_size: steps per compiled chunk; the host runs between chunks.
      progress: show a progress bar; ``None``: on an interactive terminal, not under CI.
      description: the progress bar's label.
      owner: the object the compiled chunks are kept with (a ``Target``); they go when it
        does. Defaults to ``step``.
      on_chunk: called as ``on_chunk(first_step, state, metrics)`` after each chunk with
        that chunk's metrics; it may raise to stop the fit (a non-finite loss) or save the
        state (a checkpoint).

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
    check_count("chunk_size", chunk_size, minimum=1)
    static = {"step": step, "chunk_size": chunk_size}
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
    try:
        for first in range(0, num_steps, chunk_size):
            count = min(chunk_size, num_steps - first)
            args = (state, rng_key, data, jnp.int32(first), jnp.int32(count))
            program, seconds = compiled(step if owner is None else owner, _chunk, static, *args)
            timing["compile"] += seconds
            start = time.perf_counter()
            state, metrics = program(*args)
            if wait_each:
                metrics = _host(metrics, count)
            timing["optimization"] += time.perf_counter() - start
            if on_chunk is not None:
                on_chunk(first, state, metrics)
            chunks.append((count, metrics))
            if wait_each:
                bar.advance(count)
        start = time.perf_counter()
        chunks = [(count, _host(metrics, count)) for count, metrics in chunks]
        state = jax.block_until_ready(state)
        timing["optimization"] += time.perf_counter() - start
        if not wait_each:
            bar.advance(num_steps)
    finally:
        bar.close()
    names = chunks[0][1]
    trace = {name: np.concatenate([metrics[name] for _, metrics in chunks]) for name in names}
    return TrainingResult(state, trace, timing)


def _host(metrics: dict[str, Any], count: int) -> dict[str, np.ndarray]:
    """A chunk's metrics on the host, its first ``count`` steps (a no-op when they are)."""
    return {name: np.asarray(value)[:count] for name, value in metrics.items()}


@functools.partial(jax.jit, static_argnames=("step", "chunk_size"))
def _chunk(state, rng_key, data, first, count, step, chunk_size):
    _, shapes = jax.eval_shape(step, state, rng_key, data)
    metrics = {name: jnp.zeros((chunk_size,), shape.dtype) for name, shape in shapes.items()}

    def one_step(offset, carry):
        state, metrics = carry
        state, values = step(state, jax.random.fold_in(rng_key, first + offset), data)
        metrics = {name: metrics[name].at[offset].set(values[name]) for name in metrics}
        return state, metrics

    # A traced trip count: XLA unrolls a scan of fixed length on CPU, and compile time would
    # then grow with chunk_size.
    return jax.lax.fori_loop(0, count, one_step, (state, metrics))


__all__ = ["TrainingResult", "TrainingStep", "train"]
