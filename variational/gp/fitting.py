"""Fitting a sparse GP to data: ``fit(model, rng_key, X, y, ...) -> GPFit``, on the core's
training loop."""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.training import train
from inferax.typing import PRNGKey
from inferax.validation import check_count, check_key
from inferax.variational.gp.data import Scaling, check_inputs
from inferax.variational.gp.linalg import report_jitter
from inferax.variational.gp.model import AbstractSparseGP

FIXABLE = ("kernel", "likelihood", "inducing")
"""The parts that ``fixed`` may hold."""


@final
@dataclasses.dataclass(frozen=True)
class GPFit:
    """The result of ``gp.fit``.

    Attributes:
      model: the fitted model (``predict``, ``predict_y``, ``log_predictive_density``,
        ``elbo``).
      losses: the negative ELBO estimate at each step (standardised units).
      timing: seconds spent compiling and optimising (and, for a staged DKLGP fit,
        reordering).
    """

    model: AbstractSparseGP
    losses: np.ndarray
    timing: dict[str, float]

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """``model.predict(X)``: the latent ``f``'s mean and variance."""
        return self.model.predict(X)

    def predict_y(self, X) -> tuple[jax.Array, jax.Array]:
        """``model.predict_y(X)``: the mean and variance of ``y``."""
        return self.model.predict_y(X)


