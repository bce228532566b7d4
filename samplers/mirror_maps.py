"""Mirror maps: Legendre functions ``phi`` whose gradient carries a constrained support onto
the whole space, for mirror and Bregman Langevin samplers.

Each map is a pytree dataclass whose settings are Python floats held as static fields
(hashable, so a kernel config holding one stays a static argument; the pytree has no leaves)
with

- ``value(x)``: ``phi(x)``;
- ``grad(x)``: ``grad phi``, from the primal domain onto the dual space;
- ``grad_conj(y)``: ``grad phi*``, its inverse;
- ``hess(x)``: the Hessian of ``phi``; its diagonal for the separable maps, a matrix for
  ``SimplexEntropy`` (``is_diagonal`` says which);
- ``hess_sqrt(x)``: a factor ``S`` with ``S S^T = hess(x)`` (the elementwise square root of
  the diagonal; a Cholesky factor for ``SimplexEntropy``);
- ``in_domain(x)``: whether ``x`` lies in the open domain; ``domain`` describes it, and
  ``support()`` gives it as an ``inferax.chain_starts.Domain``, where chains start;
- ``dual_log_hess(y)`` (separable maps): the log of the Hessian's diagonal at the primal
  point of the dual point ``y``, computed from ``y`` so that it stays finite where that
  point is too close to a wall to be told from it in floating point.

Methods act on one unbatched point, a 1-D array.

| map | domain | grad phi |
|---|---|---|
| ``Burg()`` | ``x > 0`` | ``-1/x`` |
| ``Entropy()`` | ``x > 0`` | ``log x`` |
| ``FermiDirac(lo, hi)`` | ``lo < x < hi`` | ``logit((x - lo)/(hi - lo))`` |
| ``LogBarrierBox(lo, hi)`` | ``lo < x < hi`` | ``1/(hi - x) - 1/(x - lo)`` |
| ``Hypentropy(beta)`` | all of R | ``arcsinh(x / beta)`` |
| ``SimplexEntropy()`` | ``x > 0, sum x < 1`` | ``log x - log(1 - sum x)`` |
| ``SimplexLogBarrier()`` | ``x > 0, sum x < 1`` | ``1/(1 - sum x) - 1/x`` |
"""

from __future__ import annotations

import abc
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from inferax.chain_starts import Domain
from inferax.kernel import AbstractSetting
from inferax.pytree import pytree_dataclass, static_field


class AbstractMirrorMap(AbstractSetting, abc.ABC):
    """A Legendre function ``phi`` on an open convex domain."""

    is_diagonal: ClassVar[bool] = True
    domain: ClassVar[str]

    @abc.abstractmethod
    def value(self, x: jax.Array) -> jax.Array:
        """``phi(x)``."""

    @abc.abstractmethod
    def grad(self, x: jax.Array) -> jax.Array:
        """``grad phi(x)``: the dual point."""

    @abc.abstractmethod
    def grad_conj(self, y: jax.Array) -> jax.Array:
        """``grad phi*(y)``: the primal point whose dual point is ``y``."""

    @abc.abstractmethod
    def hess(self, x: jax.Array) -> jax.Array:
        """The Hessian of ``phi``: its diagonal, or the matrix when not ``is_diagonal``."""

    @abc.abstractmethod
    def hess_sqrt(self, x: jax.Array) -> jax.Array:
        """A factor ``S`` with ``S S^T = hess(x)`` (a diagonal, or a matrix)."""

    @abc.abstractmethod
    def in_domain(self, x: jax.Array) -> jax.Array:
        """True where ``x`` lies in the open domain of ``phi``."""

    @abc.abstractmethod
    def support(self) -> Domain:
        """The open domain, where default chain starts are drawn."""

    def hess_matvec(self, x: jax.Array, v: jax.Array) -> jax.Array:
        """``hess(x) @ v``."""
        h = self.hess(x)
        return h * v if self.is_diagonal else h @ v

    def hess_sqrt_matvec(self, x: jax.Array, v: jax.Array) -> jax.Array:
        """``hess_sqrt(x) @ v``: Gaussian noise with covariance ``hess(x)`` from ``v``."""
        s = self.hess_sqrt(x)
        return s * v if self.is_diagonal else s @ v

    def bregman_divergence(self, p: jax.Array, x: jax.Array) -> jax.Array:
        """``D_phi(p, x) = phi(p) - phi(x) - <grad phi(x), p - x>``."""
        return self.value(p) - self.value(x) - jnp.vdot(self.grad(x), p - x)


