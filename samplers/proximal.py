"""Proximal Langevin samplers for ``pi(x) ∝ exp(-f(x) - g(x))`` with ``g = target.nonsmooth``.

``g`` is replaced by its Moreau-Yosida envelope
``g^lam(x) = min_p g(p) + |p - x|^2 / (2 lam)``, whose gradient ``(x - prox_{lam g}(x)) / lam``
is Lipschitz, and the smoothed density ``pi^lam ∝ exp(-f - g^lam)`` is sampled with the
Langevin step ``x' = x + h grad log pi^lam(x) + sqrt(2h) xi``: blackjax's
``overdamped_langevin`` integrator, the one that ``ula`` steps with. MYULA keeps every step
and targets ``pi^lam`` up to an O(h) bias; MYMALA accepts or rejects each step against
``pi`` itself, so it targets ``pi`` exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm

from inferax.kernel import AbstractKernel, check_step_size
from inferax.nonsmooth import AbstractNonsmooth
from inferax.samplers.integrators import (
    DiffusionState,
    langevin_log_transition,
    overdamped_langevin,
)
from inferax.samplers.langevin import ula_algorithm
from inferax.target import Target
from inferax.tree_math import all_finite
from inferax.typing import PRNGKey


def smooth_logdensity(target: Target) -> Callable[[jax.Array], jax.Array]:
    """``-f``: the target's log density without its nonsmooth part (prior plus likelihood)."""

    def logdensity_fn(x):
        value = target.log_prior(x)
        if target.log_likelihood is not None:
            value = value + target.log_likelihood(x, target.data)
        return value

    return logdensity_fn


def envelope_logdensity(
    logdensity_fn: Callable, envelope_value_and_grad: Callable
) -> Callable[[jax.Array], jax.Array]:
    """``logdensity_fn(x) - envelope(x)``, where ``envelope_value_and_grad(x)`` gives the
    envelope and its gradient in closed form from one proximity operator, rather than
    differentiating through the prox."""

    @jax.custom_jvp
    def envelope(x):
        return envelope_value_and_grad(x)[0]

    @envelope.defjvp
    def _envelope_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        value, grad = envelope_value_and_grad(x)
        return value, jnp.vdot(grad, dx)

    return lambda x: logdensity_fn(x) - envelope(x)


def moreau_yosida_logdensity(logdensity_fn: Callable, g: AbstractNonsmooth, smoothing):
    """``log pi^lam = -f - g^lam``: the Moreau-Yosida smoothed log density.

    ``g^lam(x) = g(p) + |x - p|^2 / (2 lam)`` and ``grad g^lam(x) = (x - p) / lam`` with
    ``p = prox_{lam g}(x)``.
    """

    def value_and_grad(x):
        p = g.prox(x, smoothing)
        # g(p) is 0 on an indicator's set; where(isfinite) keeps a rounding-error step off
        # the set from turning the envelope infinite.
        gp = g.value(p)
        value = jnp.where(jnp.isfinite(gp), gp, 0.0) + jnp.sum((x - p) ** 2) / (2 * smoothing)
        return value, (x - p) / smoothing

    return envelope_logdensity(logdensity_fn, value_and_grad)


def check_nonsmooth_target(name: str, target: Target) -> AbstractNonsmooth:
    """A proximal kernel's target: a single 1-D array position and a nonsmooth term."""
    if target.nonsmooth is None:
        raise ValueError(
            f"{name}: the target has no nonsmooth part; give one with "
            "Target(..., nonsmooth=inferax.samplers.L1(1.0)) or use a gradient sampler"
        )
    if not isinstance(target.nonsmooth, AbstractNonsmooth):
        raise ValueError(
            f"{name}: target.nonsmooth must be a term from inferax.samplers (L1, NonNegative, "
            f"Box, Simplex, Linear, TotalVariation1D), got {type(target.nonsmooth).__name__}"
        )
    check_array_position(name, target)
    return target.nonsmooth


def check_array_position(name: str, target: Target) -> None:
    """Proximal and mirror kernels act on one 1-D array, not on a pytree of sites."""
    init = target.init
    if not isinstance(init, jax.Array | np.ndarray) or np.ndim(init) != 1:
        shape = np.shape(init) if hasattr(init, "shape") else "?"
        raise ValueError(
            f"{name}: the target's position must be a single 1-D array (got "
            f"{type(init).__name__} of shape {shape}); "
            "nonsmooth terms and mirror maps act on a vector"
        )


def check_smoothing(name: str, smoothing) -> None:
    """Raises unless ``smoothing``, an envelope's parameter, is a finite positive number."""
    if not isinstance(smoothing, int | float) or isinstance(smoothing, bool):
        raise TypeError(f"{name}: smoothing must be a number, got {type(smoothing).__name__}")
    if not np.isfinite(smoothing) or smoothing <= 0:
        raise ValueError(f"{name}: smoothing must be finite and > 0, got {smoothing}")


