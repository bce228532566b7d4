"""Planar flows (Rezende & Mohamed 2015), with the reparameterisation that keeps each layer
invertible."""

from __future__ import annotations

import dataclasses
from typing import final

import distrax
import jax
import jax.numpy as jnp

from inferax.flows.flow import AbstractTransform, Flow, LayerScan, check_num_layers
from inferax.typing import PRNGKey

BISECTION_STEPS = 60
"""Bisection steps of the inverse, before one Newton step (enough for float64)."""


def _safe_unit_scale(w: jax.Array) -> jax.Array:
    """``w / |w|^2``, zero where ``w`` is zero (the correction term then vanishes)."""
    norm2 = jnp.sum(w**2)
    positive = norm2 > 0
    return jnp.where(positive, w / jnp.where(positive, norm2, 1.0), 0.0)


def planar_u_hat(u: jax.Array, w: jax.Array) -> jax.Array:
    """``u_hat = u + (m(w.u) - w.u) w / |w|^2`` with ``m(x) = -1 + softplus(x)``, so that
    ``w.u_hat = m(w.u) > -1`` and the layer is invertible."""
    wu = jnp.dot(w, u)
    return u + (-1.0 + jax.nn.softplus(wu) - wu) * _safe_unit_scale(w)


@final
class PlanarBijector(distrax.Bijector):
    """``f(z) = z + u_hat tanh(w.z + b)``, ``log|det J| = log|1 + w.u_hat tanh'(w.z + b)|``.

    The inverse solves the scalar equation ``a + c tanh(a + b) = w.x`` for ``a = w.z``
    (``c = w.u_hat > -1``, so the left side is strictly increasing and ``|a - w.x| <= |c|``)
    by bisection, then one Newton step from the stopped bisection root, which makes the
    inverse differentiable with the implicit function theorem's derivative.
    """

    def __init__(self, u: jax.Array, w: jax.Array, b: jax.Array):
        super().__init__(event_ndims_in=1)
        self.u_hat = planar_u_hat(u, w)
        self.w = w
        self.b = b

    def forward_and_log_det(self, z):
        pre = jnp.dot(self.w, z) + self.b
        h = jnp.tanh(pre)
        x = z + self.u_hat * h
        log_det = jnp.log(jnp.abs(1.0 + jnp.dot(self.w, self.u_hat) * (1.0 - h**2)))
        return x, log_det

    def inverse_and_log_det(self, x):
        c = jnp.dot(self.w, self.u_hat)
        y = jnp.dot(self.w, x)

        def residual(a):
            return a + c * jnp.tanh(a + self.b) - y

        def bisect(_, bounds):
            low, high = bounds
            mid = 0.5 * (low + high)
            above = residual(mid) > 0
            return jnp.where(above, low, mid), jnp.where(above, mid, high)

        radius = jnp.abs(c) + 1.0
        low, high = jax.lax.fori_loop(
            0, BISECTION_STEPS, bisect, jax.lax.stop_gradient((y - radius, y + radius))
        )
        a = jax.lax.stop_gradient(0.5 * (low + high))
        slope = 1.0 + c * (1.0 - jnp.tanh(a + self.b) ** 2)
        a = a - residual(a) / slope
        z = x - self.u_hat * jnp.tanh(a + self.b)
        return z, -self.forward_and_log_det(z)[1]


@final
@dataclasses.dataclass(frozen=True)
class Planar(AbstractTransform):
    """``num_layers`` planar layers, applied in order."""

    num_layers: int

    def init(self, rng_key: PRNGKey, dim: int):
        u_key, w_key = jax.random.split(rng_key)
        shape = (self.num_layers, dim)
        return {
            "u": 0.01 * jax.random.normal(u_key, shape),
            "w": 0.01 * jax.random.normal(w_key, shape),
            "b": jnp.zeros(self.num_layers),
        }

    def bijector(self, params) -> distrax.Bijector:
        return LayerScan(params, lambda p, _: PlanarBijector(p["u"], p["w"], p["b"]))


def planar(num_layers: int, *, base_scale: float = 0.1) -> Flow:
    """A planar flow: ``num_layers`` layers ``z + u_hat tanh(w.z + b)`` on a
    ``N(loc, base_scale^2 I)`` base.

    Args:
      num_layers: layers.
      base_scale: the base's standard deviation at the start (it is trained): 0.1, as
        the Gaussian families' ``init_scale`` and NumPyro's autoguides' ``init_scale``,
        so the first draws stay near ``fit``'s starting point; a target spread over
        a wide box with no informative start (the 2-D test energies) fits sooner
        from a base of that box's width.

    Returns:
      A ``Flow``, for ``variational.fit`` or ``variational.normalizing_flow``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from inferax import flows
      >>> flow = flows.planar(4)
      >>> f = flow.transform.bijector(flow.transform.init(jax.random.key(0), 2))
      >>> x, log_det = f.forward_and_log_det(jnp.array([0.5, -1.0]))
      >>> bool(jnp.allclose(f.inverse(x), jnp.array([0.5, -1.0]), atol=1e-4))
      True

    References:
      Rezende, Mohamed, "Variational Inference with Normalizing Flows", 2015.
    """
    check_num_layers(num_layers)
    return Flow(Planar(num_layers), float(base_scale))


__all__ = ["Planar", "PlanarBijector", "planar", "planar_u_hat"]
