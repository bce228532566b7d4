"""Covariance functions for the sparse GPs: RBF and Matérn 1/2, 3/2, 5/2 with ARD
lengthscales, and their sums and products. Hyperparameters are positive through softplus.

These are GP covariances (``AbstractCovariance``), not MCMC kernels (``inferax.kernel``);
the constructors keep the field's names (``rbf``, ``matern32``, ...)."""

from __future__ import annotations

import abc
import math
from typing import final

import jax
import jax.numpy as jnp

from inferax.pytree import pytree_dataclass


def softplus_inverse(x) -> jax.Array:
    """``y`` with ``softplus(y) = x``, for ``x > 0``."""
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    return x + jnp.log(-jnp.expm1(-x))


def positive(name: str, value) -> jax.Array:
    """``value`` as a float array, or a ``ValueError`` naming ``name`` unless every entry is
    positive and finite."""
    value = jnp.asarray(value, dtype=jnp.result_type(float))
    if not bool(jnp.all(jnp.isfinite(value))) or not bool(jnp.all(value > 0)):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


class AbstractCovariance(abc.ABC):
    """A covariance function ``k(x, x')`` of ``D``-dimensional inputs, with matrix forms."""

    @abc.abstractmethod
    def matrix(self, x1: jax.Array, x2: jax.Array) -> jax.Array:
        """The ``(n1, n2)`` cross-covariance of inputs ``x1 (n1, D)`` and ``x2 (n2, D)``."""

    @abc.abstractmethod
    def diag(self, x: jax.Array) -> jax.Array:
        """``k(x_i, x_i)`` for each row of ``x (n, D)``."""

    @property
    @abc.abstractmethod
    def lengthscales(self) -> jax.Array:
        """ARD lengthscales (or a scalar): the input scaling used for neighbour searches."""

    def __add__(self, other: AbstractCovariance) -> Sum:
        return Sum(self, other)

    def __mul__(self, other: AbstractCovariance) -> Product:
        return Product(self, other)


class AbstractStationaryCovariance(AbstractCovariance):
    """``variance * g(r)``, ``r`` the distance between inputs scaled by the lengthscales."""

    raw_lengthscale: jax.Array
    raw_variance: jax.Array

    @property
    def lengthscales(self) -> jax.Array:
        return jax.nn.softplus(self.raw_lengthscale)

    @property
    def variance(self) -> jax.Array:
        return jax.nn.softplus(self.raw_variance)

    @abc.abstractmethod
    def profile(self, squared_distance: jax.Array) -> jax.Array:
        """``g`` as a function of the squared scaled distance; ``g(0) = 1``."""

    def matrix(self, x1: jax.Array, x2: jax.Array) -> jax.Array:
        scale = jnp.broadcast_to(self.lengthscales, x1.shape[-1:])[None, :]
        a, b = x1 / scale, x2 / scale
        sq = jnp.sum(a**2, axis=-1)[:, None] + jnp.sum(b**2, axis=-1)[None, :] - 2.0 * a @ b.T
        return self.variance * self.profile(jnp.maximum(sq, 0.0))

    def diag(self, x: jax.Array) -> jax.Array:
        return jnp.full(x.shape[:1], self.variance, dtype=x.dtype)


def _distance(squared_distance: jax.Array) -> jax.Array:
    # sqrt has an infinite derivative at 0: keep the gradient finite on the diagonal.
    positive = squared_distance > 1e-30
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared_distance, 1.0)), 0.0)


@final
@pytree_dataclass
class RBF(AbstractStationaryCovariance):
    """``k(x, x') = s^2 exp(-r^2 / 2)``, the squared exponential."""

    raw_lengthscale: jax.Array
    raw_variance: jax.Array

    def profile(self, squared_distance):
        return jnp.exp(-0.5 * squared_distance)


@final
@pytree_dataclass
class Matern12(AbstractStationaryCovariance):
    """``k(x, x') = s^2 exp(-r)``, the exponential kernel."""

    raw_lengthscale: jax.Array
    raw_variance: jax.Array

    def profile(self, squared_distance):
        return jnp.exp(-_distance(squared_distance))