class MYMALAState(NamedTuple):
    """A MYMALA chain: its position, the exact log density there (the acceptance test's),
    and the smoothed log density and gradient (the proposal's)."""

    position: jax.Array
    logdensity: jax.Array
    smoothed_logdensity: jax.Array
    smoothed_grad: jax.Array


class MYULAInfo(NamedTuple):
    """``diverging`` marks a step whose end point had a non-finite smoothed density or
    gradient (the chain stayed put); ``left_support`` a draw outside the set where the
    nonsmooth term is finite."""

    diverging: jax.Array
    left_support: jax.Array


class MYMALAInfo(NamedTuple):
    """``acceptance_rate`` is the Metropolis-Hastings probability of the proposal;
    ``diverging`` marks a proposal with a non-finite smoothed density or gradient."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    diverging: jax.Array


def mymala_algorithm(logdensity_fn, smoothed_logdensity_fn, step_size) -> SamplingAlgorithm:
    """MYMALA as a blackjax ``SamplingAlgorithm``: Langevin proposals on the smoothed density,
    Metropolis-Hastings acceptance against the exact one.

    Args:
      logdensity_fn: ``log pi``, ``-inf`` off the support of ``g``.
      smoothed_logdensity_fn: ``log pi^lam``, which drives the proposal.
      step_size: the step ``h``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``MYMALAState`` and ``MYMALAInfo``.
    """
    smoothed_and_grad = jax.value_and_grad(smoothed_logdensity_fn)
    integrator = overdamped_langevin(smoothed_and_grad)

    def init(position, rng_key=None) -> MYMALAState:
        del rng_key
        smoothed, grad = smoothed_and_grad(position)
        return MYMALAState(position, logdensity_fn(position), smoothed, grad)

    def step(rng_key: PRNGKey, state: MYMALAState) -> tuple[MYMALAState, MYMALAInfo]:
        proposal_key, accept_key = jax.random.split(rng_key)
        moved = integrator(
            proposal_key,
            DiffusionState(state.position, state.smoothed_logdensity, state.smoothed_grad),
            step_size,
        )
        exact = logdensity_fn(moved.position)
        log_ratio = (
            exact
            - state.logdensity
            + langevin_log_transition(
                state.position, moved.position, moved.logdensity_grad, step_size
            )
            - langevin_log_transition(
                moved.position, state.position, state.smoothed_grad, step_size
            )
        )
        finite = all_finite((moved.logdensity, moved.logdensity_grad))
        log_ratio = jnp.where(finite & ~jnp.isnan(log_ratio), log_ratio, -jnp.inf)
        acceptance_rate = jnp.minimum(1.0, jnp.exp(log_ratio))
        accepted = jax.random.uniform(accept_key) < acceptance_rate
        proposal = MYMALAState(moved.position, exact, moved.logdensity, moved.logdensity_grad)
        new_state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposal, state)
        return new_state, MYMALAInfo(acceptance_rate, accepted, ~finite)

    return SamplingAlgorithm(init, step)


def _left_support(g: AbstractNonsmooth, position) -> jax.Array:
    return ~jnp.isfinite(g.value(position))


class AbstractMoreauYosidaKernel(AbstractKernel):
    """A Langevin kernel on the Moreau-Yosida envelope of the target's nonsmooth part: a step
    size and a smoothing, both checked when the config is made, and a target that must have
    a nonsmooth term."""

    step_size: float
    smoothing: float

    def __post_init__(self):
        check_step_size(self)
        check_smoothing(self.name, self.smoothing)

    def check_target(self, target: Target) -> None:
        check_nonsmooth_target(self.name, target)

    def smoothed_logdensity(self, target: Target) -> Callable[[jax.Array], jax.Array]:
        """The target's log density with its nonsmooth part replaced by its envelope."""
        return moreau_yosida_logdensity(
            smooth_logdensity(target), target.nonsmooth, self.smoothing
        )


