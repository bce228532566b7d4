"""Stochastic normalizing flows (Wu, Köhler, Noé 2020): deterministic bijections interleaved
with Langevin or Metropolis blocks on energies interpolated between the base and the
target. This module holds the blocks and the flow's recipe; the variational family that
trains it and weights its draws on path space is ``variational.StochasticNormalizingFlow``.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import final

import jax
import jax.numpy as jnp
from blackjax.mcmc.diffusions import DiffusionState, overdamped_langevin
from blackjax.util import generate_gaussian_noise

from inferax.flows.flow import AbstractFlow, AbstractTransform, Flow


class AbstractStochasticBlock(abc.ABC):
    """A stochastic block: ``num_steps`` steps of a kernel that leaves
    ``exp(-u_lam)`` invariant (or nearly), ``u_lam = (1 - lam) u_Z + lam u_X``, with a
    trainable log step size. ``step`` returns the new point and its ``Delta S``, the log
    ratio of the backward to the forward transition density."""

    lam: float
    num_steps: int
    step_size: float

    def init(self) -> jax.Array:
        """The block's parameter: its log step size."""
        return jnp.log(jnp.asarray(self.step_size))

    @abc.abstractmethod
    def step(self, rng_key, y, energy_fn, log_step_size) -> tuple[jax.Array, jax.Array]:
        """One step from ``y``: ``(y_next, Delta S)``."""


@final
@dataclasses.dataclass(frozen=True)
class LangevinBlock(AbstractStochasticBlock):
    """Unadjusted overdamped Langevin, blackjax's Euler step of the diffusion:
    ``y' = y - eps grad u(y) + sqrt(2 eps) eta``.

    ``Delta S = (|eta|^2 - |eta_tilde|^2) / 2`` with the backward noise
    ``eta_tilde = sqrt(eps / 2) (grad u(y) + grad u(y')) - eta``.
    """

    lam: float
    num_steps: int = 1
    step_size: float = 0.05

    def step(self, rng_key, y, energy_fn, log_step_size):
        eps = jnp.exp(log_step_size)

        def logdensity_and_grad(point):
            energy, grad = jax.value_and_grad(energy_fn)(point)
            return -energy, -grad

        state = DiffusionState(y, *logdensity_and_grad(y))
        new = overdamped_langevin(logdensity_and_grad)(rng_key, state, eps)
        eta = generate_gaussian_noise(rng_key, y)  # the noise the step drew from this key
        eta_tilde = -jnp.sqrt(eps / 2.0) * (state.logdensity_grad + new.logdensity_grad) - eta
        return new.position, 0.5 * (jnp.sum(eta**2) - jnp.sum(eta_tilde**2))


@final
@dataclasses.dataclass(frozen=True)
class MetropolisBlock(AbstractStochasticBlock):
    """Random-walk Metropolis with Gaussian proposals of scale ``step_size``.

    Detailed balance makes ``Delta S = u(y_t) - u(y_{t-1})``.
    """

    lam: float
    num_steps: int = 1
    step_size: float = 0.5

    def step(self, rng_key, y, energy_fn, log_step_size):
        noise_key, accept_key = jax.random.split(rng_key)
        proposal = y + jnp.exp(log_step_size) * jax.random.normal(noise_key, y.shape, y.dtype)
        u_y, u_prop = energy_fn(y), energy_fn(proposal)
        accept = jnp.log(jax.random.uniform(accept_key)) < u_y - u_prop
        y_next = jnp.where(accept, proposal, y)
        return y_next, jnp.where(accept, u_prop, u_y) - u_y


def langevin_block(lam: float, num_steps: int = 1, step_size: float = 0.05) -> LangevinBlock:
    """A Langevin block on the energy interpolated at ``lam`` (0: base, 1: target)."""
    return LangevinBlock(float(lam), num_steps, float(step_size))


def metropolis_block(lam: float, num_steps: int = 1, step_size: float = 0.5) -> MetropolisBlock:
    """A random-walk Metropolis block on the energy interpolated at ``lam``."""
    return MetropolisBlock(float(lam), num_steps, float(step_size))


@final
@dataclasses.dataclass(frozen=True)
class StochasticFlow(AbstractFlow):
    """A stochastic normalizing flow's recipe: ``y_0 ~ N(loc, base_scale^2 I)``, then
    ``blocks`` in order, bijections (``AbstractTransform``) and stochastic blocks
    (``AbstractStochasticBlock``)."""

    blocks: tuple
    base_scale: float = 2.0


def stochastic(blocks, *, base_scale: float = 2.0) -> StochasticFlow:
    """A stochastic normalizing flow from ``blocks``, applied in order: bijections (a
    ``Flow`` from ``flows.realnvp`` etc., whose transform is used, or an
    ``AbstractTransform``) and stochastic blocks (``flows.langevin_block``,
    ``flows.metropolis_block``).

    Args:
      blocks: the blocks, in the sampling direction.
      base_scale: the base's standard deviation, fixed (not trained): 2, wider than the
        trained bases' 0.1, since only the blocks can widen it.

    Returns:
      A ``StochasticFlow``, for ``variational.fit`` or ``variational.stochastic_flow``.

    Examples:
      >>> from inferax import flows
      >>> flow = flows.stochastic([flows.realnvp(2, (8,)), flows.langevin_block(0.5),
      ...                          flows.realnvp(2, (8,)), flows.metropolis_block(1.0)])
      >>> len(flow.blocks)
      4

    References:
      Wu, Köhler, Noé, "Stochastic Normalizing Flows", 2020.
    """
    resolved = []
    for block in blocks:
        if isinstance(block, Flow):
            block = block.transform
        if not isinstance(block, AbstractTransform | AbstractStochasticBlock):
            raise TypeError(f"a block must be a flow or a stochastic block, got {block!r}")
        resolved.append(block)
    if not resolved:
        raise ValueError("blocks is empty")
    return StochasticFlow(tuple(resolved), float(base_scale))


__all__ = [
    "AbstractStochasticBlock",
    "LangevinBlock",
    "MetropolisBlock",
    "StochasticFlow",
    "langevin_block",
    "metropolis_block",
    "stochastic",
]
