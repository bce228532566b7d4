"""Langevin samplers: the unadjusted Langevin algorithm and its Metropolis-adjusted version.

Both step with one integrator, blackjax's Euler-Maruyama solver of the overdamped Langevin
diffusion ``dx = grad log p(x) dt + sqrt(2) dW`` (``inferax.samplers.integrators``): MALA
through ``blackjax.mala``, ULA here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from inferax.kernel import AbstractKernel, check_step_size
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import DiffusionState, overdamped_langevin
from inferax.target import Target
from inferax.typing import ArrayTree, PRNGKey


class ULAState(NamedTuple):
    """A ULA chain: its position, with the log density and gradient cached there."""

    position: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree


class ULAInfo(NamedTuple):
    """``diverging`` marks a step whose end point had a non-finite log density or gradient;
    the chain then stays where it was."""

    diverging: jax.Array


def ula_algorithm(logdensity_fn, step_size) -> SamplingAlgorithm:
    """The unadjusted Langevin algorithm as a blackjax ``SamplingAlgorithm``.

    ``x' = x + h grad log p(x) + sqrt(2h) xi``, with no accept-reject step, so the chain
    targets ``p`` only up to an O(h) bias.

    Args:
      logdensity_fn: the log density.
      step_size: the step ``h``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``ULAState`` and ``ULAInfo``.
    """
    logdensity_and_grad = jax.value_and_grad(logdensity_fn)
    integrator = overdamped_langevin(logdensity_and_grad)

    def init(position, rng_key=None) -> ULAState:
        del rng_key
        logdensity, grad = logdensity_and_grad(position)
        return ULAState(position, logdensity, grad)

    def step(rng_key: PRNGKey, state: ULAState) -> tuple[ULAState, ULAInfo]:
        moved = integrator(rng_key, DiffusionState(*state), step_size)
        new_state, diverging = guarded(
            ULAState(*moved), state, (moved.logdensity, moved.logdensity_grad)
        )
        return new_state, ULAInfo(diverging=diverging)

    return SamplingAlgorithm(init, step)


@dataclasses.dataclass(frozen=True)
class AbstractLangevinKernel(AbstractKernel):
    """A Langevin kernel on the target's log density with one fixed step size ``h`` > 0,
    checked when the config is made. Warmup is plain burn-in at that step."""

    step_size: float

    def __post_init__(self):
        check_step_size(self)


@dataclasses.dataclass(frozen=True)
class ula(AbstractLangevinKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The unadjusted Langevin algorithm: ``x' = x + h grad log p(x) + sqrt(2h) xi``.

    It never rejects, so its draws carry an O(h) bias in the step size ``h``; it is the
    cheapest gradient sampler and the base of the stochastic-gradient ones. A step whose end
    point has a non-finite log density is undone and counted in ``diverging``. Warmup is
    plain burn-in.

    Args:
      step_size: the step ``h`` > 0.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> post = inferax.sample(target, inferax.samplers.ula(step_size=0.05), jax.random.key(0),
      ...                       num_chains=2, num_warmup=100, num_samples=100, progress=False)
      >>> int(post.stats["diverging"].sum())
      0

    References:
      Roberts, Tweedie, "Exponential convergence of Langevin distributions and their
      discrete approximations", Bernoulli 1996.
    """

    name = "ula"

    def build(self, target: Target) -> SamplingAlgorithm:
        return ula_algorithm(target.logdensity, self.step_size)

    def sample_stats(self, state: Any, info: ULAInfo, tuned: dict) -> dict[str, jax.Array]:
        return {
            "lp": state.logdensity,
            "diverging": info.diverging,
            "step_size": jnp.asarray(self.step_size, dtype=state.logdensity.dtype),
        }


@dataclasses.dataclass(frozen=True)
class mala(AbstractLangevinKernel):  # noqa: N801  (lower case, like blackjax.mala)
    """The Metropolis-adjusted Langevin algorithm: blackjax's MALA.

    A Langevin step ``x + h grad log p(x) + sqrt(2h) xi`` is proposed and accepted with the
    Metropolis-Hastings probability, so the chain targets ``p`` exactly. A proposal with a
    non-finite log density is rejected and counted in ``diverging``. Warmup is plain burn-in
    at the given step size.

    Args:
      step_size: the step ``h`` > 0.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> post = inferax.sample(target, inferax.samplers.mala(step_size=0.5), jax.random.key(0),
      ...                       num_chains=2, num_warmup=100, num_samples=100, progress=False)
      >>> 0.0 < float(post.stats["acceptance_rate"].mean()) <= 1.0
      True

    References:
      Roberts, Tweedie, "Exponential convergence of Langevin distributions and their
      discrete approximations", Bernoulli 1996.
    """

    name = "mala"

    def build(self, target: Target) -> SamplingAlgorithm:
        return blackjax.mala(target.logdensity, self.step_size)

    def sample_stats(self, state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
        return {
            "lp": state.logdensity,
            "acceptance_rate": info.acceptance_rate,
            # blackjax rejects a proposal whose log density is not finite with acceptance
            # probability 0; a finite proposal only gets exactly 0 when its energy error
            # underflows exp (above about 100 in float32), a divergence by any measure.
            "diverging": info.acceptance_rate == 0.0,
            "step_size": jnp.asarray(self.step_size, dtype=state.logdensity.dtype),
        }