@dataclasses.dataclass(frozen=True)
class myula(AbstractMoreauYosidaKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The Moreau-Yosida unadjusted Langevin algorithm (MYULA).

    ``x' = x - h grad f(x) - (h / lam)(x - prox_{lam g}(x)) + sqrt(2h) xi``: the Langevin
    step on the Moreau-Yosida smoothed density ``pi^lam ∝ exp(-f - g^lam)``, where ``f`` is
    the target's smooth part and ``g = target.nonsmooth``. Every step is kept, so the draws
    carry an O(h) bias and the smoothing's bias, which vanishes as ``lam`` shrinks. For an
    indicator ``g`` the draws can leave its set; ``left_support`` counts them. A step with a
    non-finite smoothed density is undone and counted in ``diverging``.

    Args:
      step_size: the step ``h`` > 0.
      smoothing: the Moreau-Yosida parameter ``lam`` > 0; ``lam`` near ``h`` is usual.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import samplers
      >>> target = inferax.Target(log_prior=lambda x: -0.5 * jnp.sum(x**2), init=jnp.zeros(2),
      ...                         nonsmooth=samplers.L1(1.0))
      >>> post = inferax.sample(target, samplers.myula(step_size=0.05, smoothing=0.05),
      ...                       jax.random.key(0), num_chains=2, num_warmup=100,
      ...                       num_samples=100, progress=False)
      >>> sorted(post.stats)
      ['diverging', 'left_support', 'lp', 'smoothing', 'step_size']

    References:
      Durmus, Moulines, Pereyra, "Efficient Bayesian computation by proximal Markov chain
      Monte Carlo: when Langevin meets Moreau", SIAM J. Imaging Sci. 2018.
    """

    step_size: float
    smoothing: float

    name = "myula"

    def build(self, target: Target) -> SamplingAlgorithm:
        smoothed = self.smoothed_logdensity(target)
        algorithm = ula_algorithm(smoothed, self.step_size)
        nonsmooth = target.nonsmooth

        def step(rng_key, state):
            new_state, info = algorithm.step(rng_key, state)
            left = _left_support(nonsmooth, new_state.position)
            return new_state, MYULAInfo(info.diverging, left)

        return SamplingAlgorithm(algorithm.init, step)

    def sample_stats(self, state: Any, info: Any, tuned: dict) -> dict[str, jax.Array]:
        dtype = state.logdensity.dtype
        return {
            "lp": state.logdensity,
            "diverging": info.diverging,
            "left_support": info.left_support,
            "step_size": jnp.asarray(self.step_size, dtype=dtype),
            "smoothing": jnp.asarray(self.smoothing, dtype=dtype),
        }


@dataclasses.dataclass(frozen=True)
class mymala(AbstractMoreauYosidaKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The Moreau-Yosida regularised Metropolis-adjusted Langevin algorithm (MYMALA,
    Pereyra's P-MALA).

    The proposal is MYULA's step ``x + h grad log pi^lam(x) + sqrt(2h) xi`` on the smoothed
    density; it is accepted with the Metropolis-Hastings probability computed with the
    exact ``pi ∝ exp(-f - g)``, so the chain targets ``pi`` itself: neither the step nor the
    smoothing biases it. A proposal off the support of ``g`` has probability 0 and is
    rejected, so the draws never leave it. The acceptance rate falls as ``h`` grows.

    Args:
      step_size: the step ``h`` > 0.
      smoothing: the Moreau-Yosida parameter ``lam`` > 0 of the proposal.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import samplers
      >>> target = inferax.Target(log_prior=lambda x: -jnp.sum(x), init=jnp.ones(2),
      ...                         nonsmooth=samplers.NonNegative())
      >>> algorithm = samplers.mymala(step_size=0.1, smoothing=0.1).build(target)
      >>> state, info = algorithm.step(jax.random.key(0), algorithm.init(jnp.ones(2)))
      >>> bool((state.position >= 0).all()), 0.0 <= float(info.acceptance_rate) <= 1.0
      (True, True)

    References:
      Pereyra, "Proximal Markov chain Monte Carlo algorithms", Statistics and Computing 2016.
      Durmus, Moulines, Pereyra, "Efficient Bayesian computation by proximal Markov chain
      Monte Carlo: when Langevin meets Moreau", SIAM J. Imaging Sci. 2018.
    """

    step_size: float
    smoothing: float

    name = "mymala"

    def build(self, target: Target) -> SamplingAlgorithm:
        smoothed = self.smoothed_logdensity(target)
        return mymala_algorithm(target.logdensity, smoothed, self.step_size)

    def sample_stats(self, state: Any, info: MYMALAInfo, tuned: dict) -> dict[str, jax.Array]:
        dtype = state.logdensity.dtype
        return {
            "lp": state.logdensity,
            "acceptance_rate": info.acceptance_rate,
            "diverging": info.diverging,
            "left_support": jnp.zeros((), dtype=bool),
            "step_size": jnp.asarray(self.step_size, dtype=dtype),
            "smoothing": jnp.asarray(self.smoothing, dtype=dtype),
        }


__all__ = [
    "MYMALAInfo",
    "MYULAInfo",
    "MYMALAState",
    "check_array_position",
    "check_nonsmooth_target",
    "check_smoothing",
    "envelope_logdensity",
    "moreau_yosida_logdensity",
    "mymala",
    "mymala_algorithm",
    "myula",
    "smooth_logdensity",
]
