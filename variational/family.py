"""The interface every variational family implements."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import ClassVar, Self

import jax
import jax.numpy as jnp

from inferax.typing import PRNGKey


def standard_normal_logpdf(eps: jax.Array) -> jax.Array:
    """``log N(eps; 0, I)`` of one point."""
    return -0.5 * jnp.sum(eps**2) - 0.5 * eps.size * math.log(2 * math.pi)


class AbstractFamily(abc.ABC):
    """A variational family: a pytree of parameters plus pure functions of one point.

    A family is built unfitted (``params`` is ``None``) from its configuration, for example
    ``variational.meanfield_gaussian()``; ``init`` gives it parameters for a target of
    ``dim`` unconstrained coordinates. Its methods work on one unbatched point in the flat
    unconstrained space; callers batch with ``vmap``.
    """

    params: object

    float64: ClassVar[bool] = False
    """Whether the family computes in float64 whatever the global setting; ``fit`` and
    ``Approximation`` then run its programs with ``jax.enable_x64``."""

    @abc.abstractmethod
    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        """The family with parameters, for a flat ``position`` (shape ``(dim,)``) near
        which the target has mass."""

    @abc.abstractmethod
    def sample_and_log_prob(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        """One draw ``x ~ q`` and ``log q(x)``."""

    @abc.abstractmethod
    def log_prob(self, x: jax.Array) -> jax.Array:
        """``log q(x)`` at one point."""

    def sample(self, rng_key: PRNGKey) -> jax.Array:
        """One draw ``x ~ q``."""
        return self.sample_and_log_prob(rng_key)[0]

    def sample_and_log_weight(
        self, rng_key: PRNGKey, logdensity_fn: Callable[[jax.Array], jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """One draw and its importance log weight ``log p(x) - log q(x)``. Stochastic
        flows, which have no tractable ``log q``, override this."""
        x, log_q = self.sample_and_log_prob(rng_key)
        return x, logdensity_fn(x) - log_q

    def check_target(self, target) -> None:
        """Raises if the family was built for a target other than ``target`` (a MixFlow
        holds its target); other families fit any target."""
        del target

    def trained_part(self) -> AbstractFamily:
        """What ``fit`` optimises: the family itself, unless its only trained part is a
        family inside it (a MixFlow's reference)."""
        return self

    def with_trained_part(self, part: AbstractFamily) -> AbstractFamily:
        """The family with ``part``, as ``trained_part`` returns it, fitted."""
        return part

    @property
    def initialized(self) -> bool:
        """Whether the family has parameters."""
        return self.params is not None

    def check_initialized(self) -> None:
        """Raises unless the family has parameters."""
        if self.params is None:
            raise ValueError(
                f"{type(self).__name__} has no parameters yet: call .init(rng_key, position) "
                "or fit it with inferax.variational.fit"
            )


__all__ = ["AbstractFamily", "standard_normal_logpdf"]
