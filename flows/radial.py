"""Radial flows (Rezende & Mohamed 2015), with the reparameterisation that keeps each layer
invertible."""

from __future__ import annotations

import dataclasses
from typing import final

import distrax
import jax
import jax.numpy as jnp

from inferax.flows.flow import AbstractTransform, Flow, LayerScan, check_num_layers
from inferax.typing import PRNGKey


@final
class RadialBijector(distrax.Bijector):
    """``f(z) = z + beta_hat h(r) (z - z0)``, ``r = |z - z0|``, ``h = 1/(alpha + r)``, with
    ``alpha = softplus(alpha_raw) > 0`` and ``beta_hat = -alpha + softplus(beta)``.

    ``log|det J| = (d - 1) log(1 + beta_hat h) + log(1 + beta_hat alpha / (alpha + r)^2)``.
    The inverse is closed form: ``R = |x - z0| = r (1 + beta_hat / (alpha + r))`` is a
    quadratic in ``r`` with one non-negative root.
    """

    def __init__(self, z0: jax.Array, alpha_raw: jax.Array, beta: jax.Array):
        super().__init__(event_ndims_in=1)
        self.z0 = z0
        self.alpha = jax.nn.softplus(alpha_raw)
        self.beta_hat = -self.alpha + jax.nn.softplus(beta)

    def _log_det(self, r, dim):
        h = 1.0 / (self.alpha + r)
        return (dim - 1) * jnp.log1p(self.beta_hat * h) + jnp.log1p(
            self.beta_hat * self.alpha * h**2
        )

    def forward_and_log_det(self, z):
        diff = z - self.z0
        r = jnp.sqrt(jnp.sum(diff**2))
        x = z + (self.beta_hat / (self.alpha + r)) * diff
        return x, self._log_det(r, z.shape[-1])

    def inverse_and_log_det(self, x):
        diff = x - self.z0
        big_r = jnp.sqrt(jnp.sum(diff**2))
        p = self.alpha + self.beta_hat - big_r
        r = 0.5 * (-p + jnp.sqrt(p**2 + 4.0 * big_r * self.alpha))
        z = self.z0 + diff / (1.0 + self.beta_hat / (self.alpha + r))
        return z, -self._log_det(r, x.shape[-1])


@final
@dataclasses.dataclass(frozen=True)
class Radial(AbstractTransform):
    """``num_layers`` radial layers, applied in order."""

    num_layers: int

    def init(self, rng_key: PRNGKey, dim: int):
        return {
            "z0": jax.random.normal(rng_key, (self.num_layers, dim)),
            "alpha": jnp.zeros(self.num_layers),
            # softplus(beta) = softplus(alpha_raw) at the start: beta_hat = 0, the identity.
            "beta": jnp.zeros(self.num_layers),
        }

    def bijector(self, params) -> distrax.Bijector:
        return LayerScan(params, lambda p, _: RadialBijector(p["z0"], p["alpha"], p["beta"]))


def radial(num_layers: int, *, base_scale: float = 0.1) -> Flow:
    """A radial flow: ``num_layers`` layers that contract or expand around ``z0``, on a
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
      >>> transform = flows.radial(4).transform
      >>> params = transform.init(jax.random.key(0), 2)
      >>> params["beta"] = params["beta"] + 1.0  # move the layers off the identity
      >>> f = transform.bijector(params)
      >>> z = jnp.array([0.5, -1.0])
      >>> _, log_det = f.forward_and_log_det(z)
      >>> _, inverse_log_det = f.inverse_and_log_det(f.forward(z))
      >>> bool(jnp.allclose(log_det, -inverse_log_det, atol=1e-4))
      True

    References:
      Rezende, Mohamed, "Variational Inference with Normalizing Flows", 2015.
    """
    check_num_layers(num_layers)
    return Flow(Radial(num_layers), float(base_scale))


__all__ = ["Radial", "RadialBijector", "radial"]
