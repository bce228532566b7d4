"""Variational objectives: the ELBO and the importance-weighted bounds of Burda et al. and
Rainforth et al., with the reparameterisation or sticking-the-landing gradient estimator.

An objective is any pure function ``(family, rng_key, logdensity_fn) -> loss``: a scalar
to minimise (the negative bound), where ``family`` is the variational family (a pytree of
its parameters) and ``logdensity_fn`` the target's log density of one flat point. Those
here are small frozen, hashable configurations; a user's own function works the same way.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import final

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from inferax.typing import PRNGKey
from inferax.variational.family import AbstractFamily

ESTIMATORS = ("reparam", "stl")


def log_weights(
    family: AbstractFamily,
    rng_key: PRNGKey,
    num_draws: int,
    logdensity_fn: Callable[[jax.Array], jax.Array],
    estimator: str = "reparam",
) -> jax.Array:
    """``num_draws`` importance log weights ``log p(x) - log q(x)``, ``x ~ q``.

    With ``estimator="stl"`` (sticking the landing, Roeder, Wu, Duvenaud 2017) the
    parameters inside ``log q`` are held fixed, so the score-function term, which has zero
    mean and does not vanish as ``q`` approaches ``p``, drops out of the gradient; the
    draw itself still depends on the parameters.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if num_draws == 1:
        # One draw takes the key as it is: a split and a vmap of one cost a step of a small
        # fit several per cent of its time.
        return _log_weight(family, rng_key, logdensity_fn, estimator)[None]
    keys = jax.random.split(rng_key, num_draws)
    return jax.vmap(lambda k: _log_weight(family, k, logdensity_fn, estimator))(keys)


def _log_weight(family, rng_key, logdensity_fn, estimator):
    if estimator == "reparam":
        return family.sample_and_log_weight(rng_key, logdensity_fn)[1]
    frozen = jax.lax.stop_gradient(family)
    x = family.sample(rng_key)
    return logdensity_fn(x) - frozen.log_prob(x)


def _iwae_bound(log_w: jax.Array) -> jax.Array:
    """``log (1/K) sum_k w_k`` over the last axis."""
    return logsumexp(log_w, axis=-1) - math.log(log_w.shape[-1])


class AbstractObjective(abc.ABC):
    """A variational objective: ``(family, rng_key, logdensity_fn) -> loss``, the negative
    of a bound computed from ``num_draws`` importance log weights."""

    estimator: str

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
        for name, value in dataclasses.asdict(self).items():
            if name.startswith("num_") and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    @abc.abstractmethod
    def num_draws(self) -> int:
        """Draws from ``q`` per evaluation."""

    @abc.abstractmethod
    def bound(self, log_w: jax.Array) -> jax.Array:
        """The bound from ``num_draws`` log weights."""

    def __call__(self, family, rng_key: PRNGKey, logdensity_fn) -> jax.Array:
        """The loss: the negative of the bound."""
        log_w = log_weights(family, rng_key, self.num_draws, logdensity_fn, self.estimator)
        return -self.bound(log_w)


class AbstractParticleObjective(AbstractObjective):
    """An objective on ``num_particles`` draws."""

    num_particles: int

    @property
    def num_draws(self) -> int:
        return self.num_particles


class AbstractNestedObjective(AbstractObjective):
    """An objective on ``num_outer`` groups of ``num_inner`` draws."""

    num_outer: int
    num_inner: int

    @property
    def num_draws(self) -> int:
        return self.num_outer * self.num_inner

    def inner_bounds(self, log_w: jax.Array) -> jax.Array:
        """The IWAE bound of each group of ``num_inner`` draws."""
        return _iwae_bound(log_w.reshape(self.num_outer, self.num_inner))


@final
@dataclasses.dataclass(frozen=True)
class Elbo(AbstractParticleObjective):
    num_particles: int = 1
    estimator: str = "reparam"

    def bound(self, log_w):
        return jnp.mean(log_w)


@final
@dataclasses.dataclass(frozen=True)
class Iwae(AbstractParticleObjective):
    num_particles: int = 1
    estimator: str = "reparam"

    def bound(self, log_w):
        return _iwae_bound(log_w)


@final
@dataclasses.dataclass(frozen=True)
class Miwae(AbstractNestedObjective):
    num_outer: int = 1
    num_inner: int = 1
    estimator: str = "reparam"

    def bound(self, log_w):
        return jnp.mean(self.inner_bounds(log_w))


@final
@dataclasses.dataclass(frozen=True)
class Ciwae(AbstractParticleObjective):
    num_particles: int = 1
    beta: float = 0.5
    estimator: str = "reparam"

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")

    def bound(self, log_w):
        return self.beta * jnp.mean(log_w) + (1.0 - self.beta) * _iwae_bound(log_w)


