"""Stochastic-gradient MCMC: SGLD, SGHMC, pSGLD, SGLD with control variates, structured SGLD.

Every kernel here samples a ``Target`` with a data split. Each step draws its own minibatch
from ``target.data`` with the step's key, without replacement within the step, and follows
an unbiased estimate of the gradient of the log density: the prior plus ``num_data /
batch_size`` times the minibatch likelihood. One step-size convention holds throughout, the
one blackjax uses: a step of size ``h`` moves ``x + h * grad log p(x) + sqrt(2 h) * noise``
(SGHMC maps ``h`` to the time step ``sqrt(2 h)`` of its dynamics, so that its high-friction
limit is that same step).

As in ``ula``, the log density and the gradient at the current position are cached in the
state, so a step evaluates one (minibatch) gradient: the one at its end point, on the
minibatch that the step draws. A step whose end point has a non-finite log density or
gradient is undone and reported as ``diverging``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.diffusions import DiffusionState, overdamped_langevin
from blackjax.util import generate_gaussian_noise

from inferax.kernel import BurnInState, WarmupAlgorithm
from inferax.samplers.guarded import all_finite, tree_norm
from inferax.samplers.stochastic_gradient import (
    AbstractSGMCMCKernel,
    SGLDState,
    SGMCMCInfo,
    check_positive,
    langevin_algorithm,
    step_size_fn,
)
from inferax.minibatch import draw_minibatch, first_points
from inferax.target import Target, site_name
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey


def _keep_finite(new_state, old_state, finite):
    return jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, old_state)


def sgld_algorithm(
    target: Target, step_size, batch_size: int, schedule=None
) -> SamplingAlgorithm:
    """Stochastic gradient Langevin dynamics as a blackjax ``SamplingAlgorithm``.

    ``x' = x + h_n g(x) + sqrt(2 h_n) xi``, where ``g`` is the minibatch estimate of
    ``grad log p`` and ``h_n`` the step size at step ``n``.

    Args:
      target: a target with a data split.
      step_size: the step ``h``, a number or an optax schedule of the step count.
      batch_size: data points per minibatch.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``SGLDState`` and ``SGMCMCInfo``. ``init``
      evaluates the gradient on the first ``batch_size`` data points.
    """
    return langevin_algorithm(
        target.minibatch_logdensity_and_grad,
        step_size_fn(step_size, schedule),
        lambda rng_key: (draw_minibatch(rng_key, target.data, batch_size),),
        (first_points(target.data, batch_size),),
    )


@dataclasses.dataclass(frozen=True)
class sgld(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Stochastic gradient Langevin dynamics.

    Each step draws a minibatch of ``batch_size`` distinct data points with the step's key
    and moves ``x + h * grad log p(x) + sqrt(2 h) * noise``, with the gradient estimated by
    the prior plus ``num_data / batch_size`` times the minibatch likelihood. No step is
    rejected: the draws carry a bias of first order in ``h``, from the discretisation and
    from the gradient noise. With a schedule that decreases to zero (Welling and Teh take
    ``h_n = a (b + n)^-0.55``) the bias vanishes in the limit. Warmup is plain burn-in; the
    schedule's step count starts at the first warmup step.

    Args:
      step_size: the step ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      schedule: an optional optax schedule; the step at step ``n`` is then
        ``step_size * schedule(n)``. The default is a constant step.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=1000)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> post = inferax.sample(target, inferax.samplers.sgld(step_size=1e-4, batch_size=50),
      ...                       jax.random.key(0), num_chains=2, num_warmup=200,
      ...                       num_samples=200, progress=False)
      >>> sorted(post.stats)
      ['diverging', 'grad_norm', 'lp', 'step_size']

    References:
      Welling, Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics", ICML 2011.
    """

    step_size: Any
    batch_size: int
    schedule: Any = None

    name = "sgld"

    def __post_init__(self):
        self._check_config()

    def build(self, target: Target) -> SamplingAlgorithm:
        return sgld_algorithm(target, self.step_size, int(self.batch_size), self.schedule)


# --------------------------------------------------------------------------------------
# SGHMC.
# --------------------------------------------------------------------------------------


class SGHMCState(NamedTuple):
    """An SGHMC chain: position and momentum (unit mass), the minibatch log density and
    gradient at the position, and the step count."""

    position: ArrayTree
    momentum: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    step: jax.Array


def _axpy(a, x, y):
    return jax.tree.map(lambda xi, yi: a * xi + yi, x, y)


