"""Gaussian variational families: mean-field (diagonal) and full-rank (Cholesky)."""

from __future__ import annotations

import math
from typing import Any, Self, final

import jax
import jax.numpy as jnp

from inferax.pytree import pytree_dataclass, static_field
from inferax.typing import PRNGKey
from inferax.variational.family import AbstractFamily, standard_normal_logpdf


def softplus_inverse(y) -> jax.Array:
    """The ``raw`` with ``softplus(raw) = y``, for ``y > 0``: ``y + log(-expm1(-y))``, which
    neither overflows for large ``y`` nor loses digits for small."""
    y = jnp.asarray(y)
    return y + jnp.log(-jnp.expm1(-y))


@final
@pytree_dataclass
class MeanfieldGaussian(AbstractFamily):
    """``q(x) = N(x; mu, diag(sigma^2))``, with ``sigma = softplus(raw_scale)``.

    The standard deviations are the softplus of their parameters, as in NumPyro's
    ``AutoNormal`` (``constraints.softplus_positive``): an optimiser's step of a given size
    moves a large ``sigma`` by a bounded amount, where ``exp`` would move it in proportion
    to itself.

    Args:
      params: ``{"loc": (dim,), "raw_scale": (dim,)}``, or ``None`` before ``init``; build
        one from standard deviations with ``MeanfieldGaussian.from_scale``.
      init_scale: every ``sigma`` at ``init``, which puts ``mu`` at the position given.
    """

    params: Any = None
    init_scale: float = static_field(default=0.1)

    @classmethod
    def from_scale(cls, loc, scale) -> MeanfieldGaussian:
        """The family with mean ``loc`` and standard deviations ``scale`` (both ``(dim,)``)."""
        loc = jnp.asarray(loc)
        raw = softplus_inverse(jnp.asarray(scale, loc.dtype))
        return cls({"loc": loc, "raw_scale": jnp.broadcast_to(raw, loc.shape)})

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        del rng_key
        raw = jnp.full_like(position, softplus_inverse(self.init_scale))
        return MeanfieldGaussian({"loc": position, "raw_scale": raw}, self.init_scale)

    def scale(self) -> jax.Array:
        """The standard deviations ``sigma``."""
        return jax.nn.softplus(self.params["raw_scale"])

    def sample_and_log_prob(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        self.check_initialized()
        loc, scale = self.params["loc"], self.scale()
        eps = jax.random.normal(rng_key, loc.shape, loc.dtype)
        return loc + scale * eps, standard_normal_logpdf(eps) - jnp.sum(jnp.log(scale))

    def log_prob(self, x: jax.Array) -> jax.Array:
        self.check_initialized()
        loc, scale = self.params["loc"], self.scale()
        return standard_normal_logpdf((x - loc) / scale) - jnp.sum(jnp.log(scale))


@final
@pytree_dataclass
class FullrankGaussian(AbstractFamily):
    """``q(x) = N(x; mu, L L^T)`` with ``L = diag(sigma) C``: ``sigma = softplus(raw_scale)``
    the standard deviations, ``C`` the Cholesky factor of a correlation matrix.

    ``C`` is ``I + strictly_lower(raw_tril)`` with each row scaled to unit length, so the
    marginal standard deviations are ``sigma`` whatever the correlations. An optimiser such
    as Adam moves every one of the ``dim (dim - 1) / 2`` off-diagonal entries by about its
    learning rate a step, noise included; with ``L``'s entries as parameters that noise adds
    up, row by row, to marginal variances far wider than the posterior's once ``dim`` is in
    the hundreds. Here it can only blur correlations, and the entropy term pulls them back.
    NumPyro's ``AutoMultivariateNormal`` (``constraints.scaled_unit_lower_cholesky``) scales
    a unit lower triangle by softplus standard deviations, without the normalisation.

    Args:
      params: ``{"loc": (dim,), "raw_scale": (dim,), "raw_tril": (dim, dim)}`` (only the
        strict lower triangle of ``raw_tril`` is used), or ``None`` before ``init``.
      init_scale: ``L = init_scale * I`` at ``init``, which puts ``mu`` at the position given.
    """

    params: Any = None
    init_scale: float = static_field(default=0.1)

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        del rng_key
        dim = position.shape[0]
        params = {
            "loc": position,
            "raw_scale": jnp.full((dim,), softplus_inverse(self.init_scale), position.dtype),
            "raw_tril": jnp.zeros((dim, dim), position.dtype),
        }
        return FullrankGaussian(params, self.init_scale)

    def scale(self) -> jax.Array:
        """The marginal standard deviations ``sigma``."""
        return jax.nn.softplus(self.params["raw_scale"])

    def correlation_tril(self) -> tuple[jax.Array, jax.Array]:
        """``C``, the Cholesky factor of the correlation matrix, and ``log det C``."""
        raw = self.params["raw_tril"]
        unit = jnp.tril(raw, -1) + jnp.eye(raw.shape[0], dtype=raw.dtype)
        norms = jnp.sqrt(jnp.sum(unit**2, axis=1))
        return unit / norms[:, None], -jnp.sum(jnp.log(norms))

    def scale_tril(self) -> jax.Array:
        """The Cholesky factor ``L = diag(sigma) C`` of the covariance."""
        return self.scale()[:, None] * self.correlation_tril()[0]

    def log_det(self) -> jax.Array:
        """``log det L``."""
        return jnp.sum(jnp.log(self.scale())) + self.correlation_tril()[1]

    def sample_and_log_prob(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        self.check_initialized()
        loc = self.params["loc"]
        eps = jax.random.normal(rng_key, loc.shape, loc.dtype)
        corr, log_det_corr = self.correlation_tril()
        scale = self.scale()
        log_det = jnp.sum(jnp.log(scale)) + log_det_corr
        return loc + scale * (corr @ eps), standard_normal_logpdf(eps) - log_det

    def log_prob(self, x: jax.Array) -> jax.Array:
        self.check_initialized()
        eps = jax.scipy.linalg.solve_triangular(
            self.scale_tril(), x - self.params["loc"], lower=True
        )
        return standard_normal_logpdf(eps) - self.log_det()


def check_init_scale(init_scale) -> float:
    """``init_scale`` as a float, or a ``ValueError`` naming it unless finite and positive."""
    if isinstance(init_scale, bool) or not isinstance(init_scale, int | float):
        raise TypeError(f"init_scale must be a number, got {type(init_scale).__name__}")
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"init_scale must be finite and positive, got {init_scale!r}")
    return float(init_scale)


def meanfield_gaussian(*, init_scale: float = 0.1) -> MeanfieldGaussian:
    """A mean-field Gaussian family.

    ``variational.fit`` starts it where NumPyro's ``AutoNormal`` starts: the mean at
    ``variational.initial_location(target)`` (the prior median in unconstrained space for a
    NumPyro model, ``target.init`` otherwise), every standard deviation ``init_scale``.

    Args:
      init_scale: the standard deviations at the start (NumPyro's ``init_scale``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import variational
      >>> q = variational.meanfield_gaussian(init_scale=1.0)
      >>> q = q.init(jax.random.key(0), jnp.zeros(2))
      >>> round(float(q.log_prob(jnp.zeros(2))), 4)
      -1.8379
    """
    return MeanfieldGaussian(init_scale=check_init_scale(init_scale))


def fullrank_gaussian(*, init_scale: float = 0.1) -> FullrankGaussian:
    """A full-rank Gaussian family.

    ``variational.fit`` starts it where NumPyro's ``AutoMultivariateNormal`` starts: the mean
    at ``variational.initial_location(target)``, the Cholesky factor ``init_scale * I``
    (standard deviations ``init_scale``, no correlation).

    Args:
      init_scale: the standard deviations at the start (NumPyro's ``init_scale``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import variational
      >>> q = variational.fullrank_gaussian().init(jax.random.key(0), jnp.zeros(3))
      >>> q.scale_tril().shape
      (3, 3)
    """
    return FullrankGaussian(init_scale=check_init_scale(init_scale))


__all__ = [
    "FullrankGaussian",
    "MeanfieldGaussian",
    "check_init_scale",
    "fullrank_gaussian",
    "meanfield_gaussian",
    "softplus_inverse",
]
