"""The variational families of ``inferax.flows``' recipes: ``NormalizingFlow``, a Gaussian
base pushed through a bijection, and ``StochasticNormalizingFlow``, weighted on path space.
``fit`` wraps a flow in them itself; build them explicitly with ``normalizing_flow`` and
``stochastic_flow`` to call their methods before fitting."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Self, final

import jax
import jax.numpy as jnp

from inferax.flows.flow import AbstractFlow, AbstractTransform, Flow
from inferax.flows.stochastic import StochasticFlow
from inferax.pytree import pytree_dataclass, static_field
from inferax.typing import PRNGKey
from inferax.variational.family import AbstractFamily, standard_normal_logpdf


@final
@pytree_dataclass
class NormalizingFlow(AbstractFamily):
    """``x = f(z)``, ``z ~ N(loc, diag(sigma)^2)``; ``log q(x) = log N(z) - log|det df/dz|``.

    ``f`` is the bijector of ``flow.transform``, whose forward direction is the sampling
    direction, so sampling and its density cost one pass, and ``log_prob`` uses the
    inverse. ``loc`` starts at the target's ``init``; ``sigma = flow.base_scale *
    exp(log_scale)``, ``log_scale`` starting at zero, when ``flow.train_base_scale``, else
    ``sigma = flow.base_scale``.

    Args:
      flow: the flow's recipe, from ``flows.realnvp`` and the other builders.
      params: ``{"loc": (dim,), "log_scale": (dim,), "transform": ...}`` (no ``log_scale``
        without ``train_base_scale``), or ``None`` before ``init``.
    """

    flow: Flow = static_field()
    params: Any = None

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        params = {
            "loc": position,
            "transform": self.flow.transform.init(rng_key, position.shape[0]),
        }
        if self.flow.train_base_scale:
            params["log_scale"] = jnp.zeros_like(position)
        return dataclasses.replace(self, params=params)

    def base_scales(self) -> jax.Array:
        """The base's standard deviations, ``sigma``."""
        if not self.flow.train_base_scale:
            return jnp.full_like(self.params["loc"], self.flow.base_scale)
        return self.flow.base_scale * jnp.exp(self.params["log_scale"])

    def base_log_prob(self, z: jax.Array) -> jax.Array:
        """``log N(z; loc, diag(sigma)^2)``."""
        sigma = self.base_scales()
        eps = (z - self.params["loc"]) / sigma
        return standard_normal_logpdf(eps) - jnp.sum(jnp.log(sigma))

    def bijector(self):
        """``f``, the distrax bijector from base to target space."""
        return self.flow.transform.bijector(self.params["transform"])

    def sample_and_log_prob(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array]:
        self.check_initialized()
        loc = self.params["loc"]
        z = loc + self.base_scales() * jax.random.normal(rng_key, loc.shape, loc.dtype)
        x, log_det = self.bijector().forward_and_log_det(z)
        return x, self.base_log_prob(z) - log_det

    def log_prob(self, x: jax.Array) -> jax.Array:
        self.check_initialized()
        z, log_det = self.bijector().inverse_and_log_det(x)
        return self.base_log_prob(z) + log_det

    def forward(self, z: jax.Array) -> jax.Array:
        """``f(z)``, the map from base to target space."""
        return self.bijector().forward(z)