def underdamped_langevin_baoab(logdensity_and_grad_fn):
    """One BAOAB step of underdamped Langevin dynamics with unit mass.

    ``dx = p dt``, ``dp = grad log p(x) dt - gamma p dt + sqrt(2 gamma) dW``, split into a
    half kick (B), a half drift (A), the exact Ornstein-Uhlenbeck solve of the friction and
    noise over the whole step (O: ``p <- e^{-gamma dt} p + sqrt(1 - e^{-2 gamma dt}) xi``),
    a half drift and a half kick. The last kick uses the gradient at the new position, which
    is returned for the next step's first kick.

    Args:
      logdensity_and_grad_fn: ``(x, *batch) -> (log density, gradient)``.

    Returns:
      ``one_step(rng_key, state, time_step, friction, batch) -> state`` on ``SGHMCState``.

    References:
      Leimkuhler, Matthews, "Rational Construction of Stochastic Numerical Methods for
      Molecular Sampling", AMRX 2013.
    """

    def one_step(rng_key, state: SGHMCState, time_step, friction, batch=()) -> SGHMCState:
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
        return SGHMCState(position, momentum, logdensity, grad, state.step)

    return one_step


def underdamped_langevin_euler(logdensity_and_grad_fn):
    """One Euler step of underdamped Langevin dynamics with unit mass, as in SGHMC.

    ``p' = p + dt grad log p(x) - gamma dt p + sqrt(2 gamma dt) xi``, then ``x' = x + dt p'``.
    The gradient noise is not subtracted from the friction (Chen et al.'s ``B_hat = 0``).

    Args:
      logdensity_and_grad_fn: ``(x, *batch) -> (log density, gradient)``.

    Returns:
      ``one_step(rng_key, state, time_step, friction, batch) -> state`` on ``SGHMCState``.

    References:
      Chen, Fox, Guestrin, "Stochastic Gradient Hamiltonian Monte Carlo", ICML 2014.
    """

    def one_step(rng_key, state: SGHMCState, time_step, friction, batch=()) -> SGHMCState:
        noise = generate_gaussian_noise(rng_key, state.momentum)
        momentum = jax.tree.map(
            lambda p, g, n: (1.0 - friction * time_step) * p
            + time_step * g
            + jnp.sqrt(2.0 * friction * time_step) * n,
            state.momentum,
            state.logdensity_grad,
            noise,
        )
        position = _axpy(time_step, momentum, state.position)
        logdensity, grad = logdensity_and_grad_fn(position, *batch)
        return SGHMCState(position, momentum, logdensity, grad, state.step)

    return one_step


INTEGRATORS = {"baoab": underdamped_langevin_baoab, "euler": underdamped_langevin_euler}


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
    one_step = INTEGRATORS[integrator](logdensity_and_grad)
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
        finite = (
            jnp.isfinite(moved.logdensity)
            & all_finite(moved.logdensity_grad)
            & all_finite(moved.momentum)
        )
        new_state = _keep_finite(moved, state, finite)._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(moved.logdensity_grad), ~finite)

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
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=1000)
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
        if self.integrator not in INTEGRATORS:
            raise ValueError(
                f"sghmc: integrator must be one of {sorted(INTEGRATORS)}, got {self.integrator!r}"
            )

    def build(self, target: Target) -> SamplingAlgorithm:
        return sghmc_algorithm(
            target, self.step_size, int(self.batch_size), float(self.friction),
            self.integrator, self.schedule,
        )  # fmt: skip


# --------------------------------------------------------------------------------------
# pSGLD.
# --------------------------------------------------------------------------------------


class PSGLDState(NamedTuple):
    """A pSGLD chain: position, minibatch log density and gradient, the running average of
    squared per-datum gradients ``square_avg``, the correction term ``correction`` at the
    position (zeros when it is off), and the step count."""

    position: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    square_avg: ArrayTree
    correction: ArrayTree
    step: jax.Array


