"""Stan's window adaptation, stepped one transition at a time.

blackjax ships the pieces: dual averaging for the step size, Welford estimates of the
inverse mass matrix, and Stan's schedule of fast and slow windows. ``blackjax.window_adaptation``
runs them in one scan that cannot be paused; here they are composed into a
``WarmupAlgorithm``, so that ``inferax.sample`` runs warmup in compiled chunks with a
progress bar, and can save and resume it between chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.mass_matrix import MassMatrixAdaptationState, mass_matrix_adaptation
from blackjax.adaptation.step_size import (
    DualAveragingAdaptationState,
    dual_averaging_adaptation,
    find_reasonable_step_size,
)
from blackjax.adaptation.window_adaptation import build_schedule
from blackjax.base import SamplingAlgorithm
from jax.flatten_util import ravel_pytree

from inferax.kernel import WarmupAlgorithm, stepwise_warmup

REASONABLE_ACCEPTANCE = 0.8
"""The acceptance rate of a one-step proposal that the step-size search aims to cross, as in
NumPyro's ``find_reasonable_step_size``."""


def _clip_log_step_size(log_step_size: jax.Array) -> jax.Array:
    """Keeps ``exp(log_step_size)`` a positive finite float: dual averaging fed only
    rejections drives the log step size towards minus infinity."""
    finfo = jnp.finfo(log_step_size.dtype)
    return jnp.clip(log_step_size, jnp.log(finfo.tiny), jnp.log(finfo.max))


class WindowAdaptationState(NamedTuple):
    """One chain's warmup: its HMC state and the adaptation in progress."""

    chain: Any
    step_size_state: DualAveragingAdaptationState
    mass_matrix_state: MassMatrixAdaptationState
    step_size: jax.Array
    inverse_mass_matrix: jax.Array


def window_schedule(num_steps: int) -> np.ndarray:
    """Stan's schedule, one ``(is_slow, is_window_end, search_step_size)`` row per step.

    ``search_step_size`` marks the first step and the step after each window's end, where a
    step size is searched for afresh, as Stan and NumPyro do. Warmups shorter than 20 steps
    only adapt the step size: blackjax's schedule needs at least that many to place a slow
    window.
    """
    schedule = np.zeros((num_steps, 3), dtype=np.int32)
    if num_steps >= 20:
        schedule[:, :2] = np.asarray(build_schedule(num_steps), dtype=np.int32).reshape(-1, 2)
    if num_steps:
        schedule[0, 2] = 1
        ends = np.flatnonzero(schedule[:-1, 1] == 1)
        schedule[ends + 1, 2] = 1
    return schedule


