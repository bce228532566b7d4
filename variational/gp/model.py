"""What every sparse GP model shares: prediction of the latent ``f`` and of ``y`` in user
units, and the pieces of a training step (``fitting.fit`` runs the steps)."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from inferax.minibatch import draw_minibatch
from inferax.typing import ArrayTree, PRNGKey
from inferax.variational.gp.covariances import AbstractCovariance
from inferax.variational.gp.data import check_inputs
from inferax.variational.gp.likelihoods import AbstractLikelihood
from inferax.variational.gp.linalg import report_jitter


class AbstractSparseGP(abc.ABC):
    """A sparse variational GP: a pytree of kernel, likelihood and variational parameters.

    Models work in standardised units (``scaling``); ``gp.fit``, ``predict``,
    ``predict_y`` and ``elbo`` take and return user units. ``predict`` gives the latent
    ``f``'s marginal mean and variance; ``predict_y`` those of ``y`` (for a Bernoulli
    likelihood the probability of class 1 and its Bernoulli variance).
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    scaling: Any
    jitter: float
    standardize: bool

    # --- what each model provides -------------------------------------------------------

    @abc.abstractmethod
    def initialize(self, rng_key: PRNGKey, X: jax.Array, y: jax.Array) -> AbstractSparseGP:
        """The model with its variational parameters set, for standardised data."""

    @abc.abstractmethod
    def training_step(self, settings: dict) -> tuple[Callable, tuple]:
        """``(step, state)``: a hashable ``step(state, rng_key, (X, y)) -> (state, metrics)``
        for ``inferax.training.train``, with ``metrics`` the loss (the negative ELBO) and
        the Cholesky jitter used, and its initial state, whose first entry is the model.

        ``settings`` holds ``num_data``, ``batch_size``, ``optimizer``, ``fixed`` and the
        model's own settings; an unknown one is a ``TypeError``."""

    @abc.abstractmethod
    def latent(self, X: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mean, var, jitter)`` of ``f`` at standardised inputs."""

    @abc.abstractmethod
    def elbo_standardized(self, X, y, num_data) -> tuple[jax.Array, jax.Array]:
        """``(ELBO estimate, jitter)`` on a batch of standardised data from ``num_data``."""

    def finalize(self, X: jax.Array, y: jax.Array) -> AbstractSparseGP:
        """The model after training (SGPR computes its optimal ``q(u)`` here)."""
        del X, y
        return self

    @property
    def reorders(self) -> bool:
        """Whether ``reorder`` rebuilds the model's structure between the stages of a fit."""
        return False

    def reorder(self, X: jax.Array, y: jax.Array, tolerance: float) -> AbstractSparseGP:
        """The model for the next stage of a staged fit (only where ``reorders``)."""
        del X, y, tolerance
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
            raise ValueError(f"{what}: the model is not fitted; call gp.fit(model, rng_key, X, y)")

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
        return self.likelihood.predictive_log_prob(ys, mean, var) - jnp.log(self.scaling.y_scale)

    def elbo(self, X, y) -> float:
        """The ELBO on all of ``(X, y)`` in standardised units (the bound the fit maximised;
        with ``standardize=False`` it is in the data's own units)."""
        self._check_fitted("elbo")
        X, y = check_inputs(X, y, dim=self.scaling.x_shift.shape[0])
        dtype = jnp.result_type(float)
        Xs = self.scaling.x(jnp.asarray(X, dtype))
        ys = self.scaling.y(jnp.asarray(y, dtype))
        value, used = _elbo(self, Xs, ys)
        report_jitter(used, self.jitter, bool(jnp.isfinite(value)), "elbo")
        return float(value)


@jax.jit
def _latent(model, X):
    return model.latent(model.scaling.x(X))


@jax.jit
def _elbo(model, X, y):
    return model.elbo_standardized(X, y, X.shape[0])


def stop_fixed(parts: dict, fixed: tuple[str, ...]) -> dict:
    """``parts`` with the named entries behind ``stop_gradient``."""
    return {
        name: jax.lax.stop_gradient(value) if name in fixed else value
        for name, value in parts.items()
    }


def training_batch(rng_key: PRNGKey, data: ArrayTree, batch_size: int | None) -> ArrayTree:
    """``batch_size`` distinct data points drawn with ``rng_key`` (``draw_minibatch``), or
    all of ``data`` for ``None``. Each point is in the batch with probability
    ``batch_size / n``, so a sum over the batch scaled by ``n / batch_size`` is unbiased."""
    if batch_size is None:
        return data
    return draw_minibatch(rng_key, data, batch_size)


def descend(
    step: Any,
    model: AbstractSparseGP,
    opt_state: Any,
    elbo: Callable[[AbstractSparseGP], tuple[jax.Array, jax.Array]],
) -> tuple[AbstractSparseGP, Any, dict[str, jax.Array]]:
    """One optimizer step on the parts ``step.trained(model)`` (a dict of the model's
    fields) against ``elbo(model) -> (ELBO, jitter)``, the parts named in ``step.fixed``
    held, with ``step.optimizer``.

    Returns:
      ``(model, opt_state, metrics)``, ``metrics`` the loss (negative ELBO, before the
      step) and the jitter used.
    """

    def loss(params):
        value, used = elbo(dataclasses.replace(model, **stop_fixed(params, step.fixed)))
        return -value, used

    params = step.trained(model)
    (value, used), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = step.optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return dataclasses.replace(model, **params), opt_state, {"loss": value, "jitter": used}


__all__ = ["AbstractSparseGP", "descend", "stop_fixed", "training_batch"]
