"""Many-chain adaptive HMC: ChEES-HMC and MEADS, blackjax's kernels and their cross-chain
adaptations, tuned from statistics pooled over every chain of the run.

Both adaptations read all chains at each warmup step, so they run where ``inferax.sample``
steps the chains together (``inferax.sharding.map_chains``: a named ``vmap`` per device,
and a ``shard_map`` over devices when ``devices=`` is given): each chain gathers the others'
proposals (``inferax.sharding.gather_chains``) and applies blackjax's batched update. Every
chain therefore holds the same adaptation state, which costs a copy per chain and no
communication beyond the gather.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.adaptation import chees_adaptation as blackjax_chees
from blackjax.adaptation import meads_adaptation as blackjax_meads
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc import dynamic_hmc, ghmc

from inferax.kernel import AbstractKernel, WarmupAlgorithm, as_number, check_step_size
from inferax.samplers.hmc import hmc_sample_stats
from inferax.sharding import chain_index, gather_chains
from inferax.target import Target

HALTON_BITS = 31
"""Bits of the Halton sequence that jitters ChEES's trajectory lengths: distinct values for
2**31 steps (the step index of a run is a 32-bit integer)."""


def _check_positive(kernel, field: str) -> None:
    value = as_number(kernel.name, field, getattr(kernel, field))
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{kernel.name}: {field} must be finite and > 0, got {value}")
    object.__setattr__(kernel, field, value)


def _check_count(kernel, field: str) -> None:
    value = getattr(kernel, field)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{kernel.name}: {field} must be an integer >= 1, got {value!r}")
    object.__setattr__(kernel, field, int(value))


def _refuse_one_chain_warmup(kernel) -> None:
    raise ValueError(
        f"{kernel.name}: the warmup tunes across chains, so it runs with all of them: use "
        "inferax.sample (which steps every chain in one program), or pass tuned values to "
        "build()"
    )


class ChEESWarmupState(NamedTuple):
    """A chain's state and the adaptation's (the same in every chain)."""

    chain: dynamic_hmc.DynamicHMCState
    adaptation: blackjax_chees.ChEESAdaptationState


@dataclasses.dataclass(frozen=True)
class chees(AbstractKernel):  # noqa: N801  (lower case, like blackjax.dynamic_hmc)
    """ChEES-HMC: HMC with a jittered trajectory length, both it and the step size tuned
    across many chains (blackjax's ``dynamic_hmc`` and ``chees_adaptation``).

    Each step integrates ``ceil(u * L)`` leapfrog steps, ``u`` from a Halton sequence shared
    by all chains and ``L`` the tuned number of steps. Warmup tunes the step size by dual
    averaging of the chains' harmonic-mean acceptance rate, and the trajectory length by
    Adam ascent on the ChEES criterion (the change in the chains' expected squared distance
    from their mean), both pooled over every chain; the identity mass matrix is used. It
    suits many chains (tens to hundreds) in one program, as on an accelerator.

    Args:
      learning_rate: Adam's learning rate for the log trajectory length.
      target_acceptance_rate: the harmonic-mean acceptance rate warmup aims for.
      decay_rate: weight of recent steps in the moving averages that are the tuned values.
      jitter_amount: the fraction of the trajectory length that is jittered, in (0, 1].
      max_leapfrog_steps: the most leapfrog steps in one trajectory.
      initial_step_size: where step-size adaptation starts.
      divergence_threshold: an energy error above this marks the transition divergent.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> post = inferax.sample(target, inferax.samplers.chees(), jax.random.key(0),
      ...                       num_chains=8, num_warmup=100, num_samples=50, progress=False)
      >>> post.draws["x"].shape
      (8, 50, 2)

    References:
      Hoffman, Radul, Sountsov, "An Adaptive-MCMC Scheme for Setting Trajectory Lengths in
      Hamiltonian Monte Carlo", 2021.
    """

    learning_rate: float = 0.025
    target_acceptance_rate: float = blackjax_chees.OPTIMAL_TARGET_ACCEPTANCE_RATE
    decay_rate: float = 0.5
    jitter_amount: float = 1.0
    max_leapfrog_steps: int = 1000
    initial_step_size: float = 0.1
    divergence_threshold: float = 1000.0
    name = "chees"

    def __post_init__(self):
        _check_positive(self, "learning_rate")
        _check_positive(self, "divergence_threshold")
        check_step_size(self, "initial_step_size")
        _check_count(self, "max_leapfrog_steps")
        for field in ("target_acceptance_rate", "decay_rate", "jitter_amount"):
            value = as_number(self.name, field, getattr(self, field))
            if not 0.0 < value <= 1.0 or (field == "target_acceptance_rate" and value == 1):
                raise ValueError(f"{self.name}: {field} must lie in (0, 1), got {value}")
            object.__setattr__(self, field, value)

    def _jitter(self, random_generator_arg):
        u = dynamic_hmc.halton_sequence(random_generator_arg, HALTON_BITS)
        return u * self.jitter_amount + (1.0 - self.jitter_amount)

    def _kernel(self):
        def integration_steps(random_generator_arg, num_leapfrog_steps):
            steps = jnp.ceil(self._jitter(random_generator_arg) * num_leapfrog_steps)
            return jnp.clip(steps, 1, self.max_leapfrog_steps).astype(jnp.int32)

        return dynamic_hmc.build_kernel(
            divergence_threshold=self.divergence_threshold,
            next_random_arg_fn=lambda i: i + 1,
            integration_steps_fn=integration_steps,
        )

    def build(self, target: Target, step_size=None, num_leapfrog_steps=None) -> SamplingAlgorithm:
        step_size = self.initial_step_size if step_size is None else step_size
        num_leapfrog_steps = 1.0 if num_leapfrog_steps is None else num_leapfrog_steps
        kernel, unit = self._kernel(), _unit_mass(target)

        def init(position):
            return dynamic_hmc.init(position, target.logdensity, jnp.int32(1))

        def step(rng_key, state):
            return kernel(
                rng_key, state, target.logdensity, step_size, unit, (num_leapfrog_steps,)
            )

        return SamplingAlgorithm(init, step)

    def sample_stats(self, state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
        return hmc_sample_stats(state, info, tuned)

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        kernel, unit = self._kernel(), _unit_mass(target)
        adaptation_init, adaptation_update = blackjax_chees.base(
            self._jitter,
            lambda i: i + 1,
            optax.adam(self.learning_rate),
            self.target_acceptance_rate,
            self.decay_rate,
            self.max_leapfrog_steps,
        )

        def init(position):
            dtype = jax.flatten_util.ravel_pytree(position)[0].dtype
            chain = dynamic_hmc.init(position, target.logdensity, jnp.int32(1))
            adaptation = adaptation_init(jnp.int32(1), jnp.asarray(self.initial_step_size, dtype))
            adaptation = jax.tree.map(lambda x: jnp.asarray(x, _dtype_like(x, dtype)), adaptation)
            return ChEESWarmupState(chain, adaptation)

        def step(rng_key, warmup_state, schedule_entry):
            del schedule_entry
            chain, adaptation = warmup_state
            num_steps = adaptation.trajectory_length / adaptation.step_size
            new_chain, info = kernel(
                rng_key, chain, target.logdensity, adaptation.step_size, unit, (num_steps,)
            )
            gathered = gather_chains(
                (info.proposal.position, info.proposal.momentum, chain.position)
                + (info.acceptance_rate, info.is_divergent)
            )
            with jax.numpy_rank_promotion("allow"):  # blackjax's batched update broadcasts
                new_adaptation = adaptation_update(adaptation, *gathered, unit)
            new_adaptation = jax.tree.map(
                lambda new, old: jnp.asarray(new, old.dtype), new_adaptation, adaptation
            )
            return ChEESWarmupState(new_chain, new_adaptation)

        def final(warmup_state):
            adaptation = warmup_state.adaptation
            log_step = adaptation.log_step_size_moving_average
            tuned = {
                "step_size": jnp.exp(log_step),
                "num_leapfrog_steps": jnp.exp(
                    adaptation.log_trajectory_length_moving_average - log_step
                ),
            }
            return warmup_state.chain, tuned

        return WarmupAlgorithm(init, step, final)

    def warmup(self, target, rng_key, position, num_steps):
        _refuse_one_chain_warmup(self)


class MEADSWarmupState(NamedTuple):
    """A chain's state and the adaptation's (the same in every chain)."""

    chain: ghmc.GHMCState
    adaptation: blackjax_meads.MEADSAdaptationState


@dataclasses.dataclass(frozen=True)
class meads(AbstractKernel):  # noqa: N801  (lower case, like blackjax.ghmc)
    """MEADS: generalized HMC (one leapfrog step, partial momentum refreshment, persistent
    non-reversible slice acceptance; blackjax's ``ghmc``) with its step size, per-coordinate
    momentum scale and damping tuned across many chains (blackjax's MEADS update).

    The chains are split into ``num_folds`` folds of consecutive chains. At warmup step
    ``t`` the parameters of fold ``(t + 1) mod K`` are computed from fold ``t mod K``'s
    positions and gradients: the step size from the largest eigenvalue of the scaled
    gradients, the damping from that of the standardised positions. After warmup each chain
    keeps its fold's values. Chains start with zero momentum.

    Args:
      num_folds: the folds K; ``num_chains`` must be a multiple of it.
      step_size_multiplier: the factor on the step-size heuristic.
      damping_slowdown: the floor on the damping in early steps.
      divergence_threshold: an energy error above this marks the transition divergent.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
      >>> post = inferax.sample(target, inferax.samplers.meads(), jax.random.key(0),
      ...                       num_chains=8, num_warmup=100, num_samples=50, progress=False)
      >>> post.draws["x"].shape
      (8, 50, 2)

    References:
      Hoffman, Sountsov, "Tuning-Free Generalized Hamiltonian Monte Carlo", 2022.
    """

    num_folds: int = 4
    step_size_multiplier: float = 0.5
    damping_slowdown: float = 1.0
    divergence_threshold: float = 1000.0
    name = "meads"

    def __post_init__(self):
        _check_count(self, "num_folds")
        _check_positive(self, "step_size_multiplier")
        _check_positive(self, "damping_slowdown")
        _check_positive(self, "divergence_threshold")

    def build(
        self, target: Target, step_size=None, momentum_inverse_scale=None, alpha=None, delta=None
    ) -> SamplingAlgorithm:
        step_size = 0.1 if step_size is None else step_size
        if momentum_inverse_scale is None:
            momentum_inverse_scale = jax.tree.map(jnp.ones_like, target.init)
        alpha = 0.5 if alpha is None else alpha
        delta = alpha / 2 if delta is None else delta
        kernel = ghmc.build_kernel(divergence_threshold=self.divergence_threshold)

        def init(position):
            return _ghmc_init(target, position)

        def step(rng_key, state):
            return kernel(
                rng_key, state, target.logdensity, step_size, momentum_inverse_scale, alpha, delta
            )

        return SamplingAlgorithm(init, step)

    def sample_stats(self, state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
        return {
            "lp": state.logdensity,
            "acceptance_rate": info.acceptance_rate,
            "diverging": info.is_divergent,
            "energy": info.energy,
            "step_size": tuned["step_size"],
        }

    def warmup_schedule(self, num_steps: int) -> np.ndarray:
        return np.arange(num_steps, dtype=np.int32)[:, None]

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        folds = self.num_folds
        kernel = ghmc.build_kernel(divergence_threshold=self.divergence_threshold)
        adaptation_init, adaptation_update = blackjax_meads.base(
            folds, self.step_size_multiplier, self.damping_slowdown
        )

        def own_fold():
            index, num_chains = chain_index()
            if num_chains % folds:
                raise ValueError(
                    f"meads: {num_chains} chains do not split into num_folds={folds} folds; "
                    f"use a multiple of {folds} chains"
                )
            return index // (num_chains // folds)

        def parameters(adaptation):
            fold = own_fold()
            return {
                "step_size": adaptation.step_size[fold],
                "momentum_inverse_scale": jax.tree.map(
                    lambda s: s[fold], adaptation.position_sigma
                ),
                "alpha": adaptation.alpha[fold],
                "delta": adaptation.delta[fold],
            }

        def init(position):
            own_fold()
            chain = _ghmc_init(target, position)
            with jax.numpy_rank_promotion("allow"):  # blackjax's batched update broadcasts
                adaptation = adaptation_init(
                    *gather_chains((chain.position, chain.logdensity_grad))
                )
            adaptation = adaptation._replace(current_iteration=jnp.int32(0))
            return MEADSWarmupState(chain, adaptation)

        def step(rng_key, warmup_state, schedule_entry):
            chain, adaptation = warmup_state
            tuned = parameters(adaptation)
            new_chain, _ = kernel(rng_key, chain, target.logdensity, **tuned)
            source = schedule_entry[0] % folds
            positions, grads = gather_chains((new_chain.position, new_chain.logdensity_grad))

            def source_fold(x):
                return x.reshape(folds, x.shape[0] // folds, *x.shape[1:])[source]

            with jax.numpy_rank_promotion("allow"):  # blackjax's batched update broadcasts
                new_adaptation = adaptation_update(
                    adaptation,
                    jax.tree.map(source_fold, positions),
                    jax.tree.map(source_fold, grads),
                    source,
                )
            new_adaptation = jax.tree.map(
                lambda new, old: jnp.asarray(new, old.dtype), new_adaptation, adaptation
            )
            return MEADSWarmupState(new_chain, new_adaptation)

        def final(warmup_state):
            return warmup_state.chain, parameters(warmup_state.adaptation)

        return WarmupAlgorithm(init, step, final)

    def warmup(self, target, rng_key, position, num_steps):
        _refuse_one_chain_warmup(self)


def _ghmc_init(target: Target, position) -> ghmc.GHMCState:
    logdensity, grad = jax.value_and_grad(target.logdensity)(position)
    momentum = jax.tree.map(jnp.zeros_like, position)
    return ghmc.GHMCState(position, momentum, logdensity, grad, jnp.zeros((), logdensity.dtype))


def _unit_mass(target: Target) -> jax.Array:
    flat = jax.flatten_util.ravel_pytree(target.init)[0]
    return jnp.ones(flat.shape, flat.dtype)


def _dtype_like(x, float_dtype):
    dtype = jnp.result_type(x)
    return float_dtype if jnp.issubdtype(dtype, jnp.floating) else dtype


__all__ = ["ChEESWarmupState", "MEADSWarmupState", "chees", "meads"]
