"""SGPR: Titsias's collapsed sparse GP bound for regression with a Gaussian likelihood."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, final

import jax
import jax.numpy as jnp
import optax
from jax.scipy.linalg import solve_triangular

from inferax.pytree import pytree_dataclass, static_field
from inferax.variational.gp.covariances import AbstractCovariance, rbf
from inferax.variational.gp.inducing import (
    inducing_inputs,
    initial_inducing,
    projected_marginals,
    whitened_projection,
)
from inferax.variational.gp.likelihoods import AbstractLikelihood, Gaussian, gaussian
from inferax.variational.gp.model import AbstractSparseGP, descend


def _collapsed(model, X, y):
    """The bound's pieces: ``(bound, A, L_B, c, jitter)``, with ``A = L^-1 Kuf / sigma``,
    ``B = I + A A^T = L_B L_B^T`` and ``c = L_B^-1 A y / sigma``."""
    sigma2 = model.likelihood.variance
    sigma = jnp.sqrt(sigma2)
    projection, used = whitened_projection(model.kernel, model.inducing, X, model.jitter)
    A = projection / sigma
    size = A.shape[0]
    B = jnp.eye(size, dtype=A.dtype) + A @ A.T
    factor_b = jnp.linalg.cholesky(B)
    c = solve_triangular(factor_b, A @ y, lower=True) / sigma
    n = X.shape[0]
    bound = (
        -0.5 * n * math.log(2 * math.pi)
        - jnp.sum(jnp.log(jnp.diag(factor_b)))
        - 0.5 * n * jnp.log(sigma2)
        - 0.5 * jnp.sum(y**2) / sigma2
        + 0.5 * jnp.sum(c**2)
        - 0.5 * jnp.sum(model.kernel.diag(X)) / sigma2
        + 0.5 * jnp.sum(A**2)
    )
    return bound, factor_b, c, used


@final
@pytree_dataclass
class SGPR(AbstractSparseGP):
    """The collapsed bound of Titsias (2009), with ``q(u)`` optimal in closed form:

    ``log N(y | 0, Qff + sigma^2 I) - tr(Kff - Qff) / (2 sigma^2)``, evaluated through
    ``B = I + A A^T``, ``A = L^-1 Kuf / sigma``, in ``O(n M^2)``. After ``fit`` the optimal
    whitened ``q(v) = N(B^-1 A y / sigma, B^-1)`` is stored in ``mean`` and ``scale_tril``
    for prediction.
    """

    kernel: AbstractCovariance
    likelihood: AbstractLikelihood
    inducing: Any
    mean: Any = None
    scale_tril: Any = None
    scaling: Any = None
    num_inducing: int = static_field(default=0)
    jitter: float = static_field(default=1e-6)
    standardize: bool = static_field(default=True)

    def initialize(self, rng_key, X, y):
        del y
        return dataclasses.replace(self, inducing=initial_inducing(rng_key, self, X))

    def elbo_standardized(self, X, y, num_data):
        if X.shape[0] != num_data:
            raise ValueError("SGPR's collapsed bound needs the full data, not a minibatch")
        bound, _, _, used = _collapsed(self, X, y)
        return bound, used

    def finalize(self, X, y):
        return _optimal_q(self, X, y)

    def latent(self, X):
        projection, used = whitened_projection(self.kernel, self.inducing, X, self.jitter)
        mean, spread = projected_marginals(projection, self.mean, None, self.scale_tril)
        var = self.kernel.diag(X) - jnp.sum(projection**2, axis=0) + spread
        return mean, jnp.maximum(var, 1e-12), used

    def training_step(self, settings):
        if settings.pop("batch_size") is not None:
            raise ValueError("SGPR's collapsed bound uses the full data: leave batch_size None")
        step = SGPRStep(optimizer=settings.pop("optimizer"), fixed=settings.pop("fixed"))
        settings.pop("num_data")
        if settings:
            raise TypeError(f"gp.fit: SGPR got unexpected setting(s) {sorted(settings)}")
        return step, (self, step.optimizer.init(step.trained(self)))


@jax.jit
def _optimal_q(model, X, y):
    _, factor_b, c, _ = _collapsed(model, X, y)
    size = factor_b.shape[0]
    mean = solve_triangular(factor_b.T, c, lower=False)
    inverse = solve_triangular(factor_b, jnp.eye(size, dtype=X.dtype), lower=True)
    cov = inverse.T @ inverse
    return dataclasses.replace(
        model, mean=mean, scale_tril=jnp.linalg.cholesky(0.5 * (cov + cov.T))
    )


@final
@dataclasses.dataclass(frozen=True)
class SGPRStep:
    """One optimizer step (Adam by default) on the kernel, the noise and ``Z`` against the
    collapsed bound, on the full data."""

    optimizer: optax.GradientTransformation
    fixed: tuple[str, ...]

    def trained(self, model):
        """The parts the optimizer steps."""
        return {"kernel": model.kernel, "likelihood": model.likelihood, "inducing": model.inducing}

    def __call__(self, state, rng_key, data):
        del rng_key
        model, opt_state = state
        X, y = data
        model, opt_state, metrics = descend(
            self, model, opt_state, lambda current: current.elbo_standardized(X, y, X.shape[0])
        )
        return (model, opt_state), metrics


def sgpr(
    inducing,
    kernel: AbstractCovariance | None = None,
    likelihood: AbstractLikelihood | None = None,
    *,
    jitter: float = 1e-6,
    standardize: bool = True,
) -> SGPR:
    """Sparse GP regression with Titsias's collapsed bound (full-batch, Gaussian noise only).

    Args:
      inducing: inducing inputs ``Z (M, D)`` in the units of ``X``, or an integer ``M``.
      kernel: default ``rbf()``.
      likelihood: must be ``gaussian(...)`` (the default); others are refused.
      jitter: added to ``Kuu``'s diagonal; retried larger (and logged) if that fails.
      standardize: standardise ``X`` and ``y`` before fitting.

    Returns:
      An unfitted ``SGPR``.

    Examples:
      >>> import jax, numpy as np
      >>> from inferax.variational import gp
      >>> X = np.linspace(-3, 3, 200)[:, None]
      >>> y = np.sin(2 * X[:, 0]) + 0.1 * np.random.default_rng(0).normal(size=200)
      >>> model = gp.sgpr(np.linspace(-3, 3, 15)[:, None])
      >>> result = gp.fit(model, jax.random.key(0), X, y, num_steps=300, learning_rate=0.05,
      ...                 progress=False)
      >>> mean, var = result.predict(np.array([[0.5]]))
      >>> bool(abs(float(mean[0]) - np.sin(1.0)) < 0.1)
      True

    References:
      Titsias, "Variational Learning of Inducing Variables in Sparse Gaussian Processes",
      2009.
    """
    kernel = rbf() if kernel is None else kernel
    likelihood = gaussian() if likelihood is None else likelihood
    if not isinstance(likelihood, Gaussian):
        raise ValueError(
            f"SGPR's collapsed bound needs a Gaussian likelihood, got "
            f"{type(likelihood).__name__}; use svgp(...) for other likelihoods"
        )
    Z, size = inducing_inputs(inducing)
    return SGPR(
        kernel,
        likelihood,
        Z,
        num_inducing=size,
        jitter=float(jitter),
        standardize=standardize,
    )


__all__ = ["SGPR", "SGPRStep", "sgpr"]
