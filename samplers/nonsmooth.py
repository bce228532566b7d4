"""Nonsmooth terms ``g`` of a negative log density, handled through proximity operators.

Each term is a small pytree (a frozen dataclass whose array fields are leaves) with

- ``value(x)``: ``g(x)``, ``+inf`` outside the set for an indicator;
- ``prox(x, lam)``: the Euclidean proximity operator
  ``argmin_p g(p) + |p - x|^2 / (2 lam)``;
- ``bregman_prox(x, lam, mirror, side)``: the left (``argmin_p g(p) + D_phi(p, x) / lam``) or
  right (``argmin_p g(p) + D_phi(x, p) / lam``) Bregman proximity operator of the mirror
  map ``phi``, where a closed form exists. Otherwise it raises ``NotImplementedError``, so
  that a kernel can refuse the pair before anything compiles.

Here ``D_phi(p, x) = phi(p) - phi(x) - <grad phi(x), p - x>``. Methods act on one unbatched
point, a 1-D array; callers batch with ``vmap``.

References:
  Bauschke, Dao, Lindstrom, "Regularizing with Bregman-Moreau envelopes", SIAM J. Optim. 2018.
  Condat, "A direct algorithm for 1-D total variation denoising", IEEE Signal Process.
  Lett. 2013.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp

from inferax.chain_starts import Domain
from inferax.nonsmooth import AbstractNonsmooth
from inferax.pytree import pytree_dataclass
from inferax.samplers.mirror_maps import (
    AbstractSeparableMirrorMap,
    Burg,
    Entropy,
    Hypentropy,
    SimplexEntropy,
)

SIMPLEX_TOLERANCE = 1e-6
"""``Simplex.value`` accepts sums up to ``1 + SIMPLEX_TOLERANCE``: a projection onto the
simplex lands on its face only up to rounding."""


def _check_side(side: str) -> None:
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def soft_threshold(x: jax.Array, threshold) -> jax.Array:
    """``sign(x) max(|x| - threshold, 0)``: the proximity operator of ``threshold |x|``."""
    return jnp.sign(x) * jnp.maximum(jnp.abs(x) - threshold, 0.0)


@pytree_dataclass
class L1(AbstractNonsmooth):
    """``g(x) = scale * sum |x_i|``, the Laplace (lasso) prior.

    Args:
      scale: the weight, a scalar or one per coordinate.
    """

    scale: Any = 1.0

    def value(self, x):
        return jnp.sum(self.scale * jnp.abs(x))

    def prox(self, x, lam):
        return soft_threshold(x, lam * self.scale)

    def bregman_prox(self, x, lam, mirror, side="left"):
        _check_side(side)
        t = lam * self.scale
        if isinstance(mirror, Burg | Entropy | SimplexEntropy):
            # |x| = x on the positive domain of these mirrors: a linear term.
            return Linear(self.scale * jnp.ones_like(x)).bregman_prox(x, lam, mirror, side)
        if side == "left" and isinstance(mirror, AbstractSeparableMirrorMap):
            # grad phi(p) = grad phi(x) - t sign(p): soft thresholding in the dual around
            # grad phi(0), the dual image of the kink (-inf or +inf when 0 is off the domain).
            dual = mirror.grad(x)
            lo, hi = mirror.bounds()
            kink = mirror.grad(jnp.clip(jnp.zeros_like(x), lo, hi))
            shrunk = jnp.where(
                dual > kink + t, dual - t, jnp.where(dual < kink - t, dual + t, 0.0)
            )
            inside = (dual <= kink + t) & (dual >= kink - t)
            p = mirror.grad_conj(shrunk)
            return jnp.where(inside, jnp.zeros_like(x), p)
        if side == "right" and isinstance(mirror, Hypentropy):
            # (p - x) / sqrt(p^2 + beta^2) = -t sign(p) for p != 0; p = 0 when |x| <= t beta.
            magnitude = _hypentropy_right_linear(jnp.abs(x), t, mirror.beta)
            return jnp.where(jnp.abs(x) <= t * mirror.beta, 0.0, jnp.sign(x) * magnitude)
        return super().bregman_prox(x, lam, mirror, side)


def _hypentropy_right_linear(x, t, beta):
    """The root of ``(p - x) = -t sqrt(p^2 + beta^2)`` for ``|t| < 1``."""
    one_minus = 1.0 - t**2
    return (x - t * jnp.sqrt(x**2 + one_minus * beta**2)) / one_minus


@pytree_dataclass
class Linear(AbstractNonsmooth):
    """``g(x) = <c, x>``: smooth, but useful added to another term, whose prox it shifts.

    Args:
      c: the coefficients, a scalar or one per coordinate.
    """

    c: Any

    def __add__(self, other):
        if isinstance(other, AbstractNonsmooth) and not isinstance(other, Linear | PlusLinear):
            return PlusLinear(other, self.c)
        return NotImplemented

    __radd__ = __add__

    def value(self, x):
        return jnp.sum(self.c * x)

    def prox(self, x, lam):
        return x - lam * self.c

    def bregman_prox(self, x, lam, mirror, side="left"):
        _check_side(side)
        c = self.c * jnp.ones_like(x)
        if side == "left":
            # grad phi(p) = grad phi(x) - lam c: one mirror-descent step.
            return mirror.grad_conj(mirror.grad(x) - lam * c)
        t = lam * c
        # hess phi(p) (p - x) = -lam c, solved coordinate by coordinate.
        if isinstance(mirror, Entropy):
            return x / (1.0 + t)
        if isinstance(mirror, Burg):
            return 2.0 * x / (1.0 + jnp.sqrt(1.0 + 4.0 * t * x))
        if isinstance(mirror, Hypentropy):
            return _hypentropy_right_linear(x, t, mirror.beta)
        return super().bregman_prox(x, lam, mirror, side)


@pytree_dataclass
class PlusLinear(AbstractNonsmooth):
    """``g(x) + <c, x>``: a term plus a linear one, written ``term + Linear(c)``.

    Its Euclidean prox is ``prox_g(x - lam c)``, and its left Bregman prox is the left
    Bregman prox of ``g`` at ``grad phi*(grad phi(x) - lam c)``: the linear part is a mirror
    step taken first. Both follow from the optimality condition, which is the same for
    the sum as for ``g`` with the point shifted.
    """

    term: AbstractNonsmooth
    c: Any

    def value(self, x):
        return self.term.value(x) + jnp.sum(self.c * x)

    def prox(self, x, lam):
        return self.term.prox(x - lam * self.c, lam)

    def domain(self):
        return self.term.domain()

    def bregman_prox(self, x, lam, mirror, side="left"):
        _check_side(side)
        if side == "left":
            shifted = Linear(self.c).bregman_prox(x, lam, mirror, "left")
            return self.term.bregman_prox(shifted, lam, mirror, "left")
        return super().bregman_prox(x, lam, mirror, side)


class AbstractBox(AbstractNonsmooth):
    """An indicator of a box ``[lo, hi]``: 0 inside, ``+inf`` outside."""

    @abc.abstractmethod
    def limits(self, x) -> tuple[jax.Array, jax.Array]:
        """The bounds ``(lo, hi)``, broadcast to the shape of ``x``."""

    def value(self, x):
        lo, hi = self.limits(x)
        inside = jnp.all((x >= lo) & (x <= hi))
        return jnp.where(inside, 0.0, jnp.inf).astype(jnp.result_type(x))

    def prox(self, x, lam):
        lo, hi = self.limits(x)
        return jnp.clip(x, lo, hi)

    def domain(self):
        lo, hi = self.limits(jnp.zeros(()))
        return Domain(lo, hi)

    def bregman_prox(self, x, lam, mirror, side="left"):
        _check_side(side)
        if isinstance(mirror, AbstractSeparableMirrorMap):
            # A separable D_phi(p, x) (and D_phi(x, p)) is unimodal in each p_i with its
            # minimum at x_i, so the Bregman projection onto a box clips, on both sides.
            lo, hi = self.limits(x)
            return jnp.clip(x, lo, hi)
        if isinstance(mirror, SimplexEntropy) and isinstance(self, NonNegative):
            return x  # the open simplex lies inside the orthant
        return super().bregman_prox(x, lam, mirror, side)


@pytree_dataclass
class NonNegative(AbstractBox):
    """The indicator of the orthant ``x >= 0``."""

    def limits(self, x):
        return jnp.zeros_like(x), jnp.full_like(x, jnp.inf)


@pytree_dataclass
class Box(AbstractBox):
    """The indicator of the box ``lo <= x <= hi``.

    Args:
      lo: the lower bounds, a scalar or one per coordinate.
      hi: the upper bounds.
    """

    lo: Any
    hi: Any

    def limits(self, x):
        return self.lo * jnp.ones_like(x), self.hi * jnp.ones_like(x)


@pytree_dataclass
class Simplex(AbstractNonsmooth):
    """The indicator of the simplex in free coordinates: ``x >= 0`` and ``sum x <= 1``.

    A point of the probability simplex in R^d is written by its first d-1 coordinates, the
    last being ``1 - sum x``; this is the set ``SimplexEntropy`` lives on.
    """

    def value(self, x):
        inside = jnp.all(x >= 0.0) & (jnp.sum(x) <= 1.0 + SIMPLEX_TOLERANCE)
        return jnp.where(inside, 0.0, jnp.inf).astype(jnp.result_type(x))

    def domain(self):
        return Domain(simplex=True)

    def prox(self, x, lam):
        clipped = jnp.maximum(x, 0.0)
        return jnp.where(jnp.sum(clipped) <= 1.0, clipped, _project_onto_face(x))

    def bregman_prox(self, x, lam, mirror, side="left"):
        _check_side(side)
        if isinstance(mirror, SimplexEntropy):
            return x  # the mirror's domain is the open simplex
        if isinstance(mirror, Entropy):
            # Both KL projections onto {sum p <= 1} rescale: p = x / sum x when sum x > 1.
            total = jnp.sum(x)
            return jnp.where(total > 1.0, x / total, x)
        return super().bregman_prox(x, lam, mirror, side)


def _project_onto_face(x):
    """The Euclidean projection onto ``{p >= 0, sum p = 1}`` (sort and threshold)."""
    u = jnp.sort(x)[::-1]
    cumulative = jnp.cumsum(u) - 1.0
    index = jnp.arange(1, x.shape[0] + 1, dtype=x.dtype)
    rho = jnp.sum(u - cumulative / index > 0)
    tau = cumulative[rho - 1] / rho.astype(x.dtype)
    return jnp.maximum(x - tau, 0.0)


@pytree_dataclass
class TotalVariation1D(AbstractNonsmooth):
    """``g(x) = scale * sum |x_{i+1} - x_i|``, the 1-D total variation.

    Its Euclidean prox is exact, by Condat's direct algorithm (a taut-string method): a
    ``lax.while_loop`` of O(1) iterations that restarts after each segment it closes:
    O(n^2) in the worst case, about linear in ``n`` in practice (Condat's analysis).

    Args:
      scale: the weight.
    """

    scale: Any = 1.0

    def value(self, x):
        return self.scale * jnp.sum(jnp.abs(jnp.diff(x)))

    def prox(self, x, lam):
        return tv1d_denoise(x, lam * self.scale)


def tv1d_denoise(y: jax.Array, lam) -> jax.Array:
    """``argmin_x |x - y|^2 / 2 + lam sum |x_{i+1} - x_i|``, by Condat's direct algorithm.

    The algorithm runs along the signal keeping the range ``[vmin, vmax]`` of the level the
    current segment may take, and the running sums ``umin``, ``umax`` of the dual
    variable; when the range cannot be kept, a segment is closed at its last feasible point
    and the run starts again after it.

    Args:
      y: the signal, a 1-D array.
      lam: the weight, > 0.

    Returns:
      The denoised signal.

    References:
      Condat, "A direct algorithm for 1-D total variation denoising", IEEE Signal Process.
      Lett. 2013.
    """
    n = y.shape[0]
    lam = jnp.asarray(lam, y.dtype)
    index = jnp.arange(n)
    if n == 1:
        return y

    def fill(x, start, stop, level):
        # Segments close left to right and tile the signal, so each is recorded by its
        # level at its first index; the levels are spread over the segments at the end.
        del stop
        levels, starts = x
        return levels.at[start].set(level), starts.at[start].set(True)

    def at(k):
        return y[jnp.clip(k, 0, n - 1)]

    def cond(state):
        return ~state[-1]

    def body(state):
        x, k, k0, kminus, kplus, vmin, vmax, umin, umax, done = state
        last = k == n - 1

        def at_last(_):
            def down(_):
                new = kminus + 1
                return (
                    fill(x, k0, kminus, vmin),
                    new,
                    new,
                    new,
                    kplus,
                    at(new),
                    vmax,
                    lam,
                    at(new) + lam - vmax,
                    False,
                )

            def up(_):
                new = kplus + 1
                return (
                    fill(x, k0, kplus, vmax),
                    new,
                    new,
                    kminus,
                    new,
                    vmin,
                    at(new),
                    at(new) - lam - vmin,
                    -lam,
                    False,
                )

            def finish(_):
                level = vmin + umin / (k - k0 + 1).astype(y.dtype)
                return (
                    fill(x, k0, n - 1, level),
                    k,
                    k0,
                    kminus,
                    kplus,
                    vmin,
                    vmax,
                    umin,
                    umax,
                    True,
                )

            branch = jnp.where(umin < 0.0, 0, jnp.where(umax > 0.0, 1, 2))
            return jax.lax.switch(branch, (down, up, finish), None)

        def inner(_):
            next_y = at(k + 1)
            umin_ = umin + next_y - vmin
            umax_ = umax + next_y - vmax

            def negative_jump(_):
                new = kminus + 1
                return (
                    fill(x, k0, kminus, vmin),
                    new,
                    new,
                    new,
                    new,
                    at(new),
                    at(new) + 2.0 * lam,
                    lam,
                    -lam,
                    False,
                )

            def positive_jump(_):
                new = kplus + 1
                return (
                    fill(x, k0, kplus, vmax),
                    new,
                    new,
                    new,
                    new,
                    at(new) - 2.0 * lam,
                    at(new),
                    lam,
                    -lam,
                    False,
                )

            def no_jump(_):
                k1 = k + 1
                width = (k1 - k0 + 1).astype(y.dtype)
                raise_min = umin_ >= lam
                vmin_ = jnp.where(raise_min, vmin + (umin_ - lam) / width, vmin)
                umin2 = jnp.where(raise_min, lam, umin_)
                kminus_ = jnp.where(raise_min, k1, kminus)
                lower_max = umax_ <= -lam
                vmax_ = jnp.where(lower_max, vmax + (umax_ + lam) / width, vmax)
                umax2 = jnp.where(lower_max, -lam, umax_)
                kplus_ = jnp.where(lower_max, k1, kplus)
                return (x, k1, k0, kminus_, kplus_, vmin_, vmax_, umin2, umax2, False)

            branch = jnp.where(umin_ < -lam, 0, jnp.where(umax_ > lam, 1, 2))
            return jax.lax.switch(branch, (negative_jump, positive_jump, no_jump), None)

        return jax.lax.cond(last, at_last, inner, None)

    zero = jnp.asarray(0)
    segments = (jnp.zeros_like(y), jnp.zeros(n, dtype=bool))
    state = (
        segments,
        zero,
        zero,
        zero,
        zero,
        y[0] - lam,
        y[0] + lam,
        lam,
        -lam,
        jnp.asarray(False),
    )
    levels, starts = jax.lax.while_loop(cond, body, state)[0]
    owner = jax.lax.cummax(jnp.where(starts, index, 0))
    return levels[owner]


__all__ = [
    "AbstractBox",
    "AbstractNonsmooth",
    "Box",
    "L1",
    "Linear",
    "NonNegative",
    "PlusLinear",
    "Simplex",
    "TotalVariation1D",
    "soft_threshold",
    "tv1d_denoise",
]
