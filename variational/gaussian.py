"""Gaussian variational families: mean-field (diagonal) and full-rank (Cholesky)."""

from __future__ import annotations

import math
from typing import Any, Self, final

import jax
import jax.numpy as jnp

from inferax.pytree import pytree_dataclass, static_field
from inferax.typing import PRNGKey
from inferax.variational.family import AbstractFamily, standard_normal_logpdf


@final
@pytree_dataclass
class MeanfieldGaussian(AbstractFamily):
    """``q(x) = N(x; mu, diag(sigma^2))``, with ``sigma = exp(log_scale)``.

    Args:
      params: ``{"loc": (dim,), "log_scale": (dim,)}``, or ``None`` before ``init``.
      init_scale: every ``sigma`` at ``init``, which puts ``mu`` at the position given.
    """

    params: Any = None
    init_scale: float = static_field(default=0.1)

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        del rng_key
        log_scale = jnp.full_like(position, math.log(self.init_scale))
        return MeanfieldGaussian({"loc": position, "log_scale": log_scale}, self.init_scale)

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
      init_scale: ``L = init_scale * I`` at ``init``, which puts ``mu`` at the position given.
    """

    params: Any = None
    init_scale: float = static_field(default=0.1)

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        del rng_key
        dim = position.shape[0]
        raw = jnp.diag(jnp.full((dim,), math.log(self.init_scale), position.dtype))
        return FullrankGaussian({"loc": position, "scale_tril": raw}, self.init_scale)

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
    at ``variational.initial_location(target)``, the Cholesky factor ``init_scale * I``.

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
]
