"""What every stochastic-gradient kernel shares: the step-size convention, the config checks,
the info it reports, and the Langevin step on a minibatch estimate.

One step-size convention holds throughout, the one blackjax uses: a step of size ``h``
moves ``x + h * grad log p(x) + sqrt(2 h) * noise``. Each step draws its own minibatch from
``target.data`` with the step's key (``inferax.minibatch``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm

from inferax.kernel import AbstractKernel
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import DiffusionState, overdamped_langevin
from inferax.target import Target
from inferax.tree_math import tree_norm
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey


def step_size_fn(step_size, schedule=None) -> Callable[[jax.Array], jax.Array]:
    """The step size ``h_n`` at step ``n``: ``step_size`` when it is a number, ``step_size(n)``
    when it is an optax schedule, times ``schedule(n)`` when a schedule is given."""

    def at(step):
        value = step_size(step) if callable(step_size) else step_size
        if schedule is not None:
            value = value * schedule(step)
        return jnp.asarray(value, dtype=jnp.result_type(float))

    return at


class SGMCMCInfo(NamedTuple):
    """What every stochastic-gradient step reports.

    ``step_size``: the step ``h`` used. ``grad_norm``: the Euclidean norm of the minibatch
    gradient estimate evaluated in this step (at its end point; not finite on a diverging
    step). ``diverging``: the end point had a non-finite log density or gradient, and the
    chain stayed where it was.
    """

    step_size: jax.Array
    grad_norm: jax.Array
    diverging: jax.Array


def check_positive(name: str, what: str, value) -> None:
    """Raises unless ``value`` is a finite positive number; messages start with ``name``."""
    if not isinstance(value, int | float | np.integer | np.floating) or isinstance(value, bool):
        raise TypeError(f"{name}: {what} must be a number, got {type(value).__name__}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: {what} must be finite and > 0, got {value}")


def check_sg_step_size(name: str, step_size, schedule) -> None:
    """Raises unless ``step_size`` is a positive number or a schedule, and ``schedule`` is
    ``None`` or a schedule."""
    if not callable(step_size):
        check_positive(name, "step_size", step_size)
    if schedule is not None and not callable(schedule):
        raise TypeError(
            f"{name}: schedule must be an optax schedule (a function of the step count), "
            f"got {type(schedule).__name__}"
        )


def check_batch_size(name: str, batch_size) -> None:
    """Raises unless ``batch_size`` is an integer >= 1."""
    if not isinstance(batch_size, int | np.integer) or isinstance(batch_size, bool):
        raise TypeError(f"{name}: batch_size must be an integer, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size must be >= 1, got {batch_size}")


class AbstractSGMCMCKernel(AbstractKernel):
    """A stochastic-gradient kernel: a step size (a number or an optax schedule), an optional
    schedule that multiplies it, and a minibatch size. It refuses a target with no data
    split, and a batch larger than the data, before anything compiles."""

    step_size: Any
    batch_size: int
    schedule: Any

    def _check_config(self) -> None:
        check_sg_step_size(self.name, self.step_size, self.schedule)
        check_batch_size(self.name, self.batch_size)

    def check_target(self, target: Target) -> None:
        super().check_target(target)
        if target.log_likelihood is None or target.data is None:
            raise ValueError(
                f"{self.name}: the target has no data split (log_likelihood and data), so "
                "there is nothing to subsample; build it with Target(log_prior=..., "
                "log_likelihood=..., data=...) or inferax.from_numpyro(..., data=(names...)), "
                "or use a full-gradient sampler such as inferax.samplers.nuts"
            )
        num_data = target.num_data
        if int(self.batch_size) > num_data:
            raise ValueError(
                f"{self.name}: batch_size {self.batch_size} is larger than the {num_data} "
                "data points"
            )

    def sample_stats(self, state: Any, info: SGMCMCInfo, tuned: dict) -> dict[str, jax.Array]:
        return {
            "lp": state.logdensity,
            "diverging": info.diverging,
            "step_size": info.step_size.astype(state.logdensity.dtype),
            "grad_norm": info.grad_norm,
        }


class SGLDState(NamedTuple):
    """An SGLD chain: its position, the minibatch log density and gradient there, and the
    step count that drives the step-size schedule."""

    position: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    step: jax.Array


def langevin_algorithm(
    logdensity_and_grad_fn, step_size_at, draw, init_batch
) -> SamplingAlgorithm:
    """Langevin steps ``x + h grad + sqrt(2h) noise`` with blackjax's integrator, where
    ``logdensity_and_grad_fn(x, *batch)`` estimates the log density and its gradient and
    ``draw(rng_key)`` gives the step's ``batch`` tuple."""
    integrator = overdamped_langevin(logdensity_and_grad_fn)

    def init(position: ArrayLikeTree, rng_key=None) -> SGLDState:
        del rng_key
        logdensity, grad = logdensity_and_grad_fn(position, *init_batch)
        return SGLDState(position, logdensity, grad, jnp.zeros((), jnp.int32))

    def step(rng_key: PRNGKey, state: SGLDState) -> tuple[SGLDState, SGMCMCInfo]:
        batch_key, noise_key = jax.random.split(rng_key)
        h = step_size_at(state.step)
        diffusion = DiffusionState(state.position, state.logdensity, state.logdensity_grad)
        moved = integrator(noise_key, diffusion, h, draw(batch_key))
        new_state, diverging = guarded(
            SGLDState(*moved, state.step), state, (moved.logdensity, moved.logdensity_grad)
        )
        new_state = new_state._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(moved.logdensity_grad), diverging)

    return SamplingAlgorithm(init, step)


__all__ = [
    "AbstractSGMCMCKernel",
    "SGLDState",
    "SGMCMCInfo",
    "check_batch_size",
    "check_positive",
    "check_sg_step_size",
    "langevin_algorithm",
    "step_size_fn",
]
