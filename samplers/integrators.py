"""The Langevin integrators every kernel in ``inferax.samplers`` steps with.

One integrator per idea:

- ``overdamped_langevin``: blackjax's Euler-Maruyama step of
  ``dx = grad log p(x) dt + sqrt(2) dW``, ``x' = x + h grad log p(x) + sqrt(2h) xi``. ULA,
  SGLD, SGLD-CV, structured SGLD, MYULA and MYMALA step with it.
  ``langevin_log_transition`` is its transition density, for Metropolis-Hastings tests.
- ``preconditioned_langevin_move``: the same step in a diagonal metric ``G`` with its
  correction term, ``x' = x + h (G g + Gamma) + sqrt(2 h G) xi`` (pSGLD).
- ``mirror_langevin_step``: the step taken in the dual space of a mirror map (mirror and
  Bregman-Moreau Langevin).
- ``underdamped_langevin_baoab`` and ``underdamped_langevin_euler``: underdamped Langevin
  dynamics with unit mass (SGHMC).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from blackjax.mcmc.diffusions import DiffusionState, overdamped_langevin
from blackjax.util import generate_gaussian_noise

from inferax.samplers.mirror_maps import AbstractMirrorMap
from inferax.typing import ArrayTree, PRNGKey


def langevin_log_transition(to, start, grad, step_size) -> jax.Array:
    """``log q(to | start)`` up to a constant, for the step ``start + h grad + sqrt(2h) xi``.

    Args:
      to: the end point, a 1-D array.
      start: the start point.
      grad: the gradient of the log density at ``start``.
      step_size: the step ``h``.

    Returns:
      ``-|to - start - h grad|^2 / (4 h)``.
    """
    return -jnp.sum((to - start - step_size * grad) ** 2) / (4.0 * step_size)


def preconditioned_langevin_move(
    rng_key: PRNGKey,
    position: ArrayTree,
    logdensity_grad: ArrayTree,
    step_size,
    inverse_metric: ArrayTree,
    correction: ArrayTree,
) -> ArrayTree:
    """One overdamped Langevin step in a diagonal metric; returns the new position.

    ``x' = x + h (G g + Gamma) + sqrt(2 h G) xi``, where ``G`` is the diagonal inverse
    metric and ``Gamma_i = d G_ii / d x_i`` keeps the target invariant when ``G`` varies
    with ``x``. With ``G = 1`` and ``Gamma = 0`` it is ``overdamped_langevin``'s step.

    Args:
      rng_key: the key for the noise ``xi``.
      position: ``x``, a pytree.
      logdensity_grad: ``g``, an estimate of ``grad log p(x)``.
      step_size: ``h``.
      inverse_metric: ``G``'s diagonal, shaped like ``position``.
      correction: ``Gamma``, shaped like ``position`` (zeros to drop it).

    Returns:
      The new position.

    References:
      Li, Chen, Carlson, Carin, "Preconditioned Stochastic Gradient Langevin Dynamics for
      Deep Neural Networks", AAAI 2016.
    """
    noise = generate_gaussian_noise(rng_key, position)
    return jax.tree.map(
        lambda x, gi, g, c, n: x + step_size * (gi * g + c) + jnp.sqrt(2.0 * step_size * gi) * n,
        position,
        inverse_metric,
        logdensity_grad,
        correction,
        noise,
    )


def mirror_langevin_step(
    rng_key: PRNGKey,
    position: jax.Array,
    logdensity_grad: jax.Array,
    mirror: AbstractMirrorMap,
    step_size,
    scheme: str = "euler",
    num_substeps: int = 10,
) -> jax.Array:
    """One mirror-Langevin step from ``position``; returns the new primal point.

    It discretises ``d grad phi(X) = grad log pi(X) dt + sqrt(2) hess phi(X)^(1/2) dW``.
    Euler: ``y = grad phi(x) + h grad log pi(x) + sqrt(2h) hess phi(x)^(1/2) xi``,
    ``x' = grad phi*(y)``. MLA: ``y = grad phi(x) + h grad log pi(x)``, then
    ``num_substeps`` Euler steps of length ``h / num_substeps`` of
    ``dY = sqrt(2) hess phi(grad phi*(Y))^(1/2) dW``; ``x' = grad phi*(Y_h)``.

    Args:
      rng_key: the key for the noise.
      position: ``x``, a 1-D array in the mirror's domain.
      logdensity_grad: ``grad log pi(x)``.
      mirror: the mirror map ``phi``.
      step_size: ``h``.
      scheme: ``"euler"`` or ``"mla"``.
      num_substeps: the dual diffusion's Euler substeps, for ``"mla"``.

    Returns:
      The new point ``x'``, in the mirror's domain up to floating point.

    References:
      Zhang, Peyré, Fadili, Pereyra, "Wasserstein control of mirror Langevin Monte Carlo",
      COLT 2020.
      Ahn, Chewi, "Efficient constrained sampling via the mirror-Langevin algorithm",
      NeurIPS 2021.
    """
    dual = mirror.grad(position) + step_size * logdensity_grad
    if scheme == "euler":
        noise = jax.random.normal(rng_key, position.shape, position.dtype)
        dual = dual + jnp.sqrt(2.0 * step_size) * mirror.hess_sqrt_matvec(position, noise)
        return mirror.grad_conj(dual)
    substep = step_size / num_substeps

    def one_substep(i, y):
        noise = jax.random.normal(jax.random.fold_in(rng_key, i), position.shape, position.dtype)
        x = mirror.grad_conj(y)
        return y + jnp.sqrt(2.0 * substep) * mirror.hess_sqrt_matvec(x, noise)

    return mirror.grad_conj(jax.lax.fori_loop(0, num_substeps, one_substep, dual))


def _axpy(a, x, y):
    return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def underdamped_langevin_baoab(logdensity_and_grad_fn: Callable) -> Callable:
    """One BAOAB step of underdamped Langevin dynamics with unit mass.

    ``dx = p dt``, ``dp = grad log p(x) dt - gamma p dt + sqrt(2 gamma) dW``, split into a
    half kick (B), a half drift (A), the exact Ornstein-Uhlenbeck solve of the friction and
    noise over the whole step (O: ``p <- e^{-gamma dt} p + sqrt(1 - e^{-2 gamma dt}) xi``),
    a half drift and a half kick. The last kick uses the gradient at the new position, which
    is returned for the next step's first kick.

    Args:
      logdensity_and_grad_fn: ``(x, *batch) -> (log density, gradient)``.

    Returns:
      ``one_step(rng_key, state, time_step, friction, batch=()) -> state``, on a NamedTuple
      state with fields ``position``, ``momentum``, ``logdensity`` and ``logdensity_grad``
      (other fields are carried over).

    References:
      Leimkuhler, Matthews, "Rational Construction of Stochastic Numerical Methods for
      Molecular Sampling", AMRX 2013.
    """

    def one_step(rng_key, state, time_step, friction, batch=()):
        half = 0.5 * time_step
        momentum = _axpy(half, state.logdensity_grad, state.momentum)
        position = _axpy(half, momentum, state.position)
        decay = jnp.exp(-friction * time_step)
        noise = generate_gaussian_noise(rng_key, momentum)
        damped = jax.tree.map(lambda p: decay * p, momentum)
        momentum = _axpy(jnp.sqrt(1.0 - decay**2), noise, damped)
        position = _axpy(half, momentum, position)
        logdensity, grad = logdensity_and_grad_fn(position, *batch)
        momentum = _axpy(half, grad, momentum)
        return state._replace(
            position=position, momentum=momentum, logdensity=logdensity, logdensity_grad=grad
        )

    return one_step


def underdamped_langevin_euler(logdensity_and_grad_fn: Callable) -> Callable:
    """One Euler step of underdamped Langevin dynamics with unit mass, as in SGHMC.

    ``p' = p + dt grad log p(x) - gamma dt p + sqrt(2 gamma dt) xi``, then ``x' = x + dt p'``.
    The gradient noise is not subtracted from the friction (Chen et al.'s ``B_hat = 0``).

    Args:
      logdensity_and_grad_fn: ``(x, *batch) -> (log density, gradient)``.

    Returns:
      ``one_step(rng_key, state, time_step, friction, batch=()) -> state``, on the same
      states as ``underdamped_langevin_baoab``.

    References:
      Chen, Fox, Guestrin, "Stochastic Gradient Hamiltonian Monte Carlo", ICML 2014.
    """

    def one_step(rng_key, state, time_step, friction, batch=()):
        noise = generate_gaussian_noise(rng_key, state.momentum)
        momentum = jax.tree.map(
            lambda p, g, n: (
                (1.0 - friction * time_step) * p
                + time_step * g
                + jnp.sqrt(2.0 * friction * time_step) * n
            ),
            state.momentum,
            state.logdensity_grad,
            noise,
        )
        position = _axpy(time_step, momentum, state.position)
        logdensity, grad = logdensity_and_grad_fn(position, *batch)
        return state._replace(
            position=position, momentum=momentum, logdensity=logdensity, logdensity_grad=grad
        )

    return one_step


UNDERDAMPED_INTEGRATORS = {
    "baoab": underdamped_langevin_baoab,
    "euler": underdamped_langevin_euler,
}
"""The underdamped integrators by the name ``sghmc(integrator=...)`` takes."""


__all__ = [
    "UNDERDAMPED_INTEGRATORS",
    "DiffusionState",
    "langevin_log_transition",
    "mirror_langevin_step",
    "overdamped_langevin",
    "preconditioned_langevin_move",
    "underdamped_langevin_baoab",
    "underdamped_langevin_euler",
]
