"""Hamiltonian Monte Carlo and NUTS: blackjax's kernels, tuned by window adaptation."""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import blackjax
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm

from inferax.kernel import AbstractKernel, WarmupAlgorithm, as_number, check_step_size
from inferax.samplers.adaptation import (
    unit_inverse_mass_matrix,
    window_adaptation_of,
    window_schedule,
)
from inferax.target import Target

JITTER = 0.2
"""``hmc``'s default relative step-size jitter."""


def _check_adaptation(kernel) -> None:
    """Checks the settings every HMC kernel shares, each by type and range."""
    name = kernel.name
    rate = as_number(name, "target_acceptance_rate", kernel.target_acceptance_rate)
    if not 0.0 < rate < 1.0:
        raise ValueError(f"{name}: target_acceptance_rate must lie in (0, 1), got {rate}")
    threshold = as_number(name, "divergence_threshold", kernel.divergence_threshold)
    if not np.isfinite(threshold) or threshold <= 0:
        raise ValueError(
            f"{name}: divergence_threshold must be finite and > 0 (an energy error above it "
            f"marks a divergence), got {threshold}"
        )
    if not isinstance(kernel.is_mass_matrix_diagonal, bool | np.bool_):
        raise TypeError(
            f"{name}: is_mass_matrix_diagonal must be True or False, got "
            f"{kernel.is_mass_matrix_diagonal!r}"
        )
    object.__setattr__(kernel, "target_acceptance_rate", rate)
    object.__setattr__(kernel, "divergence_threshold", threshold)
    object.__setattr__(kernel, "is_mass_matrix_diagonal", bool(kernel.is_mass_matrix_diagonal))
    check_step_size(kernel, "initial_step_size")