@final
@pytree_dataclass
class Matern32(AbstractStationaryCovariance):
    """``k(x, x') = s^2 (1 + sqrt(3) r) exp(-sqrt(3) r)``."""

    raw_lengthscale: jax.Array
    raw_variance: jax.Array

    def profile(self, squared_distance):
        r = math.sqrt(3.0) * _distance(squared_distance)
        return (1.0 + r) * jnp.exp(-r)


@final
@pytree_dataclass
class Matern52(AbstractStationaryCovariance):
    """``k(x, x') = s^2 (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)``."""

    raw_lengthscale: jax.Array
    raw_variance: jax.Array

    def profile(self, squared_distance):
        r = math.sqrt(5.0) * _distance(squared_distance)
        return (1.0 + r + r**2 / 3.0) * jnp.exp(-r)


@final
@pytree_dataclass
class Sum(AbstractCovariance):
    """``k1 + k2``."""

    first: AbstractCovariance
    second: AbstractCovariance

    def matrix(self, x1, x2):
        return self.first.matrix(x1, x2) + self.second.matrix(x1, x2)

    def diag(self, x):
        return self.first.diag(x) + self.second.diag(x)

    @property
    def lengthscales(self):
        return jnp.minimum(self.first.lengthscales, self.second.lengthscales)


@final
@pytree_dataclass
class Product(AbstractCovariance):
    """``k1 * k2``, elementwise."""

    first: AbstractCovariance
    second: AbstractCovariance

    def matrix(self, x1, x2):
        return self.first.matrix(x1, x2) * self.second.matrix(x1, x2)

    def diag(self, x):
        return self.first.diag(x) * self.second.diag(x)

    @property
    def lengthscales(self):
        return jnp.minimum(self.first.lengthscales, self.second.lengthscales)


_STATIONARY = {"rbf": RBF, "matern12": Matern12, "matern32": Matern32, "matern52": Matern52}


def _stationary(kind: str, lengthscale, variance) -> AbstractStationaryCovariance:
    lengthscale = positive("lengthscale", lengthscale)
    if lengthscale.ndim > 1:
        raise ValueError(
            f"lengthscale must be a scalar or a vector of ARD lengthscales, "
            f"got shape {lengthscale.shape}"
        )
    variance = positive("variance", variance)
    if variance.ndim != 0:
        raise ValueError(f"variance must be a scalar, got shape {variance.shape}")
    return _STATIONARY[kind](softplus_inverse(lengthscale), softplus_inverse(variance))


def rbf(lengthscale=1.0, variance=1.0) -> RBF:
    """The squared-exponential kernel ``s^2 exp(-|x - x'|^2_l / 2)``.

    Args:
      lengthscale: a scalar, or a vector of ``D`` ARD lengthscales.
      variance: the signal variance ``s^2``.

    Returns:
      The kernel, a pytree whose leaves are the softplus-inverse hyperparameters.

    Examples:
      >>> import jax.numpy as jnp
      >>> from inferax.variational import gp
      >>> k = gp.rbf(lengthscale=jnp.array([1.0, 2.0]), variance=2.0)
      >>> round(float(k.matrix(jnp.zeros((1, 2)), jnp.ones((1, 2)))[0, 0]), 4)
      1.0705
    """
    return _stationary("rbf", lengthscale, variance)


def matern12(lengthscale=1.0, variance=1.0) -> Matern12:
    """The Matérn 1/2 (exponential) kernel; arguments as ``rbf``."""
    return _stationary("matern12", lengthscale, variance)


def matern32(lengthscale=1.0, variance=1.0) -> Matern32:
    """The Matérn 3/2 kernel; arguments as ``rbf``."""
    return _stationary("matern32", lengthscale, variance)


def matern52(lengthscale=1.0, variance=1.0) -> Matern52:
    """The Matérn 5/2 kernel; arguments as ``rbf``."""
    return _stationary("matern52", lengthscale, variance)


__all__ = [
    "RBF",
    "AbstractCovariance",
    "AbstractStationaryCovariance",
    "Matern12",
    "Matern32",
    "Matern52",
    "Product",
    "Sum",
    "matern12",
    "matern32",
    "matern52",
    "positive",
    "rbf",
    "softplus_inverse",
]