def psgld_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    decay: float = 0.99,
    eps: float = 1e-5,
    correction: bool = True,
    schedule=None,
) -> SamplingAlgorithm:
    """Preconditioned SGLD (RMSprop preconditioner) as a blackjax ``SamplingAlgorithm``.

    ``x' = x + h (G g + Gamma) + sqrt(2 h G) xi`` with ``G = 1 / (eps + sqrt(V))`` and ``V``
    the running average of squared per-datum gradients; see ``psgld``.

    Args:
      target: a target with a data split.
      step_size: ``h``, a number or an optax schedule.
      batch_size: data points per minibatch.
      decay: the RMSprop decay ``alpha`` in ``[0, 1)``.
      eps: ``lambda`` > 0, which bounds the preconditioner by ``1 / eps``.
      correction: include the correction term ``Gamma`` (one Hessian-vector product per
        step), or drop it.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``PSGLDState`` and ``SGMCMCInfo``.
    """
    num_data = target.num_data
    step_size_at = step_size_fn(step_size, schedule)
    value_and_grad = target.minibatch_logdensity_and_grad

    def evaluate(position, batch, probe):
        """The log density, gradient and (with a probe ``z``) ``z * (H z)``, an unbiased
        estimate of the Hessian's diagonal, in one forward-over-reverse pass."""
        if not correction:
            logdensity, grad = value_and_grad(position, batch)
            return logdensity, grad, jax.tree.map(jnp.zeros_like, grad)
        (logdensity, grad), (_, hvp) = jax.jvp(
            lambda x: value_and_grad(x, batch), (position,), (probe,)
        )
        return logdensity, grad, jax.tree.map(jnp.multiply, probe, hvp)

    def precondition(square_avg, grad, hessian_diag):
        """``G`` and ``Gamma`` from ``V``; ``V`` already includes the current gradient."""

        def leaf(v, g, h_diag):
            root = jnp.sqrt(v)
            g_inv = 1.0 / (eps + root)
            # d sqrt(V_i) / d x_i, holding the running average from before this step fixed:
            # V_i = alpha V_old + (1 - alpha) (g_i / N)^2.
            safe_root = jnp.where(root > 0, root, 1.0)
            slope = (1.0 - decay) * (g / num_data) * (h_diag / num_data) / safe_root
            d_root = jnp.where(root > 0, slope, 0.0)
            return g_inv, -(g_inv**2) * d_root

        pairs = jax.tree.map(leaf, square_avg, grad, hessian_diag)
        is_pair = lambda node: isinstance(node, tuple)  # noqa: E731
        g_inv = jax.tree.map(lambda pair: pair[0], pairs, is_leaf=is_pair)
        gamma = jax.tree.map(lambda pair: pair[1], pairs, is_leaf=is_pair)
        return g_inv, gamma

    def rademacher(rng_key, position):
        leaves, treedef = jax.tree.flatten(position)
        keys = jax.random.split(rng_key, len(leaves))
        return treedef.unflatten(
            [
                jax.random.rademacher(key, jnp.shape(leaf), jnp.result_type(leaf))
                for key, leaf in zip(keys, leaves, strict=True)
            ]
        )

    def init(position: ArrayLikeTree, rng_key=None) -> PSGLDState:
        del rng_key
        batch = first_points(target.data, batch_size)
        probe = jax.tree.map(jnp.ones_like, position)
        logdensity, grad, _ = evaluate(position, batch, probe)
        # V starts at the first squared gradient, not at zero: a zero start makes the first
        # steps take the preconditioner's largest values, 1 / (eps + sqrt(1 - alpha) |g|).
        square_avg = jax.tree.map(lambda g: jnp.square(g / num_data), grad)
        zeros = jax.tree.map(jnp.zeros_like, grad)
        return PSGLDState(position, logdensity, grad, square_avg, zeros, jnp.zeros((), jnp.int32))

    def step(rng_key: PRNGKey, state: PSGLDState) -> tuple[PSGLDState, SGMCMCInfo]:
        batch_key, noise_key, probe_key = jax.random.split(rng_key, 3)
        h = step_size_at(state.step)
        g_inv = jax.tree.map(lambda v: 1.0 / (eps + jnp.sqrt(v)), state.square_avg)
        noise = generate_gaussian_noise(noise_key, state.position)
        position = jax.tree.map(
            lambda x, gi, g, c, n: x + h * (gi * g + c) + jnp.sqrt(2.0 * h * gi) * n,
            state.position, g_inv, state.logdensity_grad, state.correction, noise,
        )  # fmt: skip
        batch = draw_minibatch(batch_key, target.data, batch_size)
        logdensity, grad, hessian_diag = evaluate(position, batch, rademacher(probe_key, position))
        square_avg = jax.tree.map(
            lambda v, g: decay * v + (1.0 - decay) * jnp.square(g / num_data),
            state.square_avg, grad,
        )  # fmt: skip
        if correction:
            _, gamma = precondition(square_avg, grad, hessian_diag)
        else:
            gamma = state.correction
        moved = PSGLDState(position, logdensity, grad, square_avg, gamma, state.step)
        finite = jnp.isfinite(logdensity) & all_finite(grad) & all_finite(gamma)
        new_state = _keep_finite(moved, state, finite)._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(grad), ~finite)

    return SamplingAlgorithm(init, step)