def hmc_sample_stats(state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
    """The draw statistics of an HMC-family transition (blackjax's ``HMCInfo``): ``lp``,
    ``acceptance_rate``, ``diverging``, ``energy``, ``n_steps`` and ``step_size``."""
    return {
        "lp": state.logdensity,
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.is_divergent,
        "energy": info.energy,
        "n_steps": jnp.asarray(info.num_integration_steps, dtype=jnp.int32),
        "step_size": tuned["step_size"],
    }


class AbstractHMCKernel(AbstractKernel):
    """An HMC-family kernel: built from a step size and an inverse mass matrix, both tuned
    by window adaptation. Subclasses give the blackjax algorithm and their settings
    (``target_acceptance_rate``, ``is_mass_matrix_diagonal``, ``initial_step_size``)."""

    target_acceptance_rate: float
    is_mass_matrix_diagonal: bool
    initial_step_size: float

    @abc.abstractmethod
    def blackjax_algorithm(
        self, target: Target, step_size, inverse_mass_matrix
    ) -> SamplingAlgorithm:
        """blackjax's algorithm for these settings."""

    def build(self, target: Target, step_size=None, inverse_mass_matrix=None) -> SamplingAlgorithm:
        if step_size is None:
            step_size = self.initial_step_size
        if inverse_mass_matrix is None:
            inverse_mass_matrix = unit_inverse_mass_matrix(
                target.init, self.is_mass_matrix_diagonal
            )
        return self.blackjax_algorithm(target, step_size, inverse_mass_matrix)

    def warmup_schedule(self, num_steps: int) -> np.ndarray:
        return window_schedule(num_steps)

    def sample_stats(self, state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
        return hmc_sample_stats(state, info, tuned)

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        return window_adaptation_of(self, target)


@dataclasses.dataclass(frozen=True)
class nuts(AbstractHMCKernel):  # noqa: N801  (lower case, like blackjax.nuts)
    """The No-U-Turn Sampler, blackjax's multinomial NUTS, with Stan's window adaptation.

    Each step integrates Hamiltonian dynamics with the leapfrog integrator, doubling the
    trajectory until it turns back on itself or reaches ``2**max_num_doublings`` steps, and
    draws the next state from the trajectory with multinomial weights. Warmup tunes the step
    size and a diagonal (or dense) inverse mass matrix per chain.

    Args:
      max_num_doublings: the maximum tree depth.
      target_acceptance_rate: the mean acceptance rate warmup aims for.
      is_mass_matrix_diagonal: adapt a diagonal (True) or dense inverse mass matrix.
      divergence_threshold: an energy error above this marks the transition divergent.
      initial_step_size: where step-size adaptation starts.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> post = inferax.sample(target, inferax.samplers.nuts(), jax.random.key(0),
      ...                       num_chains=2, num_warmup=200, num_samples=200, progress=False)
      >>> post.draws["x"].shape
      (2, 200, 2)

    References:
      Hoffman, Gelman, "The No-U-Turn Sampler: Adaptively Setting Path Lengths in
      Hamiltonian Monte Carlo", JMLR 2014.
      Betancourt, "A Conceptual Introduction to Hamiltonian Monte Carlo", 2017.
    """

    max_num_doublings: int = 10
    target_acceptance_rate: float = 0.8
    is_mass_matrix_diagonal: bool = True
    divergence_threshold: float = 1000.0
    initial_step_size: float = 1.0

    name = "nuts"

    def __post_init__(self):
        if not isinstance(self.max_num_doublings, int) or self.max_num_doublings < 1:
            raise ValueError(
                f"nuts: max_num_doublings must be an integer >= 1, got {self.max_num_doublings}"
            )
        _check_adaptation(self)

    def blackjax_algorithm(self, target: Target, step_size, inverse_mass_matrix):
        return blackjax.nuts(
            target.logdensity,
            step_size,
            inverse_mass_matrix,
            max_num_doublings=self.max_num_doublings,
            divergence_threshold=self.divergence_threshold,
        )

    def sample_stats(self, state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
        return super().sample_stats(state, info, tuned) | {
            "tree_depth": info.num_trajectory_expansions,
            "reached_max_treedepth": info.num_trajectory_expansions >= self.max_num_doublings,
        }


@dataclasses.dataclass(frozen=True)
class hmc(AbstractHMCKernel):  # noqa: N801  (lower case, like blackjax.hmc)
    """Hamiltonian Monte Carlo with a fixed number of leapfrog steps: blackjax's kernel, with
    Stan's window adaptation of the step size and inverse mass matrix.

    Each step draws a Gaussian momentum, integrates ``num_integration_steps`` leapfrog steps,
    and accepts the end point with the Metropolis probability ``min(1, exp(-dH))``.

    Each transition's step size is the tuned one times a factor drawn uniformly from
    ``[1 - step_size_jitter, 1 + step_size_jitter]``, in warmup and sampling alike, so the
    trajectory length varies. With one fixed length, a direction whose oscillation period is
    near a multiple of it comes back almost where it started, every transition: the chain
    sticks along it, and warmup then estimates its variance too small, which makes it worse.
    Drawn independently of the state, the factor leaves the target invariant.

    Args:
      num_integration_steps: leapfrog steps per transition.
      target_acceptance_rate: the acceptance rate warmup aims for.
      is_mass_matrix_diagonal: adapt a diagonal (True) or dense inverse mass matrix.
      divergence_threshold: an energy error above this marks the transition divergent.
      initial_step_size: where step-size adaptation starts.
      step_size_jitter: the step size's relative jitter, in ``[0, 1)``; 0 for a fixed step.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> post = inferax.sample(target, inferax.samplers.hmc(num_integration_steps=10),
      ...                       jax.random.key(0), num_chains=2, num_warmup=200,
      ...                       num_samples=200, progress=False)
      >>> int(post.stats["n_steps"][0, 0])
      10

    References:
      Neal, "MCMC using Hamiltonian dynamics", Handbook of Markov Chain Monte Carlo, 2011
      (section 5.4.2.2: randomising the step size against periodic trajectories).
      Mackenzie, "An improved hybrid Monte Carlo method", Physics Letters B, 1989.
    """

    num_integration_steps: int
    target_acceptance_rate: float = 0.8
    is_mass_matrix_diagonal: bool = True
    divergence_threshold: float = 1000.0
    initial_step_size: float = 1.0
    step_size_jitter: float = JITTER

    name = "hmc"

    def __post_init__(self):
        steps = self.num_integration_steps
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"hmc: num_integration_steps must be an integer >= 1, got {steps}")
        _check_adaptation(self)
        jitter = as_number("hmc", "step_size_jitter", self.step_size_jitter)
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"hmc: step_size_jitter must lie in [0, 1), got {jitter}")
        object.__setattr__(self, "step_size_jitter", jitter)

    def blackjax_algorithm(self, target: Target, step_size, inverse_mass_matrix):
        num_steps = int(self.num_integration_steps)
        kernel = blackjax.hmc.build_kernel(divergence_threshold=self.divergence_threshold)
        jitter = self.step_size_jitter

        def init(position):
            return blackjax.hmc.init(position, target.logdensity)

        def step(rng_key, state):
            jitter_key, step_key = jax.random.split(rng_key)
            scale = jnp.asarray(step_size)
            factor = jax.random.uniform(
                jitter_key, (), scale.dtype, minval=1.0 - jitter, maxval=1.0 + jitter
            )
            return kernel(
                step_key, state, target.logdensity, scale * factor, inverse_mass_matrix, num_steps
            )

        return SamplingAlgorithm(init, step)
