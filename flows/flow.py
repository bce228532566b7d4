"""Flows as values: a bijection's configuration (``AbstractTransform``), the recipe of a
normalizing flow (``Flow``: a Gaussian base pushed through a bijection), and ``LayerScan``,
which runs stacked layers of one kind as a ``lax.scan``.

Nothing here trains: ``inferax.variational.fit`` wraps a ``Flow`` in the variational
family ``variational.NormalizingFlow`` and fits it.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, final

import distrax
import jax
import jax.numpy as jnp

from inferax.typing import PRNGKey


class AbstractTransform(abc.ABC):
    """A flow's bijection: a hashable configuration that makes parameters and, from them,
    a distrax bijector that maps base draws to target space (the sampling direction)."""

    @abc.abstractmethod
    def init(self, rng_key: PRNGKey, dim: int) -> Any:
        """Parameters for ``dim`` coordinates, a pytree of arrays."""

    @abc.abstractmethod
    def bijector(self, params: Any) -> distrax.Bijector:
        """The bijector, with ``event_ndims_in == 1``, forward in the sampling direction."""


class AbstractFlow(abc.ABC):
    """A flow's recipe: a hashable configuration, with no parameters, that
    ``inferax.variational.fit`` turns into a variational family."""

    base_scale: float


@final
@dataclasses.dataclass(frozen=True)
class Flow(AbstractFlow):
    """A normalizing flow: ``x = f(z)``, ``z ~ N(loc, diag(sigma)^2)``, ``f`` the bijector of
    ``transform``, so ``log q(x) = log N(z) - log|det df/dz|``.

    ``loc`` starts at the target's ``init`` and trains; so, when ``train_base_scale`` is
    set, does ``sigma = base_scale * exp(log_scale)``, with ``log_scale`` starting at zero.

    Args:
      transform: the bijection's configuration.
      base_scale: the base's standard deviation at the start.
      train_base_scale: whether ``sigma`` trains; without it ``sigma = base_scale``.

    Examples:
      >>> from inferax import flows
      >>> flows.planar(4).base_scale
      0.1
    """

    transform: AbstractTransform
    base_scale: float = 1.0
    train_base_scale: bool = True

    def __post_init__(self):
        if not self.base_scale > 0:
            raise ValueError(f"base_scale must be positive, got {self.base_scale!r}")


def check_num_layers(num_layers) -> int:
    """``num_layers``, checked to be a positive integer."""
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}")
    return num_layers


@final
class LayerScan(distrax.Bijector):
    """``num_layers`` layers of one kind applied in order, as a ``lax.scan`` over their
    stacked parameters: ``make_layer(params_i, i)`` builds layer ``i``.

    A ``distrax.Chain`` of the same layers unrolls into one copy per layer, which XLA
    compiles far more slowly.
    """

    def __init__(self, stacked_params, make_layer: Callable[[Any, jax.Array], distrax.Bijector]):
        super().__init__(event_ndims_in=1)
        self.stacked_params = stacked_params
        self.make_layer = make_layer
        self.num_layers = jax.tree.leaves(stacked_params)[0].shape[0]

    def _run(self, x, inverse: bool):
        indices = jnp.arange(self.num_layers)

        def body(carry, xs):
            point, log_det = carry
            params, index = xs
            layer = self.make_layer(params, index)
            if inverse:
                point, step = layer.inverse_and_log_det(point)
            else:
                point, step = layer.forward_and_log_det(point)
            return (point, log_det + step), None

        (x, log_det), _ = jax.lax.scan(
            body, (x, jnp.zeros((), x.dtype)), (self.stacked_params, indices), reverse=inverse
        )
        return x, log_det

    def forward_and_log_det(self, x):
        return self._run(x, inverse=False)

    def inverse_and_log_det(self, y):
        return self._run(y, inverse=True)


__all__ = ["AbstractFlow", "AbstractTransform", "Flow", "LayerScan", "check_num_layers"]