class AbstractSeparableMirrorMap(AbstractMirrorMap):
    """``phi(x) = sum_i phi_1(x_i)`` on a box: its Hessian is diagonal."""

    @abc.abstractmethod
    def bounds(self) -> tuple[float, float]:
        """The closed interval each coordinate's domain is the interior of."""

    def in_domain(self, x):
        lo, hi = self.bounds()
        return jnp.all((x > lo) & (x < hi))

    def support(self):
        return Domain(*self.bounds())

    def hess_sqrt(self, x):
        return jnp.sqrt(self.hess(x))

    def dual_log_hess(self, y: jax.Array) -> jax.Array:
        """``log hess phi(grad phi*(y))``, elementwise."""
        return jnp.log(self.hess(self.grad_conj(y)))


class AbstractIntervalMirrorMap(AbstractSeparableMirrorMap):
    """A separable mirror map whose domain is the box ``lo < x_i < hi``, with the bounds
    checked when the map is made."""

    lo: float
    hi: float

    domain = "lo < x < hi"

    def __post_init__(self):
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(
                f"{type(self).__name__}: need finite lo < hi, got lo={self.lo}, hi={self.hi}"
            )

    def bounds(self):
        return self.lo, self.hi

    @abc.abstractmethod
    def wall_distances(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(x - lo, hi - x)`` at ``x = grad phi*(y)``, computed from ``y``: accurate where
        ``x`` itself has rounded onto a wall."""


@pytree_dataclass
class Burg(AbstractSeparableMirrorMap):
    """``phi(x) = -sum log x_i`` on the positive orthant: the log barrier.

    Its geometry is scale-invariant (``hess = 1/x^2``), which suits densities that pile up
    at 0 such as a Gamma with shape below 1.
    """

    domain = "x > 0"

    def bounds(self):
        return 0.0, float("inf")

    def value(self, x):
        return -jnp.sum(jnp.log(x))

    def grad(self, x):
        return -1.0 / x

    def grad_conj(self, y):
        return -1.0 / y

    def hess(self, x):
        return 1.0 / x**2

    def hess_sqrt(self, x):
        return 1.0 / jnp.abs(x)

    def dual_log_hess(self, y):
        return 2.0 * jnp.log(jnp.abs(y))


@pytree_dataclass
class Entropy(AbstractSeparableMirrorMap):
    """``phi(x) = sum x_i log x_i - x_i`` on the positive orthant (Boltzmann-Shannon)."""

    domain = "x > 0"

    def bounds(self):
        return 0.0, float("inf")

    def value(self, x):
        return jnp.sum(x * jnp.log(x) - x)

    def grad(self, x):
        return jnp.log(x)

    def grad_conj(self, y):
        return jnp.exp(y)

    def hess(self, x):
        return 1.0 / x

    def dual_log_hess(self, y):
        return -y


@pytree_dataclass
class FermiDirac(AbstractIntervalMirrorMap):
    """The Fermi-Dirac entropy on the box ``lo < x < hi``:
    ``phi(x) = w sum u_i log u_i + (1 - u_i) log(1 - u_i)``, ``u = (x - lo)/w``,
    ``w = hi - lo``; ``grad phi`` is the logit of ``u`` and ``grad phi*`` the sigmoid.

    Args:
      lo: the lower bound, a float.
      hi: the upper bound, a float > lo.
    """

    lo: float = static_field(default=0.0)
    hi: float = static_field(default=1.0)

    def _u(self, x):
        return (x - self.lo) / (self.hi - self.lo)

    def value(self, x):
        u = self._u(x)
        return (self.hi - self.lo) * jnp.sum(u * jnp.log(u) + (1.0 - u) * jnp.log1p(-u))

    def grad(self, x):
        u = self._u(x)
        return jnp.log(u) - jnp.log1p(-u)

    def grad_conj(self, y):
        return self.lo + (self.hi - self.lo) * jax.nn.sigmoid(y)

    def hess(self, x):
        u = self._u(x)
        return 1.0 / ((self.hi - self.lo) * u * (1.0 - u))

    def wall_distances(self, y):
        w = self.hi - self.lo
        return w * jax.nn.sigmoid(y), w * jax.nn.sigmoid(-y)

    def dual_log_hess(self, y):
        # 1/(w u (1 - u)) with u = sigmoid(y): finite for any y, where u rounds to 0 or 1.
        return jax.nn.softplus(y) + jax.nn.softplus(-y) - jnp.log(self.hi - self.lo)


@pytree_dataclass
class LogBarrierBox(AbstractIntervalMirrorMap):
    """The log barrier of the box: ``phi(x) = -sum log(x_i - lo) + log(hi - x_i)``.

    ``grad phi*`` solves a quadratic in closed form, in the form that does not cancel.

    Args:
      lo: the lower bound, a float.
      hi: the upper bound, a float > lo.
    """

    lo: float = static_field(default=0.0)
    hi: float = static_field(default=1.0)

    def value(self, x):
        return -jnp.sum(jnp.log(x - self.lo) + jnp.log(self.hi - x))

    def grad(self, x):
        return 1.0 / (self.hi - x) - 1.0 / (x - self.lo)

    def grad_conj(self, y):
        # With a = x - lo, b = hi - x, w = a + b: 1/b - 1/a = y gives
        # a = 2w / (2 - yw + s) and b = 2w / (2 + yw + s), s = sqrt(4 + (yw)^2).
        w = self.hi - self.lo
        yw = y * w
        s = jnp.sqrt(4.0 + yw**2)
        from_lo = self.lo + 2.0 * w / (2.0 - yw + s)
        from_hi = self.hi - 2.0 * w / (2.0 + yw + s)
        return jnp.where(y <= 0.0, from_lo, from_hi)

    def hess(self, x):
        return 1.0 / (x - self.lo) ** 2 + 1.0 / (self.hi - x) ** 2

    def wall_distances(self, y):
        # Neither distance cancels: see grad_conj.
        w = self.hi - self.lo
        yw = y * w
        s = jnp.sqrt(4.0 + yw**2)
        return 2.0 * w / (2.0 - yw + s), 2.0 * w / (2.0 + yw + s)

    def dual_log_hess(self, y):
        # log(1/a^2 + 1/b^2) = -2 log(near) + log1p((near/far)^2), a and b the distances.
        a, b = self.wall_distances(y)
        near, far = jnp.minimum(a, b), jnp.maximum(a, b)
        return -2.0 * jnp.log(near) + jnp.log1p((near / far) ** 2)


@pytree_dataclass
class Hypentropy(AbstractSeparableMirrorMap):
    """The hyperbolic entropy on all of R:
    ``phi(x) = sum x_i arcsinh(x_i / beta) - sqrt(x_i^2 + beta^2) + beta``.

    It is Euclidean (``hess = 1/beta``) near 0 and entropy-like far from it; its Bregman
    prox of an L1 term has a dead zone where the prox is exactly 0.

    Args:
      beta: the scale > 0 where the geometry turns from Euclidean to entropic.

    References:
      Ghai, Hazan, Singer, "Exponentiated gradient meets gradient descent", ALT 2020.
    """

    beta: float = static_field(default=1.0)

    domain = "all of R"

    def __post_init__(self):
        if not (np.isfinite(self.beta) and self.beta > 0):
            raise ValueError(f"Hypentropy: beta must be finite and > 0, got {self.beta}")

    def bounds(self):
        return float("-inf"), float("inf")

    def in_domain(self, x):
        return jnp.all(jnp.isfinite(x))

    def value(self, x):
        b = self.beta
        return jnp.sum(x * jnp.arcsinh(x / b) - jnp.sqrt(x**2 + b**2) + b)

    def grad(self, x):
        return jnp.arcsinh(x / self.beta)

    def grad_conj(self, y):
        return self.beta * jnp.sinh(y)

    def hess(self, x):
        return 1.0 / jnp.sqrt(x**2 + self.beta**2)

    def hess_sqrt(self, x):
        return (x**2 + self.beta**2) ** -0.25

    def dual_log_hess(self, y):
        # 1/sqrt(x^2 + beta^2) = 1/(beta cosh y), with log cosh y written not to overflow.
        magnitude = jnp.abs(y)
        log_cosh = magnitude + jnp.log1p(jnp.exp(-2.0 * magnitude)) - jnp.log(2.0)
        return -jnp.log(self.beta) - log_cosh


@pytree_dataclass
class SimplexEntropy(AbstractMirrorMap):
    """The entropy of the probability simplex in its d-1 free coordinates:
    ``phi(x) = sum_{i<d} x_i log x_i + x_d log x_d`` with ``x_d = 1 - sum x``.

    ``grad phi(x)_i = log(x_i / x_d)`` (the additive log-ratio), ``grad phi*`` is the
    softmax of ``(y, 0)`` without its last entry, and ``hess = diag(1/x) + 1/x_d``.
    """

    is_diagonal = False
    domain = "x > 0 and sum x < 1"

    @staticmethod
    def _last(x):
        return 1.0 - jnp.sum(x)

    def value(self, x):
        last = self._last(x)
        return jnp.sum(x * jnp.log(x)) + last * jnp.log(last)

    def grad(self, x):
        return jnp.log(x) - jnp.log(self._last(x))

    def grad_conj(self, y):
        full = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])
        return jax.nn.softmax(full)[:-1]

    def hess(self, x):
        return jnp.diag(1.0 / x) + 1.0 / self._last(x)

    def hess_sqrt(self, x):
        return jnp.linalg.cholesky(self.hess(x))

    def in_domain(self, x):
        return jnp.all(x > 0.0) & (self._last(x) > 0.0)

    def support(self):
        return Domain(simplex=True)


SIMPLEX_BISECTIONS = 100
"""Bisection steps on ``log x_d`` in ``SimplexLogBarrier.grad_conj``: enough to pin it to
the last bit in float64 over the whole positive range."""


@pytree_dataclass
class SimplexLogBarrier(AbstractMirrorMap):
    """The log barrier of the probability simplex in its d-1 free coordinates:
    ``phi(x) = -sum_{i<d} log x_i - log x_d`` with ``x_d = 1 - sum x``.

    ``grad phi(x)_i = 1/x_d - 1/x_i`` and ``hess = diag(1/x^2) + 1/x_d^2``. Its geometry is
    scale-invariant at every wall, as ``Burg``'s is on the orthant, which suits densities
    that pile up against a face (a Dirichlet with a parameter below 1), where the entropy's
    steps, of size ``sqrt(h / x)`` in the log, overshoot. ``grad phi*`` solves
    ``x_d + sum_i x_d / (1 - y_i x_d) = 1`` for ``x_d`` by bisection on ``log x_d``.
    """

    is_diagonal = False
    domain = "x > 0 and sum x < 1"

    @staticmethod
    def _last(x):
        return 1.0 - jnp.sum(x)

    def value(self, x):
        return -jnp.sum(jnp.log(x)) - jnp.log(self._last(x))

    def grad(self, x):
        return 1.0 / self._last(x) - 1.0 / x

    def grad_conj(self, y):
        return self.dual_point(y)[:-1]

    def dual_point(self, y: jax.Array) -> jax.Array:
        """All ``d`` coordinates of ``grad phi*(y)``, the last one solved for first."""
        finfo = jnp.finfo(y.dtype)
        # x_i = x_d / (1 - y_i x_d) > 0 needs x_d < 1 / max(y); and x_d < 1.
        top = jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.max(y), 1.0))

        def excess(log_last):
            last = jnp.exp(log_last)
            return last + jnp.sum(last / (1.0 - y * last)) - 1.0

        def bisect(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            above = excess(mid) > 0.0
            return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

        lo, hi = jax.lax.fori_loop(
            0, SIMPLEX_BISECTIONS, bisect, (jnp.log(finfo.tiny), jnp.log(top))
        )
        # One Newton step from the bracketed root: it is exact to first order, so its
        # derivative is the implicit one, d x_d / dy = -(dF/dy) / (dF/dx_d).
        last = jax.lax.stop_gradient(jnp.exp(0.5 * (lo + hi)))
        denominators = 1.0 - y * last
        excess_at = last + jnp.sum(last / denominators) - 1.0
        slope = 1.0 + jnp.sum(1.0 / denominators**2)
        last = last - excess_at / slope
        free = last / (1.0 - y * last)
        return jnp.concatenate([free, last[None]])

    def shifted_reciprocals(self, reciprocals: jax.Array, shift: jax.Array) -> jax.Array:
        """``1/x'`` over all ``d`` coordinates, for the ``x'`` with
        ``grad phi(x') = grad phi(x) + shift``, given ``1/x`` over all ``d``.

        ``1/x'_i = 1/x_i - shift_i + D`` (``shift_d = 0``) with the scalar ``D`` that puts
        ``x'`` on the simplex, found by bisection on ``(max(shift - 1/x), that + d]``. The
        dual ``1/x_d - 1/x_i`` itself would lose ``x_i`` near the last wall, where
        ``1/x_d`` dwarfs ``1/x_i``; the reciprocals keep it.
        """
        base = reciprocals - jnp.concatenate([shift, jnp.zeros((1,), shift.dtype)])
        lo = -jnp.min(base)
        hi = lo + base.shape[0]

        def bisect(_, bounds):
            lo, hi = bounds
            mid = 0.5 * (lo + hi)
            above = jnp.sum(1.0 / (base + mid)) > 1.0
            return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

        lo, hi = jax.lax.fori_loop(0, SIMPLEX_BISECTIONS, bisect, (lo, hi))
        return base + hi

    def hess(self, x):
        return jnp.diag(1.0 / x**2) + 1.0 / self._last(x) ** 2

    def hess_sqrt(self, x):
        return jnp.linalg.cholesky(self.hess(x))

    def in_domain(self, x):
        return jnp.all(x > 0.0) & (self._last(x) > 0.0)

    def support(self):
        return Domain(simplex=True)


__all__ = [
    "SIMPLEX_BISECTIONS",
    "SimplexLogBarrier",
    "AbstractMirrorMap",
    "AbstractSeparableMirrorMap",
    "Burg",
    "Entropy",
    "FermiDirac",
    "Hypentropy",
    "LogBarrierBox",
    "SimplexEntropy",
]