@dataclasses.dataclass(frozen=True)
class psgld(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Preconditioned SGLD: SGLD with an RMSprop diagonal preconditioner.

    With ``G = diag(1 / (eps + sqrt(V)))``, ``V`` the running average (decay ``alpha``) of
    the squared per-datum gradient ``(g / num_data)^2``, a step moves
    ``x + h (G g + Gamma) + sqrt(2 h G) * noise``: the convention
    ``x + h * grad log p + sqrt(2 h) * noise`` in the metric ``G``. Coordinates with small
    gradients take larger steps, which evens out badly scaled posteriors.

    The correction term ``Gamma_i = d G_ii / d x_i`` keeps the target invariant when ``G``
    varies with ``x``. ``G`` depends on ``x`` through the current gradient's share
    ``(1 - alpha)`` of ``V``; holding the older average fixed,
    ``Gamma_i = -G_ii^2 (1 - alpha) (g_i / N) (H_ii / N) / sqrt(V_i)``, with ``H_ii`` the
    diagonal of the minibatch Hessian. It is computed (``correction=True``, the default)
    with Hutchinson's unbiased estimate ``H_ii ~ z_i (H z)_i``, ``z`` a Rademacher vector,
    in the same forward-over-reverse pass as the gradient: a step costs about two gradient
    evaluations. ``correction=False`` drops it, as Li et al. do in their experiments: it is
    ``O(1 - alpha)`` against the drift, and dropping it leaves a bias of that order.
    The gradient in ``V`` is the whole log-density estimate over ``N``, so it differs
    from Li et al.'s per-datum likelihood gradient by the prior's ``grad log p(x) / N``. ``V``
    starts at the first squared gradient. Warmup is plain burn-in.

    Args:
      step_size: ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      decay: ``alpha`` in ``[0, 1)``.
      eps: ``lambda`` > 0; the preconditioner is at most ``1 / eps``.
      correction: include the correction term (see above).
      schedule: an optional optax schedule that multiplies ``step_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=1000)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> post = inferax.sample(target, inferax.samplers.psgld(step_size=1e-4, batch_size=50),
      ...                       jax.random.key(0), num_chains=2, num_warmup=200,
      ...                       num_samples=200, progress=False)
      >>> int(post.stats["diverging"].sum())
      0

    References:
      Li, Chen, Carlson, Carin, "Preconditioned Stochastic Gradient Langevin Dynamics for
      Deep Neural Networks", AAAI 2016.
      Ma, Chen, Fox, "A Complete Recipe for Stochastic Gradient MCMC", NeurIPS 2015.
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for
      Laplacian smoothing splines", 1989.
    """

    step_size: Any
    batch_size: int
    decay: float = 0.99
    eps: float = 1e-5
    correction: bool = True
    schedule: Any = None

    name = "psgld"

    def __post_init__(self):
        self._check_config()
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"psgld: decay must lie in [0, 1), got {self.decay}")
        check_positive(self.name, "eps", self.eps)

    def build(self, target: Target) -> SamplingAlgorithm:
        return psgld_algorithm(
            target, self.step_size, int(self.batch_size), float(self.decay), float(self.eps),
            bool(self.correction), self.schedule,
        )  # fmt: skip


# --------------------------------------------------------------------------------------
# SGLD with control variates.
# --------------------------------------------------------------------------------------


def find_mode(target: Target, max_num_steps: int = 200, gtol: float = 1e-6) -> ArrayTree:
    """A mode of ``target.logdensity``, by optax's L-BFGS on the full data from ``target.init``.

    Stops when ``|grad| <= gtol (1 + |log p|)`` or after ``max_num_steps`` iterations.

    Args:
      target: the target.
      max_num_steps: the iteration cap.
      gtol: the relative gradient tolerance.

    Returns:
      The mode, with the structure of ``target.init``.
    """
    objective = lambda params: -target.logdensity(params)  # noqa: E731
    optimizer = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = optimizer.update(
            grad, state, params, value=value, grad=grad, value_fn=objective
        )
        return optax.apply_updates(params, updates), state

    def unfinished(carry):
        _, state = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        value = optax.tree.get(state, "value")
        converged = optax.tree.norm(grad) <= gtol * (1.0 + jnp.abs(value))
        return (count == 0) | ((count < max_num_steps) & ~converged)

    init = target.init
    mode, _ = jax.lax.while_loop(unfinished, step, (init, optimizer.init(init)))
    return mode


class SGLDCVWarmupState(NamedTuple):
    """SGLD-CV's warmup: the chain, and the centre with the full-data log density and
    gradient there, found once when warmup starts."""

    chain: SGLDState
    centre: ArrayTree
    centre_logdensity: jax.Array
    centre_grad: ArrayTree


def sgld_cv_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    centre: ArrayTree,
    centre_logdensity: jax.Array,
    centre_grad: ArrayTree,
    schedule=None,
) -> SamplingAlgorithm:
    """SGLD with control variates as a blackjax ``SamplingAlgorithm``.

    The gradient estimate is ``grad log p(c) + g_B(x) - g_B(c)``, with ``c`` the centre,
    ``grad log p(c)`` its full-data gradient and ``g_B`` the minibatch estimate on the
    step's batch; the step is ``x + h * estimate + sqrt(2 h) * noise``.

    Args:
      target: a target with a data split.
      step_size: ``h``, a number or an optax schedule.
      batch_size: data points per minibatch.
      centre: the centre ``c``, a position.
      centre_logdensity: ``log p(c)`` on the full data.
      centre_grad: ``grad log p(c)`` on the full data.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``SGLDState`` and ``SGMCMCInfo``; the state's
      log density is the matching control-variate estimate.
    """

    def difference(position, at_centre, batch):
        return target.minibatch_logdensity(position, batch) - target.minibatch_logdensity(
            at_centre, batch
        )

    # One backward pass gives g_B(x) and -g_B(c).
    difference_and_grads = jax.value_and_grad(difference, argnums=(0, 1))

    def logdensity_and_grad(position, batch):
        value, (grad, minus_centre_grad) = difference_and_grads(position, centre, batch)
        grad = jax.tree.map(lambda c, g, m: c + g + m, centre_grad, grad, minus_centre_grad)
        return centre_logdensity + value, grad

    return langevin_algorithm(
        logdensity_and_grad,
        step_size_fn(step_size, schedule),
        lambda rng_key: (draw_minibatch(rng_key, target.data, batch_size),),
        (first_points(target.data, batch_size),),
    )


class _SGLDCVFields(NamedTuple):
    step_size: Any
    batch_size: int
    schedule: Any
    max_opt_steps: int


@dataclasses.dataclass(frozen=True, eq=False)
class sgld_cv(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """SGLD with control variates: the minibatch gradient is centred on a mode.

    The gradient estimate at ``x`` is ``grad log p(c) + g_B(x) - g_B(c)``: the full-data
    gradient at a fixed centre ``c`` plus the minibatch estimate of the difference between
    ``x`` and ``c``. It is unbiased for any ``c``; near a mode its variance is of the order
    of ``|x - c|^2`` instead of ``num_data^2 / batch_size``, so at the same step the chain
    carries far less gradient noise than SGLD. A step moves
    ``x + h * grad log p(x) + sqrt(2 h) * noise`` (blackjax's convention) with the estimate
    in place of ``grad log p(x)``, and costs two minibatch gradients. When no
    centre is given, optax's L-BFGS finds a mode from ``target.init`` on the full data;
    the centre and its full-data gradient are computed once, when warmup starts (for all
    chains at once), and warmup then burns in. ``Posterior.tuned`` holds the centre.

    Args:
      step_size: ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      centre: a position (pytree like ``target.init``, unconstrained space) near a mode,
        or ``None`` to find one.
      schedule: an optional optax schedule that multiplies ``step_size``.
      max_opt_steps: the cap on L-BFGS iterations when the kernel finds the mode.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=1000)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> post = inferax.sample(target, inferax.samplers.sgld_cv(step_size=1e-4, batch_size=50),
      ...                       jax.random.key(0), num_chains=2, num_warmup=200,
      ...                       num_samples=200, progress=False)
      >>> bool(abs(post.tuned["centre"][0] - y.sum() / (1 + len(y))) < 1e-3)
      True

    References:
      Baker, Fearnhead, Fox, Nemeth, "Control variates for stochastic gradient MCMC",
      Statistics and Computing 2019.
    """

    step_size: Any
    batch_size: int
    centre: Any = None
    schedule: Any = None
    max_opt_steps: int = 200

    name = "sgld_cv"

    def __post_init__(self):
        self._check_config()
        if self.centre is not None:
            object.__setattr__(self, "centre", jax.tree.map(np.asarray, self.centre))
        steps = self.max_opt_steps
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"sgld_cv: max_opt_steps must be an integer >= 1, got {steps}")

    # The centre is an array, which has no hash: configs are equal when their settings are
    # and their centre is the same object, so a compiled program is reused for them.
    def _fields(self) -> _SGLDCVFields:
        return _SGLDCVFields(self.step_size, self.batch_size, self.schedule, self.max_opt_steps)

    def __eq__(self, other):
        return (
            type(other) is type(self)
            and self._fields() == other._fields()
            and self.centre is other.centre
        )

    def __hash__(self):
        return hash((type(self), self._fields(), id(self.centre)))

    def check_target(self, target: Target) -> None:
        super().check_target(target)
        if self.centre is not None:
            structure, want = jax.tree.structure(self.centre), jax.tree.structure(target.init)
            shapes = [np.shape(leaf) for leaf in jax.tree.leaves(self.centre)]
            want_shapes = [np.shape(leaf) for leaf in jax.tree.leaves(target.init)]
            if structure != want or shapes != want_shapes:
                raise ValueError(
                    f"sgld_cv: the centre must be a position like target.init "
                    f"({want}, shapes {want_shapes}); got {structure}, shapes {shapes}"
                )

    def _centre(self, target: Target):
        if self.centre is None:
            centre = find_mode(target, self.max_opt_steps)
        else:
            centre = jax.tree.map(
                lambda c, leaf: jnp.asarray(c, jnp.result_type(leaf)), self.centre, target.init
            )
        logdensity, grad = target.logdensity_and_grad(centre)
        return centre, logdensity, grad

    def build(
        self, target: Target, centre=None, centre_logdensity=None, centre_grad=None
    ) -> SamplingAlgorithm:
        """The algorithm, at the tuned centre. Without one (outside ``inferax.sample``) the
        centre, and its full-data gradient, are computed here."""
        if centre is None:
            centre, centre_logdensity, centre_grad = self._centre(target)
        return sgld_cv_algorithm(
            target, self.step_size, int(self.batch_size), centre, centre_logdensity,
            centre_grad, self.schedule,
        )  # fmt: skip

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        def algorithm(warmup_state):
            return self.build(
                target, warmup_state.centre, warmup_state.centre_logdensity,
                warmup_state.centre_grad,
            )  # fmt: skip

        def init(position):
            # Nothing here depends on the chain's position, so under the driver's vmap the
            # mode search and the full-data gradient run once, not once per chain.
            centre, logdensity, grad = self._centre(target)
            chain = self.build(target, centre, logdensity, grad).init(position)
            return SGLDCVWarmupState(chain, centre, logdensity, grad)

        def step(rng_key, warmup_state, schedule_entry):
            del schedule_entry
            chain, _ = algorithm(warmup_state).step(rng_key, warmup_state.chain)
            return warmup_state._replace(chain=chain)

        def final(warmup_state):
            tuned = {
                "centre": warmup_state.centre,
                "centre_logdensity": warmup_state.centre_logdensity,
                "centre_grad": warmup_state.centre_grad,
            }
            return warmup_state.chain, tuned

        return WarmupAlgorithm(init, step, final)


# --------------------------------------------------------------------------------------
# Structured SGLD.
# --------------------------------------------------------------------------------------


class StructuredSGLDState(NamedTuple):
    """A structured SGLD chain: position, the minibatch log density there, the structured
    gradient (each group's at its composite), the step count, and a ring buffer of the
    chain's past positions (flattened, ``(buffer_size, dim)``) with the number of pushes."""

    position: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    step: jax.Array
    buffer: jax.Array
    buffer_count: jax.Array


def group_assignment(groups: Sequence, example_position: ArrayLikeTree) -> np.ndarray:
    """Which group each coordinate of the flattened position belongs to.

    Args:
      groups: one entry per group; an entry is a site name (a leaf of the position, named
        as in ``Target.constrain``'s default: ``"w"``, ``"layer.0"``), an integer index into
        the flattened position, or a sequence of these.
      example_position: a position, such as ``target.init``.

    Returns:
      An int array with one group index per flattened coordinate.

    Raises:
      ValueError: an unknown name or index, or a coordinate in no group or in two.
    """
    leaves = jax.tree_util.tree_flatten_with_path(example_position)[0]
    offsets, start = {}, 0
    for path, leaf in leaves:
        size = int(np.size(leaf))
        offsets[site_name(path)] = range(start, start + size)
        start += size
    dim = start
    owner = np.full(dim, -1, dtype=np.int32)
    for index, group in enumerate(groups):
        members = group if isinstance(group, tuple | list) else (group,)
        for member in members:
            if isinstance(member, str):
                if member not in offsets:
                    raise ValueError(
                        f"structured_sgld: group {index} names '{member}', which is not a "
                        f"site of the position; sites are {sorted(offsets)}"
                    )
                coordinates = list(offsets[member])
            elif isinstance(member, int | np.integer) and not isinstance(member, bool):
                if not 0 <= member < dim:
                    raise ValueError(
                        f"structured_sgld: group {index} has index {member}, outside the "
                        f"flattened position of size {dim}"
                    )
                coordinates = [int(member)]
            else:
                raise TypeError(
                    f"structured_sgld: a group holds site names or integer indices, got "
                    f"{type(member).__name__}"
                )
            if np.any(owner[coordinates] >= 0):
                raise ValueError(f"structured_sgld: group {index} overlaps an earlier group")
            owner[coordinates] = index
    if np.any(owner < 0):
        missing = np.flatnonzero(owner < 0).tolist()
        raise ValueError(
            f"structured_sgld: flattened coordinates {missing} are in no group; every "
            "coordinate must be in exactly one"
        )
    return owner


def structured_sgld_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    groups: Sequence,
    buffer_size: int,
    dropout: int | None = None,
    schedule=None,
    update_buffer: bool = True,
) -> SamplingAlgorithm:
    """Structured SGLD as a blackjax ``SamplingAlgorithm``; see ``structured_sgld``.

    Args:
      target: a target with a data split.
      step_size: ``h``, a number or an optax schedule.
      batch_size: data points per minibatch.
      groups: the groups, as ``group_assignment`` reads them.
      buffer_size: past positions kept per chain.
      dropout: ``None``, one composite per group; or ``L``, the number of composites,
        with each group owned by one of them drawn at random every step.
      schedule: an optional optax schedule that multiplies ``step_size``.
      update_buffer: push each new position into the buffer (True), or keep the buffer
        as it is (False).

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``StructuredSGLDState`` and ``SGMCMCInfo``.
    """
    flat_init, unravel = jax.flatten_util.ravel_pytree(target.init)
    dim = flat_init.shape[0]
    owner = jnp.asarray(group_assignment(groups, target.init))
    num_groups = len(groups)
    num_composites = num_groups if dropout is None else int(dropout)
    coordinates = jnp.arange(dim)

    def flat_logdensity(flat, batch):
        return target.minibatch_logdensity(unravel(flat), batch)

    flat_value_and_grad = jax.vmap(jax.value_and_grad(flat_logdensity), in_axes=(0, None))

    def structured_logdensity_and_grad(position, batch, buffer, buffer_count, rng_key):
        """The log density at ``position`` on ``batch``, and the structured gradient: the
        gradient of group ``k`` is taken at the composite that owns ``k``, whose other
        groups come from one past draw in ``buffer``."""
        slot_key, owner_key = jax.random.split(rng_key)
        flat, _ = jax.flatten_util.ravel_pytree(position)
        filled = jnp.minimum(buffer_count, buffer.shape[0])
        slots = jax.random.randint(slot_key, (num_composites,), 0, filled)
        if dropout is None:
            composite_of_group = jnp.arange(num_groups)
        else:
            composite_of_group = jax.random.randint(owner_key, (num_groups,), 0, num_composites)
        composite_of_coordinate = composite_of_group[owner]
        owns = composite_of_coordinate[None, :] == jnp.arange(num_composites)[:, None]
        composites = jnp.where(owns, flat[None, :], buffer[slots])
        _, grads = flat_value_and_grad(composites, batch)
        grad = grads[composite_of_coordinate, coordinates]
        logdensity = target.minibatch_logdensity(position, batch)
        return logdensity, unravel(grad)

    integrator = overdamped_langevin(structured_logdensity_and_grad)
    step_size_at = step_size_fn(step_size, schedule)

    def init(position: ArrayLikeTree, rng_key=None) -> StructuredSGLDState:
        del rng_key
        flat, _ = jax.flatten_util.ravel_pytree(position)
        buffer = jnp.broadcast_to(flat, (buffer_size, dim))
        count = jnp.ones((), jnp.int32)
        batch = first_points(target.data, batch_size)
        logdensity, grad = structured_logdensity_and_grad(
            position, batch, buffer, count, jax.random.key(0)
        )
        return StructuredSGLDState(
            position, logdensity, grad, jnp.zeros((), jnp.int32), buffer, count
        )

    def step(rng_key: PRNGKey, state: StructuredSGLDState):
        batch_key, noise_key, composite_key = jax.random.split(rng_key, 3)
        h = step_size_at(state.step)
        batch = draw_minibatch(batch_key, target.data, batch_size)
        diffusion = DiffusionState(state.position, state.logdensity, state.logdensity_grad)
        # The composites at the end point draw from the buffer of earlier positions; the end
        # point joins the buffer after.
        moved = integrator(
            noise_key, diffusion, h, (batch, state.buffer, state.buffer_count, composite_key)
        )
        position, logdensity, grad = moved
        if update_buffer:
            flat, _ = jax.flatten_util.ravel_pytree(position)
            buffer = state.buffer.at[state.buffer_count % buffer_size].set(flat)
            count = state.buffer_count + 1
        else:
            buffer, count = state.buffer, state.buffer_count
        moved = StructuredSGLDState(position, logdensity, grad, state.step, buffer, count)
        finite = jnp.isfinite(logdensity) & all_finite(grad)
        new_state = _keep_finite(moved, state, finite)._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(grad), ~finite)

    return SamplingAlgorithm(init, step)


