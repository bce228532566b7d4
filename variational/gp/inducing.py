"""Inducing inputs and the projections through them, shared by SGPR, SVGP and SWSGP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from inferax.variational.gp.linalg import cholesky_with_jitter, whitening_solve


def inducing_inputs(inducing) -> tuple[np.ndarray | None, int]:
    """A model constructor's ``inducing`` argument as ``(Z, M)``: an ``(M, D)`` array (a
    1-D array is one column), or an integer ``M`` (then ``Z`` is ``None`` and ``M`` rows
    of ``X`` are drawn when the fit starts).

    Raises:
      ValueError: ``M < 1``, or an array that is not finite and two-dimensional.
    """
    if isinstance(inducing, (int, np.integer)) and not isinstance(inducing, bool):
        if inducing < 1:
            raise ValueError(
                f"inducing: the number of inducing points must be >= 1, got {inducing}"
            )
        return None, int(inducing)
    Z = np.asarray(inducing, dtype=float)
    if Z.ndim == 1:
        Z = Z[:, None]
    if Z.ndim != 2 or not np.all(np.isfinite(Z)):
        raise ValueError(f"inducing must be a finite (M, D) array or an int, got shape {Z.shape}")
    return Z, Z.shape[0]


def initial_inducing(rng_key, model, X: jax.Array) -> jax.Array:
    """A model's inducing inputs in standardised units at the start of a fit: its ``Z``
    (given in the units of ``X``) standardised, or ``model.num_inducing`` distinct rows of
    the standardised ``X`` drawn with ``rng_key``.

    Raises:
      ValueError: more inducing points than rows, or a ``Z`` of another dimension.
    """
    if model.inducing is None:
        n = X.shape[0]
        if model.num_inducing > n:
            raise ValueError(f"num_inducing={model.num_inducing} exceeds the {n} data points")
        index = jax.random.choice(rng_key, n, (model.num_inducing,), replace=False)
        return X[index]
    Z = jnp.asarray(model.inducing, X.dtype)
    if Z.ndim != 2 or Z.shape[1] != X.shape[1]:
        raise ValueError(f"inducing must have shape (M, {X.shape[1]}) to match X, got {Z.shape}")
    return model.scaling.x(Z)


def inducing_projection(covariance, Z, X, jitter):
    """``(A, L, jitter)``: ``L = chol(Kuu + jitter I)`` and ``A = L^-1 Kuf``."""
    factor, used = cholesky_with_jitter(covariance.matrix(Z, Z), jitter)
    return solve_triangular(factor, covariance.matrix(Z, X), lower=True), factor, used


def whitened_projection(covariance, Z, X, jitter):
    """``(A, jitter)``: ``A = L^-1 Kuf``, ``L = chol(Kuu + jitter I)``, when ``L`` itself is
    not needed (its gradient is then cheaper: ``linalg.whitening_solve``)."""
    return whitening_solve(covariance.matrix(Z, Z), covariance.matrix(Z, X), jitter)


def projected_marginals(projection, mean, cov=None, scale_tril=None):
    """``(A^T m, diag(A^T S A))`` for ``q(u) = N(m, S)``, with ``S`` given as ``cov`` or as
    its Cholesky factor ``scale_tril``: the part of ``f``'s marginals that ``q(u)`` sets."""
    if scale_tril is not None:
        spread = jnp.sum((scale_tril.T @ projection) ** 2, axis=0)
    else:
        spread = jnp.sum(projection * (cov @ projection), axis=0)
    return projection.T @ mean, spread


__all__ = [
    "inducing_inputs",
    "inducing_projection",
    "initial_inducing",
    "projected_marginals",
    "whitened_projection",
]
