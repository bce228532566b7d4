"""Likelihoods ``p(y | f)`` for the sparse GPs: Gaussian, Bernoulli (probit and logit),
Poisson and Student-t, with the expectations under a Gaussian ``q(f)`` that the ELBOs need.

The Gaussian expectation is closed form; the others use Gauss-Hermite quadrature with
``NUM_QUADRATURE`` points."""

from __future__ import annotations

import abc
import math
from typing import final

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, ndtr

from inferax.pytree import pytree_dataclass, static_field
from inferax.variational.gp.covariances import positive, softplus_inverse

NUM_QUADRATURE = 20
"""Gauss-Hermite points for expectations that have no closed form."""

_LOG_2PI = math.log(2.0 * math.pi)


def gauss_hermite_expectation(fn, mean: jax.Array, var: jax.Array) -> jax.Array:
    """``E[fn(f)]`` for ``f ~ N(mean, var)`` elementwise, by Gauss-Hermite quadrature with
    ``NUM_QUADRATURE`` points; ``fn`` maps an array of ``f`` values of ``mean``'s shape to
    the same shape."""
    nodes, weights = np.polynomial.hermite.hermgauss(NUM_QUADRATURE)
    nodes = jnp.asarray(nodes * math.sqrt(2.0), mean.dtype)
    weights = jnp.asarray(weights / math.sqrt(math.pi), mean.dtype)
    sd = jnp.sqrt(jnp.maximum(var, 0.0))
    values = jax.vmap(lambda z: fn(mean + sd * z))(nodes)
    return jnp.tensordot(weights, values, axes=1)


