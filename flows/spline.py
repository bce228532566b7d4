"""Rational-quadratic spline coupling flows (neural spline flows), on distrax's
``MaskedCoupling`` and ``RationalQuadraticSpline``."""

from __future__ import annotations

import dataclasses
from typing import final

import distrax
import jax
import jax.numpy as jnp

from inferax.flows.coupling import alternating_mask, check_coupling_dim, check_hidden
from inferax.flows.flow import AbstractTransform, Flow, LayerScan, check_num_layers
from inferax.flows.mlp import mlp_apply, mlp_init
from inferax.typing import PRNGKey


@final
@dataclasses.dataclass(frozen=True)
class Spline(AbstractTransform):
    """Coupling layers whose elementwise map is a monotone rational-quadratic spline with
    ``num_bins`` bins on ``[-interval, interval]``, the identity outside it, followed by a
    trainable elementwise affine map ``x = shift + exp(log_scale) * y``. Zero conditioner
    outputs give the identity spline, and the affine map starts as the identity, so the
    flow starts as the identity. With ``output_bound = b`` each conditioner output passes
    through ``b tanh(out / b)`` before it becomes a bin's width or height or a knot's slope.

    A spline maps ``[-interval, interval]`` onto itself; the final affine map is what lets
    the flow put mass outside that box."""

    num_layers: int
    hidden: tuple[int, ...]
    num_bins: int
    interval: float
    output_bound: float | None = None

    def init(self, rng_key: PRNGKey, dim: int):
        check_coupling_dim(dim)
        keys = jax.random.split(rng_key, self.num_layers)
        width = 3 * self.num_bins + 1
        layers = jax.vmap(lambda k: mlp_init(k, (dim, *self.hidden, dim * width)))(keys)
        return {"layers": layers, "shift": jnp.zeros(dim), "log_scale": jnp.zeros(dim)}

    def bijector(self, params) -> distrax.Bijector:
        width = 3 * self.num_bins + 1

        def spline(out):
            if self.output_bound is not None:
                out = self.output_bound * jnp.tanh(out / self.output_bound)
            return distrax.RationalQuadraticSpline(
                out,
                range_min=-self.interval,
                range_max=self.interval,
                boundary_slopes="identity",
            )

        dim = params["shift"].shape[0]

        def layer(mlp, index):
            return distrax.MaskedCoupling(
                mask=alternating_mask(dim, index),
                conditioner=lambda x: mlp_apply(mlp, x).reshape(dim, width),
                bijector=spline,
            )

        affine = distrax.Block(
            distrax.ScalarAffine(params["shift"], jnp.exp(params["log_scale"])), 1
        )
        return distrax.Chain([affine, LayerScan(params["layers"], layer)])


def spline(
    num_layers: int,
    hidden: tuple[int, ...] = (64, 64),
    num_bins: int = 8,
    *,
    interval: float = 5.0,
    base_scale: float = 1.0,
    output_bound: float | None = 3.0,
) -> Flow:
    """A neural spline flow: ``num_layers`` coupling layers, each moving half the
    coordinates (alternately) through a rational-quadratic spline of ``num_bins`` bins on
    ``[-interval, interval]``, whose knots an MLP of the other half sets, then a trainable
    elementwise affine map that sets each coordinate's scale and location.

    Args:
      num_layers: coupling layers.
      hidden: the MLP's hidden widths.
      num_bins: spline bins.
      interval: the half-width of the splines' range; outside it each layer is the
        identity. The final affine map rescales, so the range need only hold the base's
        mass and a little more.
      output_bound: the bound ``b`` on the conditioner's outputs, ``b tanh(out / b)``,
        or ``None`` for none. With 3, no bin is more than ``e^6`` (about 400) times
        another, and knot slopes stay in ``[0.08, 3.6]``.
      base_scale: the base's standard deviation, fixed (not trained): the splines act only
        inside ``[-interval, interval]``, the final affine map already sets each
        coordinate's scale, and a trained or wider base lets draws start or drift outside
        the splines' range. ``docs/variational.md`` has the measurements behind these
        defaults.

    Returns:
      A ``Flow``, for ``variational.fit`` or ``variational.normalizing_flow``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows
      >>> flow = flows.spline(2, (16,), 4)
      >>> f = flow.transform.bijector(flow.transform.init(jax.random.key(0), 2))
      >>> x, log_det = f.forward_and_log_det(jnp.array([0.5, -1.0]))
      >>> bool(jnp.allclose(f.inverse(x), jnp.array([0.5, -1.0]), atol=1e-5))
      True

    References:
      Durkan, Bekasov, Murray, Papamakarios, "Neural Spline Flows", 2019.
    """
    check_num_layers(num_layers)
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
    if not interval > 0:
        raise ValueError(f"interval must be positive, got {interval!r}")
    if output_bound is not None and not output_bound > 0:
        raise ValueError(f"output_bound must be positive or None, got {output_bound!r}")
    bound = None if output_bound is None else float(output_bound)
    transform = Spline(num_layers, check_hidden(hidden), num_bins, float(interval), bound)
    return Flow(transform, float(base_scale), train_base_scale=False)


__all__ = ["Spline", "spline"]