@final
@pytree_dataclass
class StochasticNormalizingFlow(AbstractFamily):
    """A stochastic normalizing flow: ``y_0 ~ N(loc, base_scale^2 I)``, then the flow's
    blocks in order, deterministic bijections and stochastic blocks.

    ``q`` has no tractable density, so the family gives importance weights on path space
    instead: ``log w = -u_X(y_T) + u_Z(y_0) + sum_t Delta S_t``, where ``u_X = -log p``,
    ``u_Z`` is the base's energy, ``Delta S`` of a bijection is its ``log|det J|``, and of a
    stochastic block its log backward/forward transition ratio. ``E[w] = Z``, so every
    objective of ``variational.fit`` trains it (with the reparameterisation estimator).

    Args:
      flow: the recipe, from ``flows.stochastic``.
      params: ``{"loc": (dim,), "blocks": [...]}``, or ``None`` before ``init``.

    References:
      Wu, Köhler, Noé, "Stochastic Normalizing Flows", 2020.
    """

    flow: StochasticFlow = static_field()
    params: Any = None

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        keys = jax.random.split(rng_key, len(self.flow.blocks))
        block_params = [
            block.init(k, position.shape[0])
            if isinstance(block, AbstractTransform)
            else block.init()
            for block, k in zip(self.flow.blocks, keys, strict=True)
        ]
        return dataclasses.replace(self, params={"loc": position, "blocks": block_params})

    def base_energy(self, y: jax.Array) -> jax.Array:
        """``u_Z(y) = -log N(y; loc, base_scale^2 I)``."""
        scale = self.flow.base_scale
        eps = (y - self.params["loc"]) / scale
        return -(standard_normal_logpdf(eps) - y.size * math.log(scale))

    def sample_and_log_weight(
        self, rng_key: PRNGKey, logdensity_fn: Callable[[jax.Array], jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        self.check_initialized()
        loc = self.params["loc"]
        blocks = self.flow.blocks
        base_key, *block_keys = jax.random.split(rng_key, len(blocks) + 1)
        y = loc + self.flow.base_scale * jax.random.normal(base_key, loc.shape, loc.dtype)
        log_w = self.base_energy(y)
        for block, params, key in zip(blocks, self.params["blocks"], block_keys, strict=True):
            if isinstance(block, AbstractTransform):
                y, log_det = block.bijector(params).forward_and_log_det(y)
                log_w = log_w + log_det
                continue

            def energy(point, lam=block.lam):
                return (1.0 - lam) * self.base_energy(point) - lam * logdensity_fn(point)

            def one_step(carry, step_key, block=block, params=params, energy=energy):
                y, delta = carry
                y, step_delta = block.step(step_key, y, energy, params)
                return (y, delta + step_delta), None

            (y, delta), _ = jax.lax.scan(
                one_step, (y, jnp.zeros((), y.dtype)), jax.random.split(key, block.num_steps)
            )
            log_w = log_w + delta
        return y, log_w + logdensity_fn(y)

    def sample(self, rng_key: PRNGKey) -> jax.Array:
        raise NotImplementedError(
            "a stochastic flow's draws come with their path weights: use sample_and_log_weight"
        )

    def sample_and_log_prob(self, rng_key: PRNGKey):
        raise NotImplementedError(
            "a stochastic flow has no tractable log q: use sample_and_log_weight"
        )

    def log_prob(self, x: jax.Array):
        raise NotImplementedError("a stochastic flow has no tractable log q")


def normalizing_flow(flow: Flow) -> NormalizingFlow:
    """The variational family of a normalizing flow, unfitted.

    Args:
      flow: a ``Flow``, from ``flows.planar``, ``flows.radial``, ``flows.realnvp`` or
        ``flows.spline``.

    Returns:
      A ``NormalizingFlow``; ``init(rng_key, position)`` gives it parameters.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows, variational
      >>> q = variational.normalizing_flow(flows.realnvp(4, (16,)))
      >>> q = q.init(jax.random.key(0), jnp.zeros(2))
      >>> x, log_q = q.sample_and_log_prob(jax.random.key(1))
      >>> bool(jnp.allclose(q.log_prob(x), log_q, atol=1e-5))
      True
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"flow must be an inferax.flows.Flow, got {type(flow).__name__}")
    return NormalizingFlow(flow)


def stochastic_flow(flow: StochasticFlow) -> StochasticNormalizingFlow:
    """The variational family of a stochastic normalizing flow, unfitted.

    Args:
      flow: a ``StochasticFlow``, from ``flows.stochastic``.

    Returns:
      A ``StochasticNormalizingFlow``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows, variational
      >>> q = variational.stochastic_flow(
      ...     flows.stochastic([flows.realnvp(2, (8,)), flows.langevin_block(0.5)]))
      >>> q = q.init(jax.random.key(0), jnp.zeros(2))
      >>> x, log_w = q.sample_and_log_weight(jax.random.key(1), lambda x: -0.5 * x @ x)
      >>> x.shape, log_w.shape
      ((2,), ())
    """
    if not isinstance(flow, StochasticFlow):
        raise TypeError(f"flow must be an inferax.flows.StochasticFlow, got {type(flow).__name__}")
    return StochasticNormalizingFlow(flow)


def as_family(family: AbstractFamily | AbstractFlow, argument: str = "family") -> AbstractFamily:
    """``family`` itself, or the variational family of a flow's recipe.

    Raises:
      TypeError: for anything else, naming ``argument``.
    """
    if isinstance(family, AbstractFamily):
        return family
    if isinstance(family, Flow):
        return normalizing_flow(family)
    if isinstance(family, StochasticFlow):
        return stochastic_flow(family)
    raise TypeError(
        f"{argument} must be a variational family (such as variational.meanfield_gaussian()) "
        f"or a flow (such as flows.realnvp(8, (64, 64))), got {type(family).__name__}"
    )


__all__ = [
    "NormalizingFlow",
    "StochasticNormalizingFlow",
    "as_family",
    "normalizing_flow",
    "stochastic_flow",
]
