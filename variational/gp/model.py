"""What every sparse GP model shares: fitting from ``(X, y)`` in user units, prediction of
the latent ``f`` and of ``y``, and the result of a fit."""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from typing import Any, final

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.validation import check_count, check_key
from inferax.typing import PRNGKey
from inferax.variational.gp.kernels import AbstractKernel
from inferax.variational.gp.likelihoods import AbstractLikelihood
from inferax.variational.gp.linalg import report_jitter
from inferax.variational.gp.training import Dataset, Scaling, check_inputs, run_steps


class AbstractSparseGP(abc.ABC):
    """A sparse variational GP: a pytree of kernel, likelihood and variational parameters.

    Models work in standardised units (``scaling``); ``fit``, ``predict``, ``predict_y``
    and ``elbo`` take and return user units. ``predict`` gives the latent ``f``'s marginal
    mean and variance; ``predict_y`` those of ``y`` (for a Bernoulli likelihood the
    probability of class 1 and its Bernoulli variance).
    """

    kernel: AbstractKernel
    likelihood: AbstractLikelihood
    scaling: Any
    jitter: float
    standardize: bool

    # --- what each model provides -------------------------------------------------------

    @abc.abstractmethod
    def initialize(self, rng_key: PRNGKey, X: jax.Array, y: jax.Array) -> AbstractSparseGP:
        """The model with its variational parameters set, for standardised data."""

    @abc.abstractmethod
    def training_step(self, settings: dict) -> Any:
        """A hashable ``step(state, key, (X, y)) -> (state, loss, jitter)`` and its initial
        state's builder, as ``(step, init_state, model_from_state)``."""

    @abc.abstractmethod
    def latent(self, X: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mean, var, jitter)`` of ``f`` at standardised inputs."""

    @abc.abstractmethod
    def elbo_standardized(self, rng_key, X, y, num_data) -> tuple[jax.Array, jax.Array]:
        """``(ELBO estimate, jitter)`` on a batch of standardised data from ``num_data``."""

    def finalize(self, X: jax.Array, y: jax.Array) -> AbstractSparseGP:
        """The model after training (SGPR computes its optimal ``q(u)`` here)."""
        del X, y
        return self

    # --- shared --------------------------------------------------------------------------

    def latent_from_user(self, X: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``latent`` at inputs in user units, compiled."""
        return _latent(self, X)

    @property
    def fitted(self) -> bool:
        return self.scaling is not None

    def _check_fitted(self, what: str) -> None:
        if not self.fitted:
            raise ValueError(f"{what}: the model is not fitted; call fit(rng_key, X, y) first")

    def fit(
        self,
        rng_key: PRNGKey,
        X,
        y,
        *,
        num_steps: int,
        batch_size: int | None = None,
        learning_rate: float = 0.01,
        optimizer: optax.GradientTransformation | None = None,
        fixed: tuple[str, ...] = (),
        chunk_size: int = 500,
        progress: bool | None = None,
        **settings,
    ) -> GPFit:
        """Fits the model to ``(X, y)``.

        Args:
          rng_key: the key for initialisation and minibatches.
          X: inputs, ``(n, D)`` (or ``(n,)`` for ``D = 1``).
          y: outputs, ``(n,)``.
          num_steps: optimisation steps.
          batch_size: points (columns for DKLGP) per step, drawn inside the compiled loop;
            ``None`` for the full data.
          learning_rate: Adam's step size for the hyperparameters (and, where natural
            gradients are off, for the variational parameters).
          optimizer: an optax optimizer in place of ``optax.adam(learning_rate)`` (a
            schedule, clipping); pass the same object again to reuse the compiled loop.
          fixed: parts held fixed: any of ``"kernel"``, ``"likelihood"``, ``"inducing"``.
          chunk_size: steps per compiled chunk.
          progress: show a progress bar.
          **settings: model-specific settings (see each model).

        Returns:
          A ``GPFit`` with the fitted model and the loss (negative ELBO) trace.
        """
        rng_key = check_key(rng_key)
        check_count("num_steps", num_steps, minimum=1)
        check_count("chunk_size", chunk_size, minimum=1)
        if batch_size is not None:
            check_count("batch_size", batch_size, minimum=1)
        unknown = set(fixed) - {"kernel", "likelihood", "inducing"}
        if unknown:
            raise ValueError(
                f"fixed: unknown part(s) {sorted(unknown)}; "
                "choose from 'kernel', 'likelihood', 'inducing'"
            )
        X, y = check_inputs(X, y)
        self.likelihood.check_y(y)
        dtype = jnp.result_type(float)
        scaling = Scaling.from_data(
            X, y, standardize_x=self.standardize,
            standardize_y=self.standardize and self.likelihood.gaussian, dtype=dtype,
        )  # fmt: skip
        Xs = jnp.asarray(scaling.x(jnp.asarray(X, dtype)))
        ys = jnp.asarray(scaling.y(jnp.asarray(y, dtype)))
        init_key, run_key = jax.random.split(rng_key)
        model = dataclasses.replace(self, scaling=scaling).initialize(init_key, Xs, ys)
        settings = dict(
            settings, num_data=Xs.shape[0], batch_size=batch_size,
            optimizer=resolve_optimizer(optimizer, learning_rate), fixed=tuple(sorted(fixed)),
        )  # fmt: skip
        step, state, unpack = model.training_step(settings)
        state, losses, timing = run_steps(
            step, state, run_key, (Xs, ys), num_steps=num_steps, chunk_size=chunk_size,
            progress=progress, jitter=self.jitter, where=type(self).__name__,
        )  # fmt: skip
        model = unpack(state).finalize(Xs, ys)
        return GPFit(model=model, losses=losses, timing=timing)

    def fit_by_engine(self, target: Dataset, rng_key: PRNGKey, *, optimizer, num_steps: int,
                      num_particles: int = 1, progress: bool | None = None,
                      **settings) -> GPFit:  # fmt: skip
        """What ``variational.fit(gp.Dataset(X, y), model, key, optimizer=...,
        num_steps=..., batch_size=...)`` does: ``fit`` with those settings. The bound is
        the model's own (closed form or Gauss-Hermite), so ``num_particles`` must be 1."""
        if not isinstance(target, Dataset):
            raise TypeError(
                f"variational.fit with a {type(self).__name__} takes gp.Dataset(X, y) as its "
                f"target, got {type(target).__name__}"
            )
        if num_particles != 1:
            raise ValueError(
                f"num_particles: a sparse GP's bound needs no draws, got {num_particles!r}"
            )
        return self.fit(rng_key, target.X, target.y, num_steps=num_steps, optimizer=optimizer,
                        progress=progress, **settings)  # fmt: skip

    def predict(self, X) -> tuple[jax.Array, jax.Array]:
        """The latent ``f``'s posterior mean and variance at ``X``, in the units of ``y``
        for a Gaussian likelihood (otherwise the link's scale)."""
        self._check_fitted("predict")
        X, _ = check_inputs(X, dim=self.scaling.x_shift.shape[0])
        mean, var, used = self.latent_from_user(jnp.asarray(X, jnp.result_type(float)))
        report_jitter(used, self.jitter, bool(jnp.all(jnp.isfinite(var))), "predict")
        scale = self.scaling.y_scale
        return mean * scale + self.scaling.y_shift, var * scale**2

    def predict_y(self, X) -> tuple[jax.Array, jax.Array]:
        """The predictive mean and variance of ``y`` at ``X``."""
        self._check_fitted("predict_y")
        X, _ = check_inputs(X, dim=self.scaling.x_shift.shape[0])
        mean, var, _ = self.latent_from_user(jnp.asarray(X, jnp.result_type(float)))
        mean, var = self.likelihood.predict(mean, var)
        if self.likelihood.gaussian:
            scale = self.scaling.y_scale
            return mean * scale + self.scaling.y_shift, var * scale**2
        return mean, var

    def log_predictive_density(self, X, y) -> jax.Array:
        """``log p(y_i | data)`` per test point, in the units of ``y`` (the NLPD's negative,
        with its ``1/2 log 2 pi``)."""
        self._check_fitted("log_predictive_density")
        X, y = check_inputs(X, y, dim=self.scaling.x_shift.shape[0])
        dtype = jnp.result_type(float)
        mean, var, _ = self.latent_from_user(jnp.asarray(X, dtype))
        ys = self.scaling.y(jnp.asarray(y, dtype))
        return self.likelihood.predictive_log_prob(ys, mean, var) - jnp.log(
            self.scaling.y_scale
        )

    def elbo(self, X, y, rng_key: PRNGKey | None = None) -> float:
        """The ELBO on all of ``(X, y)`` in standardised units (the bound the fit maximised;
        with ``standardize=False`` it is in the data's own units)."""
        self._check_fitted("elbo")
        X, y = check_inputs(X, y, dim=self.scaling.x_shift.shape[0])
        dtype = jnp.result_type(float)
        Xs = self.scaling.x(jnp.asarray(X, dtype))
        ys = self.scaling.y(jnp.asarray(y, dtype))
        key = jax.random.key(0) if rng_key is None else rng_key
        value, used = _elbo(self, key, Xs, ys)
        report_jitter(used, self.jitter, bool(jnp.isfinite(value)), "elbo")
        return float(value)


