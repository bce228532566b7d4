"""Affine coupling flows (RealNVP), on distrax's ``MaskedCoupling``."""

from __future__ import annotations

import dataclasses
import math
from typing import final

import distrax
import jax
import jax.numpy as jnp

from inferax.flows.flow import AbstractTransform, Flow, LayerScan, check_num_layers
from inferax.flows.mlp import mlp_apply, mlp_init
from inferax.typing import PRNGKey


def alternating_mask(dim: int, layer: int) -> jax.Array:
    """The coordinates layer ``layer`` keeps fixed: even ones, then odd ones, alternately."""
    return (jnp.arange(dim) + layer) % 2 == 0


def check_coupling_dim(dim: int) -> None:
    """Refuses a target of fewer than 2 coordinates, which a coupling layer cannot split."""
    if dim < 2:
        raise ValueError(f"coupling flows need at least 2 coordinates, the target has {dim}")


def check_hidden(hidden) -> tuple[int, ...]:
    """``hidden``, checked to be a tuple of positive layer widths."""
    hidden = tuple(hidden)
    if not all(isinstance(h, int) and h > 0 for h in hidden):
        raise ValueError(f"hidden must be a tuple of positive layer widths, got {hidden!r}")
    return hidden


SCALE_KINDS = ("softplus", "tanh")

# softplus(0 + _SOFTPLUS_AT_ZERO) + MIN_SCALE = 1: a zero conditioner output is the identity.
MIN_SCALE = 0.01
_SOFTPLUS_AT_ZERO = math.log(math.expm1(1.0 - MIN_SCALE))


@final
@dataclasses.dataclass(frozen=True)
class RealNVP(AbstractTransform):
    """Affine coupling layers: the masked coordinates condition a shift and a scale for the
    others, through an MLP. The scale is ``softplus(raw + c) + 0.01`` (``scale="softplus"``,
    flowjax's choice) or ``exp(scale_bound * tanh(raw / scale_bound))`` (``"tanh"``)."""

    num_layers: int
    hidden: tuple[int, ...]
    scale: str = "softplus"
    scale_bound: float = 2.0

    def init(self, rng_key: PRNGKey, dim: int):
        check_coupling_dim(dim)
        keys = jax.random.split(rng_key, self.num_layers)
        return jax.vmap(lambda k: mlp_init(k, (dim, *self.hidden, 2 * dim)))(keys)

    def bijector(self, params) -> distrax.Bijector:
        bound = self.scale_bound

        def affine(out):
            if self.scale == "tanh":
                return distrax.ScalarAffine(
                    shift=out[..., 0], log_scale=bound * jnp.tanh(out[..., 1] / bound)
                )
            scale = jax.nn.softplus(out[..., 1] + _SOFTPLUS_AT_ZERO) + MIN_SCALE
            return distrax.ScalarAffine(shift=out[..., 0], scale=scale)

        dim = params[0][0].shape[1]

        def layer(mlp, index):
            return distrax.MaskedCoupling(
                mask=alternating_mask(dim, index),
                conditioner=lambda x: mlp_apply(mlp, x).reshape(dim, 2),
                bijector=affine,
            )

        return LayerScan(params, layer)


def realnvp(
    num_layers: int,
    hidden: tuple[int, ...] = (64, 64),
    *,
    scale: str = "softplus",
    scale_bound: float = 2.0,
    base_scale: float = 2.0,
) -> Flow:
    """An affine coupling flow: ``num_layers`` layers, each fixing half the coordinates
    (alternately) and moving the others by ``x * s + t``, with ``(s, t)`` an MLP of the
    fixed half. Each layer starts as the identity.

    The scale ``s`` is ``softplus(raw + c) + 0.01`` by default, as in flowjax's coupling
    flow: at least 0.01 and unbounded above. ``scale="tanh"`` bounds the log-scale instead,
    ``log s = scale_bound * tanh(raw / scale_bound)``.

    Args:
      num_layers: coupling layers.
      hidden: the MLP's hidden widths.
      scale: ``"softplus"`` or ``"tanh"``, how the conditioner's output becomes a scale.
      scale_bound: the bound on each layer's log-scale under ``scale="tanh"``.
      base_scale: the base's standard deviation at the start (it is trained).

    Returns:
      A ``Flow``, for ``variational.fit`` or ``variational.normalizing_flow``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows
      >>> flow = flows.realnvp(4, (16,))
      >>> f = flow.transform.bijector(flow.transform.init(jax.random.key(0), 2))
      >>> x, log_det = f.forward_and_log_det(jnp.array([0.5, -1.0]))
      >>> bool(jnp.allclose(f.inverse(x), jnp.array([0.5, -1.0]), atol=1e-5))
      True

    References:
      Dinh, Sohl-Dickstein, Bengio, "Density estimation using Real NVP", 2017.
    """
    check_num_layers(num_layers)
    if scale not in SCALE_KINDS:
        raise ValueError(f"scale must be one of {SCALE_KINDS}, got {scale!r}")
    if not scale_bound > 0:
        raise ValueError(f"scale_bound must be positive, got {scale_bound!r}")
    transform = RealNVP(num_layers, check_hidden(hidden), scale, float(scale_bound))
    return Flow(transform, float(base_scale))


__all__ = ["RealNVP", "alternating_mask", "check_coupling_dim", "check_hidden", "realnvp"]
