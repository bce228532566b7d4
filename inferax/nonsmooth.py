"""The nonsmooth-term interface that ``Target.nonsmooth`` holds.

A nonsmooth term ``g`` is the part of a negative log density that a sampler handles through
a proximity operator instead of a gradient. Proximal and mirror samplers read it; every
other kernel refuses a target that has one. The terms themselves (``L1``, ``Box``,
``Simplex``, ...) live in ``inferax.samplers.nonsmooth``.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import jax

if TYPE_CHECKING:
    from inferax.chain_starts import Domain


class AbstractNonsmooth(abc.ABC):
    """A convex, possibly nonsmooth term ``g`` of the negative log density.

    Methods act on one unbatched point, a 1-D array; callers batch with ``vmap``.
    """

    @abc.abstractmethod
    def value(self, x: jax.Array) -> jax.Array:
        """``g(x)``, a scalar; ``+inf`` outside the set of an indicator."""

    @abc.abstractmethod
    def prox(self, x: jax.Array, lam) -> jax.Array:
        """The Euclidean proximity operator ``argmin_p g(p) + |p - x|^2 / (2 lam)``."""

    def domain(self) -> Domain | None:
        """The open set inside the term's finite set where default chain starts are drawn
        (an indicator's box or simplex), or ``None`` when ``g`` is finite everywhere."""
        return None

    def bregman_prox(self, x: jax.Array, lam, mirror, side: str = "left") -> jax.Array:
        """The left (``argmin_p g(p) + D_phi(p, x) / lam``) or right
        (``argmin_p g(p) + D_phi(x, p) / lam``) Bregman proximity operator of ``lam g`` for
        the mirror map ``phi``, where a closed form exists.

        Raises:
          NotImplementedError: no closed form for this term, mirror and side, so that a
            kernel can refuse the pair before anything compiles.
        """
        raise NotImplementedError(
            f"{type(self).__name__}: no closed-form {side} Bregman proximity operator for "
            f"the mirror {type(mirror).__name__}"
        )


__all__ = ["AbstractNonsmooth"]