def fit(
    model: AbstractSparseGP,
    rng_key: PRNGKey,
    X,
    y,
    *,
    num_steps: int,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 0.01,
    batch_size: int | None = None,
    fixed: tuple[str, ...] = (),
    num_stages: int = 1,
    reorder_tolerance: float = 0.2,
    chunk_size: int | None = None,
    progress: bool | None = None,
    **settings,
) -> GPFit:
    """Fits a sparse GP to ``(X, y)`` by maximising its ELBO.

    The data are checked and standardised (unless the model was built with
    ``standardize=False``), the model's variational parameters are initialised with one
    half of ``rng_key``, and ``num_steps`` optimiser steps run on
    ``inferax.training.train`` with the other: step ``t`` draws its minibatch of
    ``batch_size`` distinct points with ``fold_in(key, t)``, so the fit does not depend on
    ``chunk_size``. Between chunks the host logs Cholesky retries and raises when the loss
    stops being finite. The compiled chunks are kept with the model's class, so a refit
    with the same settings, optimizer object and shapes does not compile again.

    Args:
      model: an unfitted model from ``sgpr``, ``svgp``, ``swsgp`` or ``dklgp``.
      rng_key: the key for initialisation and minibatches.
      X: inputs, ``(n, D)`` (or ``(n,)`` for ``D = 1``).
      y: outputs, ``(n,)``.
      num_steps: optimisation steps (in all, over the stages).
      optimizer: an optax optimizer (a schedule, clipping); default
        ``optax.adam(learning_rate)``, the same object for the same rate.
      learning_rate: Adam's step size when no ``optimizer`` is given.
      batch_size: points per step (columns for DKLGP), at most ``n``; ``None`` for the full
        data. SGPR's collapsed bound takes the full data only.
      fixed: parts held fixed: any of ``"kernel"``, ``"likelihood"``, ``"inducing"``.
      num_stages: DKLGP only: ``num_steps`` is cut into this many stages, and between
        stages the ordering and sparsity pattern are rebuilt if a lengthscale moved by more
        than ``reorder_tolerance`` (relative), keeping ``mu`` and restarting ``V`` at ``U``.
      reorder_tolerance: see ``num_stages``.
      chunk_size: steps per compiled chunk; ``None``: picked by ``inferax.training.train``
        (see ``inferax.chunking``).
      progress: show a progress bar; ``None``: on an interactive terminal, not under CI.
      **settings: the model's own settings: for SVGP ``natural_gradient=True`` and
        ``natgrad_step_size=0.1``.

    Returns:
      A ``GPFit`` with the fitted model and the loss (negative ELBO) trace.

    Raises:
      ValueError: bad data (NaN or infinite values, mismatched lengths, labels outside the
        likelihood's support), bad settings, or a Cholesky factorisation that failed even
        with the largest jitter.
      FloatingPointError: the loss stopped being finite.

    Examples:
      >>> import jax, numpy as np
      >>> from inferax.variational import gp
      >>> X = np.linspace(-3, 3, 200)[:, None]
      >>> y = np.sin(2 * X[:, 0]) + 0.1 * np.random.default_rng(0).normal(size=200)
      >>> result = gp.fit(gp.sgpr(np.linspace(-3, 3, 15)[:, None]), jax.random.key(0), X, y,
      ...                 num_steps=300, learning_rate=0.05, progress=False)
      >>> mean, var = result.predict(np.array([[0.5]]))
      >>> bool(abs(float(mean[0]) - np.sin(1.0)) < 0.1)
      True
    """
    if not isinstance(model, AbstractSparseGP):
        raise TypeError(
            f"gp.fit takes a sparse GP (gp.sgpr, gp.svgp, gp.swsgp, gp.dklgp), got "
            f"{type(model).__name__}"
        )
    if model.fitted:
        raise ValueError("gp.fit: the model is already fitted; build a new one to refit")
    rng_key = check_key(rng_key)
    check_count("num_stages", num_stages, minimum=1)
    check_count("num_steps", num_steps, minimum=num_stages)
    if chunk_size is not None:
        check_count("chunk_size", chunk_size, minimum=1)
    if num_stages > 1 and not model.reorders:
        raise ValueError(f"num_stages: a {type(model).__name__} has no stages; only DKLGP does")
    unknown = set(fixed) - set(FIXABLE)
    if unknown:
        raise ValueError(
            f"fixed: unknown part(s) {sorted(unknown)}; choose from {', '.join(FIXABLE)}"
        )
    optimizer = resolve_optimizer(optimizer, learning_rate)
    X, y = check_inputs(X, y)
    if batch_size is not None:
        check_count("batch_size", batch_size, minimum=1)
        if batch_size > X.shape[0]:
            raise ValueError(f"batch_size={batch_size} exceeds the {X.shape[0]} data points")
    model.likelihood.check_y(y)
    dtype = jnp.result_type(float)
    scaling = Scaling.from_data(
        X,
        y,
        standardize_x=model.standardize,
        standardize_y=model.standardize and model.likelihood.gaussian,
        dtype=dtype,
    )
    Xs = jnp.asarray(scaling.x(jnp.asarray(X, dtype)))
    ys = jnp.asarray(scaling.y(jnp.asarray(y, dtype)))
    init_key, run_key = jax.random.split(rng_key)
    model = dataclasses.replace(model, scaling=scaling).initialize(init_key, Xs, ys)
    where = type(model).__name__
    check = functools.partial(_check_chunk, model.jitter, where)
    timing = {"compile": 0.0, "optimization": 0.0}
    if model.reorders:
        timing["ordering"] = 0.0
    losses = []
    for stage in range(num_stages):
        if stage:
            start = time.perf_counter()
            model = model.reorder(Xs, ys, reorder_tolerance)
            timing["ordering"] += time.perf_counter() - start
        stage_settings = dict(
            settings,
            num_data=Xs.shape[0],
            batch_size=batch_size,
            optimizer=optimizer,
            fixed=tuple(sorted(fixed)),
        )
        step, state = model.training_step(stage_settings)
        result = train(
            step,
            state,
            jax.random.fold_in(run_key, stage),
            (Xs, ys),
            num_steps=num_steps // num_stages + (stage < num_steps % num_stages),
            chunk_size=chunk_size,
            progress=progress,
            description=where,
            owner=type(model),
            on_chunk=check,
        )
        model = result.state[0]
        losses.append(result.trace["loss"])
        for name, seconds in result.timing.items():
            timing[name] += seconds
    return GPFit(model=model.finalize(Xs, ys), losses=np.concatenate(losses), timing=timing)


def _check_chunk(jitter: float, where: str, first: int, state: Any, metrics: dict) -> None:
    # The host hook between chunks: log Cholesky retries, stop on a non-finite loss.
    del state
    losses = metrics["loss"]
    finite = bool(np.all(np.isfinite(losses)))
    report_jitter(np.max(metrics["jitter"]), jitter, finite, where)
    if not finite:
        step_index = first + int(np.argmin(np.isfinite(losses)))
        raise FloatingPointError(
            f"{where}: the loss is not finite at step {step_index}; lower the learning rate "
            "(the Cholesky factors were finite)"
        )


def resolve_optimizer(optimizer, learning_rate: float) -> optax.GradientTransformation:
    """``optimizer``, or Adam at ``learning_rate``: the same object for the same rate, so a
    refit finds its compiled loop."""
    if optimizer is None:
        valid = isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
        if not (valid and learning_rate >= 0):
            raise ValueError(f"learning_rate must be a number >= 0, got {learning_rate!r}")
        return _adam(float(learning_rate))
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}"
        )
    return optimizer


@functools.lru_cache(maxsize=64)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


__all__ = ["FIXABLE", "GPFit", "fit", "resolve_optimizer"]