def window_adaptation(
    build: Callable[..., SamplingAlgorithm],
    logdensity_fn: Callable,
    *,
    is_mass_matrix_diagonal: bool,
    target_acceptance_rate: float,
    initial_step_size: float,
) -> WarmupAlgorithm:
    """Window adaptation of ``step_size`` and ``inverse_mass_matrix`` for an HMC-family kernel.

    Fast windows tune the step size by dual averaging towards ``target_acceptance_rate``;
    slow windows also accumulate Welford estimates of the posterior covariance, which become
    the inverse mass matrix at each window's end, where dual averaging restarts. The final
    step size is dual averaging's running average.

    Where the schedule says so (the first step, and the step after each window's end), the
    step size is first searched for by doubling and halving until a one-step HMC proposal's
    acceptance crosses 0.8 (blackjax's ``find_reasonable_step_size``), and dual averaging
    restarts from it, as in Stan and NumPyro. The step size is kept within the float type's
    positive range. Together these keep a chain whose first proposals all fail (a
    non-finite density far out) from ending warmup with a step size of zero.

    Args:
      build: ``build(step_size=..., inverse_mass_matrix=...) -> SamplingAlgorithm``.
      logdensity_fn: the log density, for the step-size search's one-step proposals.
      is_mass_matrix_diagonal: adapt a diagonal (True) or dense inverse mass matrix.
      target_acceptance_rate: the acceptance rate dual averaging aims for.
      initial_step_size: where dual averaging starts.

    Returns:
      A ``WarmupAlgorithm`` whose ``step`` takes one row of ``window_schedule``.

    References:
      Hoffman, Gelman, "The No-U-Turn Sampler", JMLR 2014 (dual averaging).
      Stan Development Team, "Stan Reference Manual", HMC algorithm parameters.
    """
    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance_rate)
    mm_init, mm_update, mm_final = mass_matrix_adaptation(is_mass_matrix_diagonal)

    def init(position) -> WindowAdaptationState:
        num_dims = ravel_pytree(position)[0].shape[0]
        mass_matrix_state = mm_init(num_dims)
        step_size = jnp.asarray(initial_step_size, dtype=ravel_pytree(position)[0].dtype)
        algorithm = build(
            step_size=step_size, inverse_mass_matrix=mass_matrix_state.inverse_mass_matrix
        )
        return WindowAdaptationState(
            algorithm.init(position),
            da_init(step_size),
            mass_matrix_state,
            step_size,
            mass_matrix_state.inverse_mass_matrix,
        )

    def prepare(rng_key, warmup_state: WindowAdaptationState, schedule_entry):
        search_key, step_key = jax.random.split(rng_key)
        warmup_state = jax.lax.cond(
            schedule_entry[2] == 1,
            lambda state: _restart_from_reasonable_step_size(state, search_key),
            lambda state: state,
            warmup_state,
        )
        return warmup_state, step_key

    def parameters(warmup_state: WindowAdaptationState) -> dict:
        return {
            "step_size": warmup_state.step_size,
            "inverse_mass_matrix": warmup_state.inverse_mass_matrix,
        }

    def adapt(
        warmup_state: WindowAdaptationState, chain, info, schedule_entry
    ) -> WindowAdaptationState:
        is_slow, is_window_end = schedule_entry[0], schedule_entry[1]
        # A transition that hit a non-finite energy reports a NaN acceptance rate; dual
        # averaging reads it as a rejection, which shrinks the step.
        acceptance_rate = jnp.nan_to_num(info.acceptance_rate, nan=0.0)
        step_size_state = da_update(warmup_state.step_size_state, acceptance_rate)
        step_size_state = step_size_state._replace(
            log_step_size=_clip_log_step_size(step_size_state.log_step_size)
        )
        mass_matrix_state = jax.lax.cond(
            is_slow == 1,
            lambda state: mm_update(state, chain.position),
            lambda state: state,
            warmup_state.mass_matrix_state,
        )
        step_size = jnp.exp(step_size_state.log_step_size)
        inverse_mass_matrix = warmup_state.inverse_mass_matrix

        def end_window(carry):
            # Dual averaging restarts from its last iterate, as in Stan and NumPyro, not from
            # its running average: a chain still sliding out of a region of huge curvature
            # has step sizes that grow by orders of magnitude within a window, and the
            # average lags far behind them.
            step_size_state, mass_matrix_state, step_size, _ = carry
            mass_matrix_state = mm_final(mass_matrix_state)
            return (
                da_init(step_size),
                mass_matrix_state,
                step_size,
                mass_matrix_state.inverse_mass_matrix,
            )

        step_size_state, mass_matrix_state, step_size, inverse_mass_matrix = jax.lax.cond(
            is_window_end == 1,
            end_window,
            lambda carry: carry,
            (step_size_state, mass_matrix_state, step_size, inverse_mass_matrix),
        )
        return WindowAdaptationState(
            chain, step_size_state, mass_matrix_state, step_size, inverse_mass_matrix
        )

    def _restart_from_reasonable_step_size(warmup_state, rng_key):
        inverse_mass_matrix = warmup_state.inverse_mass_matrix

        def one_step_kernel(step_size):
            return blackjax.hmc(logdensity_fn, step_size, inverse_mass_matrix, 1).step

        step_size = find_reasonable_step_size(
            rng_key,
            one_step_kernel,
            warmup_state.chain,
            warmup_state.step_size,
            target_accept=REASONABLE_ACCEPTANCE,
        )
        step_size = jnp.exp(_clip_log_step_size(jnp.log(step_size)))
        return warmup_state._replace(step_size=step_size, step_size_state=da_init(step_size))

    def final(warmup_state: WindowAdaptationState):
        # Dual averaging's running average exists once it has seen a step; before that
        # (no warmup, or a window that ended on the last step) the current step size holds.
        averaged = warmup_state.step_size_state.step > 1
        tuned = {
            "step_size": jnp.where(
                averaged, da_final(warmup_state.step_size_state), warmup_state.step_size
            ),
            "inverse_mass_matrix": warmup_state.inverse_mass_matrix,
        }
        return warmup_state.chain, tuned

    return stepwise_warmup(build, init, prepare, parameters, adapt, final)


def window_adaptation_of(kernel, target) -> WarmupAlgorithm:
    """``window_adaptation`` for a kernel config that has ``target_acceptance_rate``,
    ``is_mass_matrix_diagonal`` and ``initial_step_size``, and whose
    ``build(target, step_size=..., inverse_mass_matrix=...)`` takes what it tunes."""
    return window_adaptation(
        lambda **tuned: kernel.build(target, **tuned),
        target.logdensity,
        is_mass_matrix_diagonal=kernel.is_mass_matrix_diagonal,
        target_acceptance_rate=kernel.target_acceptance_rate,
        initial_step_size=kernel.initial_step_size,
    )


def unit_inverse_mass_matrix(position, is_diagonal: bool) -> jax.Array:
    """The identity inverse mass matrix for ``position``'s flattened size: a vector of ones
    when diagonal, else the identity matrix. Where warmup starts."""
    num_dims = ravel_pytree(position)[0].shape[0]
    return jnp.ones(num_dims) if is_diagonal else jnp.eye(num_dims)
