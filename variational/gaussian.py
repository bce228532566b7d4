"""Gaussian variational families: mean-field (diagonal) and full-rank (Cholesky)."""

from __future__ import annotations

from typing import Any, Self, final

import jax
import jax.numpy as jnp

from inferax.pytree import pytree_dataclass
from inferax.typing import PRNGKey
from inferax.variational.family import AbstractFamily, standard_normal_logpdf


@final
@pytree_dataclass
class MeanfieldGaussian(AbstractFamily):
    """``q(x) = N(x; mu, diag(sigma^2))``, with ``sigma = exp(log_scale)``.

    Args:
      params: ``{"loc": (dim,), "log_scale": (dim,)}``, or ``None`` before ``init``.
    """

    params: Any = None

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        del rng_key
        return MeanfieldGaussian({"loc": position, "log_scale": jnp.zeros_like(position)})

    def sample_and_log_prob(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        self.check_initialized()
        loc, log_scale = self.params["loc"], self.params["log_scale"]
        eps = jax.random.normal(rng_key, loc.shape, loc.dtype)
        return loc + jnp.exp(log_scale) * eps, standard_normal_logpdf(eps) - jnp.sum(log_scale)

    def log_prob(self, x: jax.Array) -> jax.Array:
        self.check_initialized()
        loc, log_scale = self.params["loc"], self.params["log_scale"]
        return standard_normal_logpdf((x - loc) * jnp.exp(-log_scale)) - jnp.sum(log_scale)


@final
@pytree_dataclass
class FullrankGaussian(AbstractFamily):
    """``q(x) = N(x; mu, L L^T)``, ``L`` lower triangular with diagonal ``exp(raw_ii)``.

    Args:
      params: ``{"loc": (dim,), "scale_tril": (dim, dim)}`` (unconstrained: the strictly
        lower triangle and the log of the diagonal), or ``None`` before ``init``.
    """

    params: Any = None

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        del rng_key
        dim = position.shape[0]
        return FullrankGaussian(
            {"loc": position, "scale_tril": jnp.zeros((dim, dim), position.dtype)}
        )

    def scale_tril(self) -> jax.Array:
        """The Cholesky factor ``L``."""
        raw = self.params["scale_tril"]
        return jnp.tril(raw, -1) + jnp.diag(jnp.exp(jnp.diag(raw)))

    def sample_and_log_prob(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        self.check_initialized()
        loc = self.params["loc"]
        eps = jax.random.normal(rng_key, loc.shape, loc.dtype)
        log_det = jnp.sum(jnp.diag(self.params["scale_tril"]))
        return loc + self.scale_tril() @ eps, standard_normal_logpdf(eps) - log_det

    def log_prob(self, x: jax.Array) -> jax.Array:
        self.check_initialized()
        eps = jax.scipy.linalg.solve_triangular(
            self.scale_tril(), x - self.params["loc"], lower=True
        )
        return standard_normal_logpdf(eps) - jnp.sum(jnp.diag(self.params["scale_tril"]))


def meanfield_gaussian() -> MeanfieldGaussian:
    """A mean-field Gaussian family, started at the target's ``init`` with unit scales.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import variational
      >>> q = variational.meanfield_gaussian().init(jax.random.key(0), jnp.zeros(2))
      >>> round(float(q.log_prob(jnp.zeros(2))), 4)
      -1.8379
    """
    return MeanfieldGaussian()


def fullrank_gaussian() -> FullrankGaussian:
    """A full-rank Gaussian family, started at the target's ``init`` with identity
    covariance.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import variational
      >>> q = variational.fullrank_gaussian().init(jax.random.key(0), jnp.zeros(3))
      >>> q.scale_tril().shape
      (3, 3)
    """
    return FullrankGaussian()


__all__ = ["FullrankGaussian", "MeanfieldGaussian", "fullrank_gaussian", "meanfield_gaussian"]