def _freeze_groups(groups) -> tuple:
    if isinstance(groups, str | int) or not isinstance(groups, Sequence):
        raise TypeError(
            "structured_sgld: groups must be a sequence of groups, such as (('w',), ('b',)) "
            f"or ((0,), (1,)); got {groups!r}"
        )
    return tuple(tuple(g) if isinstance(g, tuple | list) else (g,) for g in groups)


@dataclasses.dataclass(frozen=True)
class structured_sgld(AbstractSGMCMCKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Structured SGLD (S-SGLD): Langevin steps that break the dependence between groups of
    coordinates, for faster mixing.

    The step keeps the convention ``x + h * grad log p(x) + sqrt(2 h) * noise``, group by
    group: the coordinates are split into groups ``x = (x_1, ..., x_K)``, and group ``k``
    moves ``x_k + h * grad_k log p(x~) + sqrt(2 h) * noise``, with the
    gradient taken at a composite ``x~`` that holds the chain's current ``x_k`` and, for
    every other group, the values of one past draw picked at random from a buffer of the
    chain's own past positions. The chain then samples the structured approximation
    ``q(x) = prod_k q_k(x_k)`` with ``q_k(x_k) ∝ exp(E_{q_-k} log p(x_k, x_-k))``, the
    coordinate-ascent variational optimum over that factorisation, without assuming a
    parametric form for the ``q_k``: the correlations between groups are given up, in
    exchange for much faster mixing when they are strong (for two coordinates with
    correlation ``rho``, each marginal takes the mean-field variance ``1 - rho^2``). With
    one group it is SGLD. A step costs one minibatch gradient per composite, evaluated
    together with ``vmap``, plus one minibatch log density.

    The buffer is a ring of the last ``buffer_size`` positions, filled during warmup.
    With ``freeze_buffer=True`` (the default) sampling keeps the buffer as warmup left it,
    so the sampling phase is a time-homogeneous Markov chain whose stationary law is the
    self-averaged target above, and each group mixes at its own conditional rate.
    ``freeze_buffer=False`` keeps pushing every draw into the buffer while sampling, as
    Alexos et al. do; the buffer's mean then follows the slow coordinate-ascent
    iteration (a factor ``rho`` per buffer turnover for two groups), which adds a
    long-lived, small component to every group: on the correlated 2-D Gaussian of
    ``docs/sgmcmc.md`` its integrated autocorrelation time is several times SGLD's, not
    lower. Either way, warmup must be long enough for the buffer to settle: a few times
    ``buffer_size / (1 - rho)`` steps, when the groups' correlation is ``rho``.

    ``dropout=L`` is the scalable variant: only ``L`` composites are built per step; each
    group is owned by one of them, drawn at random every step, and its gradient is taken at
    the composite that owns it, whose other groups come from the buffer. Groups that share
    a composite keep their dependence in that step, so the chain sits between SGLD
    (``L = 1``) and the fully structured one, at the cost of ``L`` gradients instead of
    ``K``.

    Args:
      step_size: ``h`` > 0, or an optax schedule ``n -> h_n``.
      batch_size: data points per minibatch, at most ``target.num_data``.
      groups: one entry per group: site names (leaves of the position, such as ``"w"``) or
        integer indices into the flattened position, or sequences of them. Every coordinate
        must be in exactly one group.
      buffer_size: past positions kept per chain, >= 1.
      dropout: ``None`` for one composite per group, or ``L`` >= 1 composites.
      schedule: an optional optax schedule that multiplies ``step_size``.
      freeze_buffer: keep the buffer fixed after warmup (True), or keep filling it.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=(1000, 2))
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * jnp.sum(mu**2), init=jnp.zeros(2),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> kernel = inferax.samplers.structured_sgld(
      ...     step_size=1e-4, batch_size=50, groups=((0,), (1,)), buffer_size=100)
      >>> post = inferax.sample(target, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=200, num_samples=200, progress=False)
      >>> post.draws["x"].shape
      (2, 200, 2)

    References:
      Alexos, Boyd, Mandt, "Structured Stochastic Gradient MCMC", ICML 2022.
    """

    step_size: Any
    batch_size: int
    groups: Any
    buffer_size: int
    dropout: int | None = None
    schedule: Any = None
    freeze_buffer: bool = True

    name = "structured_sgld"

    def __post_init__(self):
        self._check_config()
        object.__setattr__(self, "groups", _freeze_groups(self.groups))
        if not self.groups:
            raise ValueError("structured_sgld: give at least one group")
        size = self.buffer_size
        if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
            raise ValueError(f"structured_sgld: buffer_size must be an integer >= 1, got {size}")
        if self.dropout is not None:
            count = self.dropout
            if not isinstance(count, int | np.integer) or isinstance(count, bool) or count < 1:
                raise ValueError(
                    f"structured_sgld: dropout must be None or an integer number of "
                    f"composites >= 1, got {count}"
                )

    def check_target(self, target: Target) -> None:
        super().check_target(target)
        group_assignment(self.groups, target.init)

    def build(self, target: Target, update_buffer: bool | None = None) -> SamplingAlgorithm:
        """The algorithm; by default it updates the buffer unless ``freeze_buffer`` is set.
        Warmup always updates it."""
        if update_buffer is None:
            update_buffer = not self.freeze_buffer
        return structured_sgld_algorithm(
            target, self.step_size, int(self.batch_size), self.groups, int(self.buffer_size),
            self.dropout, self.schedule, update_buffer,
        )  # fmt: skip

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        algorithm = self.build(target, update_buffer=True)

        def init(position):
            return BurnInState(algorithm.init(position))

        def step(rng_key, warmup_state, schedule_entry):
            del schedule_entry
            return BurnInState(algorithm.step(rng_key, warmup_state.chain)[0])

        def final(warmup_state):
            return warmup_state.chain, {}

        return WarmupAlgorithm(init, step, final)