class AbstractLikelihood(abc.ABC):
    """``p(y | f)`` for one latent value per observation."""

    gaussian: bool = False

    @abc.abstractmethod
    def log_prob(self, y: jax.Array, f: jax.Array) -> jax.Array:
        """``log p(y_i | f_i)`` elementwise."""

    def check_y(self, y) -> None:  # noqa: B027 (most likelihoods take any real y)
        """Raises if ``y`` is outside the likelihood's support."""

    def expected_log_prob(self, y: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        """``E_{f ~ N(mean, var)} log p(y | f)`` elementwise."""
        return gauss_hermite_expectation(lambda f: self.log_prob(y, f), mean, var)

    def predictive_log_prob(self, y: jax.Array, mean: jax.Array, var: jax.Array) -> jax.Array:
        """``log E_{f ~ N(mean, var)} p(y | f)`` elementwise (the NLPD's negative)."""
        nodes, weights = np.polynomial.hermite.hermgauss(NUM_QUADRATURE)
        nodes = jnp.asarray(nodes * math.sqrt(2.0), mean.dtype)
        log_w = jnp.asarray(np.log(weights / math.sqrt(math.pi)), mean.dtype)
        sd = jnp.sqrt(jnp.maximum(var, 0.0))
        values = jax.vmap(lambda z: self.log_prob(y, mean + sd * z))(nodes)
        return jax.nn.logsumexp(values + log_w.reshape((-1,) + (1,) * (values.ndim - 1)), axis=0)

    @abc.abstractmethod
    def predict(self, mean: jax.Array, var: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The mean and variance of ``y`` when ``f ~ N(mean, var)``."""


@final
@pytree_dataclass
class Gaussian(AbstractLikelihood):
    """``y ~ N(f, sigma^2)``, ``sigma^2 = softplus(raw_variance)``."""

    raw_variance: jax.Array
    gaussian: bool = static_field(default=True)

    @property
    def variance(self) -> jax.Array:
        return jax.nn.softplus(self.raw_variance)

    def log_prob(self, y, f):
        return -0.5 * (_LOG_2PI + jnp.log(self.variance) + (y - f) ** 2 / self.variance)

    def expected_log_prob(self, y, mean, var):
        return -0.5 * (_LOG_2PI + jnp.log(self.variance) + ((y - mean) ** 2 + var) / self.variance)

    def predictive_log_prob(self, y, mean, var):
        total = var + self.variance
        return -0.5 * (_LOG_2PI + jnp.log(total) + (y - mean) ** 2 / total)

    def predict(self, mean, var):
        return mean, var + self.variance


@final
@pytree_dataclass
class Bernoulli(AbstractLikelihood):
    """``y ~ Bernoulli(link(f))``, ``y`` in ``{0, 1}``; ``link`` is ``"probit"`` (the normal
    CDF) or ``"logit"`` (the logistic sigmoid)."""

    link: str = static_field(default="probit")

    def _log_p_and_log_q(self, f):
        if self.link == "probit":
            return jax.scipy.special.log_ndtr(f), jax.scipy.special.log_ndtr(-f)
        return jax.nn.log_sigmoid(f), jax.nn.log_sigmoid(-f)

    def check_y(self, y):
        if not bool(np.all((np.asarray(y) == 0) | (np.asarray(y) == 1))):
            raise ValueError("y: a Bernoulli likelihood takes labels in {0, 1}")

    def log_prob(self, y, f):
        log_p, log_q = self._log_p_and_log_q(f)
        return jnp.where(y > 0.5, log_p, log_q)

    def predict(self, mean, var):
        if self.link == "probit":
            p = ndtr(mean / jnp.sqrt(1.0 + var))
        else:
            p = gauss_hermite_expectation(jax.nn.sigmoid, mean, var)
        return p, p * (1.0 - p)


@final
@pytree_dataclass
class Poisson(AbstractLikelihood):
    """``y ~ Poisson(exp(f))``."""

    def check_y(self, y):
        y = np.asarray(y)
        if not bool(np.all((y >= 0) & (y == np.round(y)))):
            raise ValueError("y: a Poisson likelihood takes non-negative integer counts")

    def log_prob(self, y, f):
        return y * f - jnp.exp(f) - gammaln(y + 1.0)

    def expected_log_prob(self, y, mean, var):
        # E[exp(f)] is closed form; only log y! needs no expectation.
        return y * mean - jnp.exp(mean + 0.5 * var) - gammaln(y + 1.0)

    def predict(self, mean, var):
        rate_mean = jnp.exp(mean + 0.5 * var)
        rate_var = (jnp.exp(var) - 1.0) * jnp.exp(2.0 * mean + var)
        return rate_mean, rate_mean + rate_var


@final
@pytree_dataclass
class StudentT(AbstractLikelihood):
    """``y = f + scale * t_df``; ``df`` fixed, ``scale = softplus(raw_scale)``."""

    raw_scale: jax.Array
    df: float = static_field(default=4.0)

    @property
    def scale(self) -> jax.Array:
        return jax.nn.softplus(self.raw_scale)

    def log_prob(self, y, f):
        df = self.df
        z = (y - f) / self.scale
        return (
            gammaln(0.5 * (df + 1.0))
            - gammaln(0.5 * df)
            - 0.5 * math.log(df * math.pi)
            - jnp.log(self.scale)
            - 0.5 * (df + 1.0) * jnp.log1p(z**2 / df)
        )

    def predict(self, mean, var):
        noise = self.scale**2 * self.df / (self.df - 2.0) if self.df > 2 else jnp.inf
        return mean, var + noise


def gaussian(variance=1.0) -> Gaussian:
    """A Gaussian likelihood with noise variance ``variance``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from inferax.variational import gp
      >>> lik = gp.gaussian(0.5)
      >>> round(float(lik.expected_log_prob(jnp.array(1.0), jnp.array(0.0),
      ...                                   jnp.array(0.5))), 4)
      -2.0724
    """
    return Gaussian(softplus_inverse(positive("variance", variance)))


def bernoulli(link: str = "probit") -> Bernoulli:
    """A Bernoulli likelihood with a ``"probit"`` or ``"logit"`` link."""
    if link not in ("probit", "logit"):
        raise ValueError(f"link must be 'probit' or 'logit', got {link!r}")
    return Bernoulli(link)


def poisson() -> Poisson:
    """A Poisson likelihood with the log link."""
    return Poisson()


def student_t(scale=1.0, df: float = 4.0) -> StudentT:
    """A Student-t likelihood with ``df`` degrees of freedom (fixed) and a trained scale."""
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    return StudentT(softplus_inverse(positive("scale", scale)), float(df))


__all__ = [
    "NUM_QUADRATURE",
    "AbstractLikelihood",
    "Bernoulli",
    "Gaussian",
    "Poisson",
    "StudentT",
    "bernoulli",
    "gauss_hermite_expectation",
    "gaussian",
    "poisson",
    "student_t",
]
