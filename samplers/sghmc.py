"""Stochastic gradient Hamiltonian Monte Carlo: underdamped Langevin dynamics on minibatch
gradients, integrated with ``inferax.samplers.integrators``' BAOAB or Euler step."""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from inferax.minibatch import draw_minibatch, first_points
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import UNDERDAMPED_INTEGRATORS
from inferax.samplers.stochastic_gradient import (
    AbstractSGMCMCKernel,
    SGMCMCInfo,
    check_positive,
    step_size_fn,
)
from inferax.target import Target
from inferax.tree_math import tree_norm
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey


class SGHMCState(NamedTuple):
    """An SGHMC chain: position and momentum (unit mass), the minibatch log density and
    gradient at the position, and the step count."""

    position: ArrayTree
    momentum: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    step: jax.Array


def sghmc_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    friction: float,
    integrator: str = "baoab",
    schedule=None,
) -> SamplingAlgorithm:
    """Stochastic gradient Hamiltonian Monte Carlo as a blackjax ``SamplingAlgorithm``.

    Underdamped Langevin dynamics with the minibatch gradient, integrated with time step
    ``dt = sqrt(2 h)``: in the limit of high friction, a BAOAB step is the Langevin step
    ``x + h * grad log p(x) + sqrt(2 h) * noise`` (with its noise shared by consecutive
    steps), so ``h`` means what it means for ``sgld``.

    Args:
      target: a target with a data split.
      step_size: ``h``, a number or an optax schedule.
      batch_size: data points per minibatch.
      friction: ``gamma`` > 0, in units of inverse time.
      integrator: ``"baoab"`` or ``"euler"``.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``SGHMCState`` and ``SGMCMCInfo``; ``init``
      starts at rest, with zero momentum.
    """
    logdensity_and_grad = target.minibatch_logdensity_and_grad
    one_step = UNDERDAMPED_INTEGRATORS[integrator](logdensity_and_grad)
    step_size_at = step_size_fn(step_size, schedule)

    def init(position: ArrayLikeTree, rng_key=None) -> SGHMCState:
        del rng_key
        logdensity, grad = logdensity_and_grad(position, first_points(target.data, batch_size))
        momentum = jax.tree.map(jnp.zeros_like, position)
        return SGHMCState(position, momentum, logdensity, grad, jnp.zeros((), jnp.int32))

    def step(rng_key: PRNGKey, state: SGHMCState) -> tuple[SGHMCState, SGMCMCInfo]:
        batch_key, noise_key = jax.random.split(rng_key)
        h = step_size_at(state.step)
        batch = draw_minibatch(batch_key, target.data, batch_size)
        moved = one_step(noise_key, state, jnp.sqrt(2.0 * h), friction, (batch,))
        new_state, diverging = guarded(
            moved, state, (moved.logdensity, moved.logdensity_grad, moved.momentum)
        )
        new_state = new_state._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(moved.logdensity_grad), diverging)

    return SamplingAlgorithm(init, step)


@dataclasses.dataclass(frozen=True)
class sghmc(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Stochastic gradient Hamiltonian Monte Carlo: underdamped Langevin dynamics with
    minibatch gradients.

    The chain carries a unit-mass momentum ``p``; the dynamics ``dx = p dt``,
    ``dp = grad log p(x) dt - gamma p dt + sqrt(2 gamma) dW`` leave the target times a
    standard normal momentum invariant. The step size keeps the one convention: ``h`` is
    the step of ``x + h * grad log p(x) + sqrt(2 h) * noise``, and the dynamics advance by
    ``dt = sqrt(2 h)`` per step, so that as the friction grows a BAOAB step becomes that
    Langevin step. ``"baoab"`` (the default) splits each step into half kicks and drifts
    around an exact Ornstein-Uhlenbeck solve of the friction and noise, which is stable for
    any friction and has second-order accuracy with exact gradients; ``"euler"`` is the
    first-order scheme of Chen et al. (2014), which needs ``gamma dt < 1``. Neither subtracts
    an estimate of the gradient noise. Warmup is plain burn-in, from zero momentum.

    Args:
      step_size: ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      friction: ``gamma`` > 0. Low friction keeps momentum and explores faster; high
        friction damps it, and the chain behaves like SGLD.
      integrator: ``"baoab"`` or ``"euler"``.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = 1.0 + np.random.default_rng(0).standard_normal(1000)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> kernel = inferax.samplers.sghmc(step_size=1e-4, batch_size=50, friction=10.0)
      >>> post = inferax.sample(target, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=200, num_samples=200, progress=False)
      >>> post.draws["x"].shape
      (2, 200)

    References:
      Chen, Fox, Guestrin, "Stochastic Gradient Hamiltonian Monte Carlo", ICML 2014.
      Leimkuhler, Matthews, "Rational Construction of Stochastic Numerical Methods for
      Molecular Sampling", AMRX 2013.
    """

    step_size: Any
    batch_size: int
    friction: float
    integrator: str = "baoab"
    schedule: Any = None

    name = "sghmc"

    def __post_init__(self):
        self._check_config()
        check_positive(self.name, "friction", self.friction)
        if self.integrator not in UNDERDAMPED_INTEGRATORS:
            raise ValueError(
                f"sghmc: integrator must be one of {sorted(UNDERDAMPED_INTEGRATORS)}, "
                f"got {self.integrator!r}"
            )

    def build(self, target: Target) -> SamplingAlgorithm:
        return sghmc_algorithm(
            target,
            self.step_size,
            int(self.batch_size),
            float(self.friction),
            self.integrator,
            self.schedule,
        )


__all__ = ["SGHMCState", "sghmc", "sghmc_algorithm"]