@jax.jit
def _latent(model, X):
    return model.latent(model.scaling.x(X))


@jax.jit
def _elbo(model, key, X, y):
    return model.elbo_standardized(key, X, y, X.shape[0])


def resolve_optimizer(optimizer, learning_rate: float) -> optax.GradientTransformation:
    """``optimizer``, or Adam at ``learning_rate``: the same object for the same rate, so a
    refit finds its compiled loop."""
    if optimizer is None:
        if not (isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate)
                and learning_rate >= 0):  # fmt: skip
            raise ValueError(f"learning_rate must be a number >= 0, got {learning_rate!r}")
        return _adam(float(learning_rate))
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")  # fmt: skip
    return optimizer


@functools.lru_cache(maxsize=64)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def stop_fixed(parts: dict, fixed: tuple[str, ...]) -> dict:
    """``parts`` with the named entries behind ``stop_gradient``."""
    return {
        name: jax.lax.stop_gradient(value) if name in fixed else value
        for name, value in parts.items()
    }


@final
@dataclasses.dataclass(frozen=True)
class GPFit:
    """The result of ``AbstractSparseGP.fit``.

    Attributes:
      model: the fitted model (``predict``, ``predict_y``, ``elbo``).
      losses: the negative ELBO estimate at each step (standardised units).
      timing: seconds spent compiling and optimising.
    """

    model: AbstractSparseGP
    losses: np.ndarray
    timing: dict[str, float]

    def predict(self, X):
        return self.model.predict(X)

    def predict_y(self, X):
        return self.model.predict_y(X)


__all__ = ["AbstractSparseGP", "GPFit", "resolve_optimizer", "stop_fixed"]
