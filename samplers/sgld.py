"""Stochastic gradient Langevin dynamics: SGLD, and pSGLD with its RMSprop preconditioner.

Both take the overdamped Langevin step ``x + h * grad log p(x) + sqrt(2 h) * noise`` on a
minibatch estimate of the gradient (``inferax.samplers.stochastic_gradient``); pSGLD takes
it in a diagonal metric (``inferax.samplers.integrators.preconditioned_langevin_move``).
The log density and gradient at the current position are cached in the state, so a step
evaluates one minibatch gradient, at its end point. A step whose end point has a
non-finite log density or gradient is undone and reported as ``diverging``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.base import SamplingAlgorithm

from inferax.kernel import as_number
from inferax.minibatch import draw_minibatch, first_points
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import preconditioned_langevin_move
from inferax.samplers.stochastic_gradient import (
    AbstractSGMCMCKernel,
    SGMCMCInfo,
    check_positive,
    langevin_algorithm,
    step_size_fn,
)
from inferax.target import Target
from inferax.tree_math import tree_norm
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey


def sgld_algorithm(target: Target, step_size, batch_size: int, schedule=None) -> SamplingAlgorithm:
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
        position = preconditioned_langevin_move(
            noise_key, state.position, state.logdensity_grad, h, g_inv, state.correction
        )
        batch = draw_minibatch(batch_key, target.data, batch_size)
        logdensity, grad, hessian_diag = evaluate(position, batch, rademacher(probe_key, position))
        square_avg = jax.tree.map(
            lambda v, g: decay * v + (1.0 - decay) * jnp.square(g / num_data),
            state.square_avg,
            grad,
        )
        if correction:
            _, gamma = precondition(square_avg, grad, hessian_diag)
        else:
            gamma = state.correction
        moved = PSGLDState(position, logdensity, grad, square_avg, gamma, state.step)
        new_state, diverging = guarded(moved, state, (logdensity, grad, gamma))
        new_state = new_state._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(grad), diverging)

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
      >>> scale = np.array([1.0, 50.0])
      >>> y = np.random.default_rng(0).normal(scale, scale, size=(1000, 2))
      >>> def log_likelihood(mu, batch):
      ...     return -0.5 * jnp.sum(((batch - mu) / scale) ** 2)
      >>> target = inferax.Target(log_prior=lambda mu: -0.5 * jnp.sum((mu / 100.0) ** 2),
      ...                         init=jnp.zeros(2), log_likelihood=log_likelihood, data=y)
      >>> algorithm = inferax.samplers.psgld(step_size=1e-4, batch_size=50).build(target)
      >>> state, info = algorithm.step(jax.random.key(0), algorithm.init(target.init))
      >>> bool(info.diverging), int(state.step)
      (False, 1)

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
        decay = as_number(self.name, "decay", self.decay)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"psgld: decay must lie in [0, 1), got {decay}")
        check_positive(self.name, "eps", self.eps)
        object.__setattr__(self, "decay", decay)

    def build(self, target: Target) -> SamplingAlgorithm:
        return psgld_algorithm(
            target,
            self.step_size,
            int(self.batch_size),
            float(self.decay),
            float(self.eps),
            bool(self.correction),
            self.schedule,
        )


__all__ = [
    "PSGLDState",
    "psgld",
    "psgld_algorithm",
    "sgld",
    "sgld_algorithm",
]
