"""Training a sparse GP: input checks, standardisation, and the compiled loop that draws
minibatches and steps the optimiser in chunks, in the VI engine's style (``fold_in`` keys per
step, a ``fori_loop`` with a traced trip count, the progress bar between chunks)."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from inferax.progress import ProgressBar, progress_enabled
from inferax.pytree import pytree_dataclass
from inferax.variational.gp.linalg import report_jitter


def check_inputs(X, y=None, *, dim: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``X`` as an ``(n, D)`` float array and ``y`` as ``(n,)``, or a clear error.

    Raises:
      ValueError: NaN or infinite values, wrong ranks, mismatched lengths or a ``D`` other
        than ``dim``.
    """
    X = np.asarray(X)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, D), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no rows")
    if not np.issubdtype(X.dtype, np.number):
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    if not np.all(np.isfinite(X)):
        bad = int(np.sum(~np.isfinite(X).all(axis=1)))
        raise ValueError(f"X has {bad} row(s) with NaN or infinite values")
    if dim is not None and X.shape[1] != dim:
        raise ValueError(f"X has {X.shape[1]} columns; the model was fitted on {dim}")
    if y is None:
        return X, None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must have shape (n,) or (n, 1), got shape {y.shape}")
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} values")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"y has {int(np.sum(~np.isfinite(y)))} NaN or infinite value(s)")
    return X, y


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs ``X (n, D)`` and outputs ``y (n,)``: a sparse GP's target for
    ``variational.fit``, checked when the fit starts."""

    X: Any
    y: Any


@pytree_dataclass
class Scaling:
    """The affine maps between user units and the standardised units the model works in:
    ``x_std = (x - x_shift) / x_scale`` and ``y_std = (y - y_shift) / y_scale``."""

    x_shift: jax.Array
    x_scale: jax.Array
    y_shift: jax.Array
    y_scale: jax.Array

    @classmethod
    def identity(cls, dim: int, dtype) -> Scaling:
        return cls(jnp.zeros(dim, dtype), jnp.ones(dim, dtype), jnp.zeros((), dtype),
                   jnp.ones((), dtype))  # fmt: skip

    @classmethod
    def from_data(cls, X, y, *, standardize_x: bool, standardize_y: bool, dtype) -> Scaling:
        scaling = cls.identity(X.shape[1], dtype)
        if standardize_x:
            scale = X.std(axis=0)
            scaling = dataclasses.replace(
                scaling,
                x_shift=jnp.asarray(X.mean(axis=0), dtype),
                x_scale=jnp.asarray(np.where(scale > 0, scale, 1.0), dtype),
            )
        if standardize_y:
            scale = y.std()
            scaling = dataclasses.replace(
                scaling,
                y_shift=jnp.asarray(y.mean(), dtype),
                y_scale=jnp.asarray(scale if scale > 0 else 1.0, dtype),
            )
        return scaling

    def x(self, X):
        return (X - self.x_shift[None, :]) / self.x_scale[None, :]

    def y(self, y):
        return (y - self.y_shift) / self.y_scale


def minibatch(rng_key, data: tuple[jax.Array, ...], batch_size: int | None):
    """``batch_size`` rows drawn uniformly with replacement from every array in ``data``
    (unbiased for sums scaled by ``n / batch_size``), or all of them for ``None``."""
    if batch_size is None:
        return data
    n = data[0].shape[0]
    index = jax.random.randint(rng_key, (batch_size,), 0, n)
    return tuple(jnp.take(leaf, index, axis=0) for leaf in data)


def run_steps(
    step: Callable,
    state,
    rng_key,
    data,
    *,
    num_steps: int,
    chunk_size: int,
    progress: bool | None,
    jitter: float,
    where: str,
):
    """Runs ``state, loss, jitter = step(state, key_t, data)`` for ``num_steps`` steps in
    compiled chunks, with ``key_t = fold_in(rng_key, t)``.

    ``step`` must be hashable (a frozen dataclass of its configuration): it keys the jit
    cache, so a second fit of the same configuration and shapes does not compile again.
    Between chunks the host logs Cholesky retries and raises when the loss stops being
    finite.

    Returns:
      ``(state, losses, timing)``.
    """
    losses = []
    timing = {"compile": 0.0, "optimization": 0.0}
    bar = ProgressBar(num_steps, progress_enabled(progress), where)
    try:
        for first in range(0, num_steps, chunk_size):
            count = min(chunk_size, num_steps - first)
            args = (state, rng_key, data, jnp.int32(first), jnp.int32(count))
            start = time.perf_counter()
            program = _compiled(step, chunk_size, args)
            timing["compile"] += time.perf_counter() - start
            start = time.perf_counter()
            state, chunk_losses, used = program(*args)
            chunk_losses = np.asarray(chunk_losses)[:count]
            timing["optimization"] += time.perf_counter() - start
            finite = bool(np.all(np.isfinite(chunk_losses)))
            report_jitter(used, jitter, finite, where)
            if not finite:
                step_index = first + int(np.argmin(np.isfinite(chunk_losses)))
                raise FloatingPointError(
                    f"{where}: the loss is not finite at step {step_index}; lower the "
                    "learning rate (the Cholesky factors were finite)"
                )
            losses.append(chunk_losses)
            bar.advance(count)
    finally:
        bar.close()
    return state, np.concatenate(losses), timing


_programs: dict = {}


def _compiled(step, chunk_size: int, args):
    # Keyed by the step's configuration (equal, not identical, steps share a program) and
    # the argument shapes, so compile time is measured apart from run time.
    leaves, treedef = jax.tree.flatten(jax.tree.map(jax.typeof, args))
    key = (step, chunk_size, treedef, tuple(leaves))
    if key not in _programs:
        _programs[key] = _chunk.lower(*args, step=step, chunk_size=chunk_size).compile()
    return _programs[key]


@functools.partial(jax.jit, static_argnames=("step", "chunk_size"))
def _chunk(state, rng_key, data, first, count, step, chunk_size):
    def one_step(offset, carry):
        state, losses, used = carry
        key = jax.random.fold_in(rng_key, first + offset)
        state, loss, jitter = step(state, key, data)
        losses = losses.at[offset].set(loss.astype(losses.dtype))
        return state, losses, jnp.maximum(used, jitter)

    losses = jnp.zeros(chunk_size, jnp.result_type(float))
    used = jnp.zeros((), jnp.result_type(float))
    # A traced trip count: XLA would unroll a fixed-length scan and compile time would grow.
    return jax.lax.fori_loop(0, count, one_step, (state, losses, used))


__all__ = ["Dataset", "Scaling", "check_inputs", "minibatch", "run_steps"]
