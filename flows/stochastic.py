"""Stochastic normalizing flows (Wu, Köhler, Noé 2020): deterministic bijections interleaved
with Langevin or Metropolis blocks on energies interpolated between the base and the
target, trained and weighted on path space."""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any, Self, final

import jax
import jax.numpy as jnp

from inferax.flows.flow import AbstractTransform, Flow
from inferax.typing import PRNGKey
from inferax.pytree import pytree_dataclass, static_field
from inferax.variational.family import AbstractFamily, standard_normal_logpdf


class AbstractStochasticBlock(abc.ABC):
    """A stochastic block: ``num_steps`` steps of a kernel that leaves
    ``exp(-u_lam)`` invariant (or nearly), ``u_lam = (1 - lam) u_Z + lam u_X``, with a
    trainable log step size. ``step`` returns the new point and its ``Delta S``, the log
    ratio of the backward to the forward transition density."""

    lam: float
    num_steps: int
    step_size: float

    def init(self) -> jax.Array:
        return jnp.log(jnp.asarray(self.step_size))

    @abc.abstractmethod
    def step(self, rng_key, y, energy_fn, log_step_size) -> tuple[jax.Array, jax.Array]:
        """One step from ``y``: ``(y_next, Delta S)``."""


@final
@dataclasses.dataclass(frozen=True)
class LangevinBlock(AbstractStochasticBlock):
    """Unadjusted overdamped Langevin: ``y' = y - eps grad u(y) + sqrt(2 eps) eta``.

    ``Delta S = (|eta|^2 - |eta_tilde|^2) / 2`` with the backward noise
    ``eta_tilde = sqrt(eps / 2) (grad u(y) + grad u(y')) - eta``.
    """

    lam: float
    num_steps: int = 1
    step_size: float = 0.05

    def step(self, rng_key, y, energy_fn, log_step_size):
        eps = jnp.exp(log_step_size)
        grad = jax.grad(energy_fn)
        eta = jax.random.normal(rng_key, y.shape, y.dtype)
        grad_y = grad(y)
        y_next = y - eps * grad_y + jnp.sqrt(2.0 * eps) * eta
        eta_tilde = jnp.sqrt(eps / 2.0) * (grad_y + grad(y_next)) - eta
        return y_next, 0.5 * (jnp.sum(eta**2) - jnp.sum(eta_tilde**2))


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
@pytree_dataclass
class StochasticFlow(AbstractFamily):
    """A stochastic normalizing flow: ``y_0 ~ N(loc, base_scale^2 I)``, then ``blocks`` in
    order, deterministic bijections and stochastic blocks.

    ``q`` has no tractable density, so the family gives importance weights on path space
    instead: ``log w = -u_X(y_T) + u_Z(y_0) + sum_t Delta S_t``, where ``u_X = -log p``,
    ``u_Z`` is the base's energy, ``Delta S`` of a bijection is its ``log|det J|``, and of a
    stochastic block its log backward/forward transition ratio. ``E[w] = Z``, so every
    objective of ``variational.fit`` trains it (with the reparameterisation estimator).

    Args:
      blocks: a tuple of ``AbstractTransform`` and ``AbstractStochasticBlock``.
      base_scale: the base's standard deviation.
      params: ``{"loc": (dim,), "blocks": [...]}``, or ``None`` before ``init``.
    """

    blocks: tuple = static_field()
    base_scale: float = static_field(default=1.0)
    params: Any = None

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        keys = jax.random.split(rng_key, len(self.blocks))
        block_params = [
            block.init(k, position.shape[0]) if isinstance(block, AbstractTransform)
            else block.init()
            for block, k in zip(self.blocks, keys, strict=True)
        ]  # fmt: skip
        return StochasticFlow(self.blocks, self.base_scale,
                              {"loc": position, "blocks": block_params})  # fmt: skip

    def _base_energy(self, y: jax.Array) -> jax.Array:
        eps = (y - self.params["loc"]) / self.base_scale
        return -(standard_normal_logpdf(eps) - y.size * math.log(self.base_scale))

    def sample_and_log_weight(
        self, rng_key: PRNGKey, logdensity_fn: Callable[[jax.Array], jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        self._check_initialized()
        loc = self.params["loc"]
        base_key, *block_keys = jax.random.split(rng_key, len(self.blocks) + 1)
        y = loc + self.base_scale * jax.random.normal(base_key, loc.shape, loc.dtype)
        log_w = self._base_energy(y)
        for block, params, key in zip(self.blocks, self.params["blocks"], block_keys,
                                      strict=True):  # fmt: skip
            if isinstance(block, AbstractTransform):
                y, log_det = block.bijector(params).forward_and_log_det(y)
                log_w = log_w + log_det
                continue

            def energy(point, lam=block.lam):
                return (1.0 - lam) * self._base_energy(point) - lam * logdensity_fn(point)

            def one_step(carry, step_key, block=block, params=params, energy=energy):
                y, delta = carry
                y, step_delta = block.step(step_key, y, energy, params)
                return (y, delta + step_delta), None

            (y, delta), _ = jax.lax.scan(
                one_step, (y, jnp.zeros((), y.dtype)), jax.random.split(key, block.num_steps)
            )
            log_w = log_w + delta
        return y, log_w + logdensity_fn(y)

    def sample_and_log_prob(self, rng_key: PRNGKey):
        raise NotImplementedError(
            "a stochastic flow has no tractable log q: use sample_and_log_weight"
        )

    def log_prob(self, x: jax.Array):
        raise NotImplementedError("a stochastic flow has no tractable log q")


def stochastic(blocks, *, base_scale: float = 2.0) -> StochasticFlow:
    """A stochastic normalizing flow from ``blocks``, applied in order: bijections (a
    ``Flow`` from ``flows.realnvp`` etc., whose transform is used, or an
    ``AbstractTransform``) and stochastic blocks (``flows.langevin_block``,
    ``flows.metropolis_block``).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows
      >>> q = flows.stochastic([flows.realnvp(2, (8,)), flows.langevin_block(0.5),
      ...                       flows.realnvp(2, (8,)), flows.metropolis_block(1.0)])
      >>> q = q.init(jax.random.key(0), jnp.zeros(2))
      >>> x, log_w = q.sample_and_log_weight(jax.random.key(1), lambda x: -0.5 * x @ x)
      >>> x.shape, log_w.shape
      ((2,), ())

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