@final
@dataclasses.dataclass(frozen=True)
class Piwae(AbstractNestedObjective):
    num_outer: int = 1
    num_inner: int = 1
    estimator: str = "reparam"

    def bound(self, log_w):
        miwae = jnp.mean(self.inner_bounds(log_w))
        iwae = _iwae_bound(log_w)
        # The value is IWAE_{MK}, the gradient MIWAE_{M,K}'s.
        return miwae + jax.lax.stop_gradient(iwae - miwae)


def elbo(num_particles: int = 1, estimator: str = "reparam") -> Elbo:
    """The evidence lower bound, ``E_q[log p(x) - log q(x)]``, averaged over
    ``num_particles`` draws.

    Args:
      num_particles: draws per step.
      estimator: ``"reparam"`` (the reparameterisation gradient) or ``"stl"`` (sticking
        the landing: the score term dropped).

    Returns:
      The objective, a callable ``(family, rng_key, logdensity_fn) -> loss``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import variational
      >>> q = variational.meanfield_gaussian(init_scale=1.0)
      >>> q = q.init(jax.random.key(0), jnp.zeros(2))
      >>> loss = variational.elbo(8)(q, jax.random.key(1), lambda x: -0.5 * x @ x)
      >>> round(float(loss), 4)  # q is p's normalised density: the loss is log Z's negative
      -1.8379

    References:
      Roeder, Wu, Duvenaud, "Sticking the Landing: Simple, Lower-Variance Gradient
      Estimators for Variational Inference", 2017.
    """
    return Elbo(num_particles, estimator)


def iwae(num_particles: int, estimator: str = "reparam") -> Iwae:
    """The importance-weighted bound ``E[log (1/K) sum_k w_k]``, ``K = num_particles``;
    it tightens towards ``log Z`` as ``K`` grows.

    References:
      Burda, Grosse, Salakhutdinov, "Importance Weighted Autoencoders", 2016.
    """
    return Iwae(num_particles, estimator)


def miwae(num_outer: int, num_inner: int, estimator: str = "reparam") -> Miwae:
    """The mean of ``num_outer`` (M) independent IWAE bounds of ``num_inner`` (K) draws.

    References:
      Rainforth, Kosiorek, Le, Maddison, Igl, Wood, Teh, "Tighter Variational Bounds are
      Not Necessarily Better", 2018.
    """
    return Miwae(num_outer, num_inner, estimator)


def ciwae(num_particles: int, beta: float = 0.5, estimator: str = "reparam") -> Ciwae:
    """``beta * ELBO + (1 - beta) * IWAE_K`` on the same ``K`` draws.

    References:
      Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better", 2018.
    """
    return Ciwae(num_particles, beta, estimator)


def piwae(num_outer: int, num_inner: int, estimator: str = "reparam") -> Piwae:
    """Partially importance weighted: the model is trained on ``IWAE_{MK}`` and the
    inference network on ``MIWAE_{M,K}``, from the same ``M K`` draws. A ``Target`` has no
    trainable model, so the gradient is MIWAE's and the value reported is ``IWAE_{MK}``.

    References:
      Rainforth et al., "Tighter Variational Bounds are Not Necessarily Better", 2018.
    """
    return Piwae(num_outer, num_inner, estimator)


OBJECTIVES = ("elbo", "iwae", "miwae", "ciwae", "piwae")


def resolve_objective(objective, num_particles, estimator: str):
    """An objective from ``fit``'s arguments: a name with ``num_particles`` (an int, or
    ``(M, K)`` for ``"miwae"`` and ``"piwae"``), or a callable used as it is."""
    if callable(objective):
        return objective
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES} or a callable, got {objective!r}")
    if objective in ("miwae", "piwae"):
        if isinstance(num_particles, int):
            num_particles = (1, num_particles)
        num_outer, num_inner = num_particles
        return {"miwae": Miwae, "piwae": Piwae}[objective](num_outer, num_inner, estimator)
    if not isinstance(num_particles, int):
        raise ValueError(f"objective {objective!r} takes an integer num_particles")
    return {"elbo": Elbo, "iwae": Iwae, "ciwae": Ciwae}[objective](
        num_particles, estimator=estimator
    )


__all__ = [
    "AbstractObjective",
    "Ciwae",
    "Elbo",
    "Iwae",
    "Miwae",
    "Piwae",
    "ciwae",
    "elbo",
    "iwae",
    "log_weights",
    "miwae",
    "piwae",
]
