"""Metropolis-adjusted mirror Langevin: the mirror-Langevin step as a proposal, accepted or
rejected so that the chain targets ``pi`` exactly on the mirror's domain.

The proposal is one Euler step of the mirror-Langevin diffusion, taken in the dual:
``y' = y + h grad log q(x) + sqrt(2h) hess phi(x)^(1/2) xi`` with ``y = grad phi(x)`` and
``x' = grad phi*(y')``, where ``q`` is ``pi`` itself (MAMLA) or ``pi`` with its nonsmooth
part replaced by a Bregman-Moreau envelope (the adjusted Bregman-Moreau step). In the dual
the proposal is the Gaussian ``N(y + h grad log q(x), 2h H(x))``, ``H = hess phi``, and the
target has density ``pi(x) / det H(x)``; the Metropolis-Hastings ratio is therefore

``log pi(x') - log pi(x) - 3/2 log det H(x') + 3/2 log det H(x) - Q(y | y') + Q(y' | y)``,
with ``Q(b | a) = |b - a - h grad log q(x_a)|^2_{H(x_a)^-1} / (4h)``.

The chain carries the dual point ``y`` beside ``x``: near a wall ``x`` rounds onto it in
float32 long before ``y`` loses precision (the logit of ``1 - 1e-9``), so every step and
every Hessian is computed from ``y``, never from a rounded ``x``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.base import SamplingAlgorithm

from inferax.kernel import AbstractKernel, WarmupAlgorithm, as_number, check_step_size
from inferax.samplers.mirror import (
    bregman_moreau_logdensity,
    check_bregman_target,
    check_envelope,
    check_mirror,
    check_mirror_target,
    mirror_domain,
)
from inferax.samplers.mirror_maps import (
    AbstractIntervalMirrorMap,
    AbstractMirrorMap,
    SimplexEntropy,
    SimplexLogBarrier,
)
from inferax.samplers.proximal import check_smoothing, smooth_logdensity
from inferax.target import Target
from inferax.typing import PRNGKey

TARGET_ACCEPTANCE_RATE = 0.574
"""MALA's optimal mean acceptance (Roberts and Rosenthal 1998), where warmup aims."""


class DualGeometry(NamedTuple):
    """The mirror's geometry at a dual point ``y``: the primal point ``x = grad phi*(y)``,
    ``log det H(x)``, ``H``'s square root and inverse as functions, and ``faithful``:
    whether ``x`` in floating point still tells its distance to every wall to within half
    (a point that has rounded onto or near a wall has not: a log density computed from it,
    such as ``log(1 - sum x)``, would be wrong there)."""

    position: jax.Array
    log_det_hess: jax.Array
    sqrt_hess_times: Callable[[jax.Array], jax.Array]
    inverse_quadratic: Callable[[jax.Array], jax.Array]
    noise_size: int
    faithful: jax.Array


FAITHFUL_RELATIVE_ERROR = 0.5
"""How far, relative to itself, a distance to a wall read from the primal point may be off
before the point counts as rounded onto the wall."""


def _close(seen, exact):
    return jnp.all(jnp.abs(seen - exact) <= FAITHFUL_RELATIVE_ERROR * exact)


def carried_dual(mirror: AbstractMirrorMap, x: jax.Array) -> jax.Array:
    """The dual point of ``x`` as a chain carries it: ``grad phi(x)``, except for
    ``SimplexLogBarrier``, whose dual is carried as the reciprocals ``1/x`` of all ``d``
    coordinates (``grad phi(x)_i = 1/x_d - 1/x_i``), which keep ``x_i`` near the last wall."""
    if isinstance(mirror, SimplexLogBarrier):
        return 1.0 / jnp.concatenate([x, 1.0 - jnp.sum(x, keepdims=True)])
    return mirror.grad(x)


def shifted_dual(mirror: AbstractMirrorMap, dual: jax.Array, shift: jax.Array) -> jax.Array:
    """The carried dual of the point whose dual point is that of ``dual`` plus ``shift``."""
    if isinstance(mirror, SimplexLogBarrier):
        return mirror.shifted_reciprocals(dual, shift)
    return dual + shift


def dual_geometry(mirror: AbstractMirrorMap, y: jax.Array) -> DualGeometry:
    """``DualGeometry`` at the carried dual ``y`` (see ``carried_dual``), computed from it.

    For a separable map ``H`` is diagonal with ``log H = mirror.dual_log_hess(y)``. For
    ``SimplexEntropy`` ``H = diag(1/x) + 1/x_d`` in closed form: ``log det H = -sum log x_i``
    over all ``d`` coordinates, ``H^-1 = diag(x) - x x^T``, and ``diag(x)^(-1/2) xi +
    x_d^(-1/2) xi_0`` is ``N(0, H)`` from ``d`` standard normals. For ``SimplexLogBarrier``
    ``H = diag(1/x^2) + 1/x_d^2``: ``log det H = log sum x^2 - 2 sum log x`` (all ``d``),
    ``H^-1 = diag(x^2) - x^2 (x^2)^T / sum x^2``, and ``xi / x + xi_0 / x_d`` is ``N(0, H)``.
    """
    if isinstance(mirror, SimplexEntropy):
        full = jnp.concatenate([y, jnp.zeros((1,), y.dtype)])
        log_full = jax.nn.log_softmax(full)
        x = jnp.exp(log_full)
        inv_sqrt = jnp.exp(-0.5 * log_full)

        def sqrt_hess_times(xi):
            return inv_sqrt[:-1] * xi[:-1] + inv_sqrt[-1] * xi[-1]

        def inverse_quadratic(r):
            return jnp.sum(x[:-1] * r**2) - jnp.sum(x[:-1] * r) ** 2

        faithful = _close(1.0 - jnp.sum(x[:-1]), x[-1])
        return DualGeometry(
            x[:-1],
            -jnp.sum(log_full),
            sqrt_hess_times,
            inverse_quadratic,
            y.shape[0] + 1,
            faithful,
        )
    if isinstance(mirror, SimplexLogBarrier):
        full = 1.0 / y  # its dual is carried as the reciprocals of all d coordinates
        squares = full**2

        def barrier_sqrt_hess_times(xi):
            return xi[:-1] / full[:-1] + xi[-1] / full[-1]

        def barrier_inverse_quadratic(r):
            return jnp.sum(squares[:-1] * r**2) - jnp.sum(squares[:-1] * r) ** 2 / jnp.sum(squares)

        return DualGeometry(
            full[:-1],
            jnp.log(jnp.sum(squares)) - 2.0 * jnp.sum(jnp.log(full)),
            barrier_sqrt_hess_times,
            barrier_inverse_quadratic,
            y.shape[0],
            _close(1.0 - jnp.sum(full[:-1]), full[-1]),
        )
    log_hess = mirror.dual_log_hess(y)
    x = mirror.grad_conj(y)
    faithful = jnp.asarray(True)
    if isinstance(mirror, AbstractIntervalMirrorMap):
        below, above = mirror.wall_distances(y)
        faithful = _close(x - mirror.lo, below) & _close(mirror.hi - x, above)
    return DualGeometry(
        x,
        jnp.sum(log_hess),
        lambda xi: jnp.exp(0.5 * log_hess) * xi,
        lambda r: jnp.sum(r**2 * jnp.exp(-log_hess)),
        y.shape[0],
        faithful,
    )


class MAMLAState(NamedTuple):
    """A MAMLA chain: its position ``x``, its dual point ``y = grad phi(x)`` (carried, so a
    point near a wall is not recomputed from a rounded ``x``), the exact log density (the
    acceptance test's), and the proposal's log density and gradient."""

    position: jax.Array
    dual: jax.Array
    logdensity: jax.Array
    proposal_logdensity: jax.Array
    proposal_grad: jax.Array


class MAMLAInfo(NamedTuple):
    """``acceptance_rate``: the Metropolis-Hastings probability. ``left_support``: the
    proposal fell outside the mirror's domain (off the dual's domain, as Burg's ``y >= 0``,
    or rounded in floating point onto a wall or so near one that its distance to it is lost)
    and was rejected. ``nonfinite``: it lay inside, but a log density or
    gradient there was NaN or infinite (a density of exactly 0 is an ordinary rejection).
    ``diverging``: either."""

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    left_support: jax.Array
    nonfinite: jax.Array
    diverging: jax.Array


def mamla_algorithm(
    logdensity_fn: Callable,
    mirror: AbstractMirrorMap,
    step_size,
    proposal_logdensity_fn: Callable | None = None,
) -> SamplingAlgorithm:
    """Metropolis-adjusted mirror Langevin as a blackjax ``SamplingAlgorithm``.

    Args:
      logdensity_fn: ``log pi``, which the chain targets exactly.
      mirror: the mirror map; its domain must hold the support of ``pi``.
      step_size: the step ``h`` (a float or a traced scalar).
      proposal_logdensity_fn: the log density whose gradient drives the proposal;
        ``logdensity_fn`` when ``None``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``MAMLAState`` and ``MAMLAInfo``.
    """
    same = proposal_logdensity_fn is None
    proposal_and_grad = jax.value_and_grad(logdensity_fn if same else proposal_logdensity_fn)

    def evaluate(x):
        proposal, grad = proposal_and_grad(x)
        return (proposal if same else logdensity_fn(x)), proposal, grad

    def init(position, rng_key=None) -> MAMLAState:
        del rng_key
        return MAMLAState(position, carried_dual(mirror, position), *evaluate(position))

    def log_transition(shift, start_grad, geometry, h):
        residual = shift - h * start_grad
        return -geometry.inverse_quadratic(residual) / (4.0 * h) - 0.5 * geometry.log_det_hess

    def step(rng_key: PRNGKey, state: MAMLAState) -> tuple[MAMLAState, MAMLAInfo]:
        noise_key, accept_key = jax.random.split(rng_key)
        h = jnp.asarray(step_size, state.dual.dtype)
        here = dual_geometry(mirror, state.dual)
        xi = jax.random.normal(noise_key, (here.noise_size,), state.dual.dtype)
        shift = h * state.proposal_grad + jnp.sqrt(2.0 * h) * here.sqrt_hess_times(xi)
        dual = shifted_dual(mirror, state.dual, shift)
        there = dual_geometry(mirror, dual)
        inside = (
            mirror.in_domain(there.position)
            & jnp.all(jnp.isfinite(there.position))
            & there.faithful
        )
        # Evaluated at a point known to be inside, so nothing off the domain is traced into
        # the log density; the values are discarded when the proposal was outside.
        safe = jnp.where(inside, there.position, state.position)
        logdensity, proposal, grad = evaluate(safe)
        log_ratio = (
            logdensity
            - state.logdensity
            - there.log_det_hess
            + here.log_det_hess
            + log_transition(-shift, grad, there, h)
            - log_transition(shift, state.proposal_grad, here, h)
        )
        zero_density = logdensity == -jnp.inf
        usable = jnp.isfinite(proposal) & jnp.all(jnp.isfinite(grad)) & ~jnp.isnan(logdensity)
        nonfinite = inside & ~zero_density & ~(usable & ~jnp.isnan(log_ratio))
        log_ratio = jnp.where(inside & ~zero_density & ~nonfinite, log_ratio, -jnp.inf)
        acceptance_rate = jnp.minimum(1.0, jnp.exp(log_ratio))
        accepted = jax.random.uniform(accept_key, dtype=log_ratio.dtype) < acceptance_rate
        moved = MAMLAState(safe, dual, logdensity, proposal, grad)
        new_state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), moved, state)
        info = MAMLAInfo(acceptance_rate, accepted, ~inside, nonfinite, ~inside | nonfinite)
        return new_state, info

    return SamplingAlgorithm(init, step)


class StepSizeWarmupState(NamedTuple):
    """One chain's warmup: its state, dual averaging's state and the current step size."""

    chain: MAMLAState
    step_size_state: object
    step_size: jax.Array


RESTART_FRACTIONS = (0.15, 0.4)
"""Where in warmup dual averaging restarts from the current step size."""


def restart_schedule(num_steps: int) -> np.ndarray:
    """One row per warmup step for ``step_size_warmup``: 1 where dual averaging restarts."""
    schedule = np.zeros((num_steps, 1), dtype=np.int32)
    if num_steps >= 20:
        schedule[[int(fraction * num_steps) for fraction in RESTART_FRACTIONS], 0] = 1
    return schedule


def step_size_warmup(
    build: Callable[[jax.Array], SamplingAlgorithm],
    initial_step_size: float,
    target_acceptance_rate: float,
) -> WarmupAlgorithm:
    """Dual averaging of the step size towards ``target_acceptance_rate``, one transition
    at a time (blackjax's ``dual_averaging_adaptation``, as Stan tunes its step), restarted
    from the current step where ``restart_schedule`` says (as Stan restarts it after each
    window). The step ends at dual averaging's running average, or where it started if
    warmup had no steps.

    Args:
      build: ``build(step_size) -> SamplingAlgorithm``.
      initial_step_size: where dual averaging starts.
      target_acceptance_rate: the mean acceptance probability aimed for.

    Returns:
      A ``WarmupAlgorithm`` whose ``final`` gives ``{"step_size": ...}``.
    """
    da_init, da_update, da_final = dual_averaging_adaptation(target_acceptance_rate)

    def init(position) -> StepSizeWarmupState:
        step_size = jnp.asarray(initial_step_size, jnp.result_type(position))
        return StepSizeWarmupState(build(step_size).init(position), da_init(step_size), step_size)

    def step(rng_key, warmup_state: StepSizeWarmupState, schedule_entry):
        # Dual averaging starts afresh from the current step where the schedule says so:
        # a chain whose first steps were all rejected (a start near a wall) would otherwise
        # carry their weight to the end.
        warmup_state = jax.lax.cond(
            schedule_entry[0] == 1,
            lambda state: state._replace(step_size_state=da_init(state.step_size)),
            lambda state: state,
            warmup_state,
        )
        chain, info = build(warmup_state.step_size).step(rng_key, warmup_state.chain)
        da_state = da_update(
            warmup_state.step_size_state, jnp.nan_to_num(info.acceptance_rate, nan=0.0)
        )
        # Only rejections drive the log step size to minus infinity: keep it a positive float.
        finfo = jnp.finfo(warmup_state.step_size.dtype)
        log_step = jnp.clip(da_state.log_step_size, jnp.log(finfo.tiny), jnp.log(finfo.max))
        da_state = da_state._replace(log_step_size=log_step)
        return StepSizeWarmupState(chain, da_state, jnp.exp(log_step))

    def final(warmup_state: StepSizeWarmupState):
        averaged = warmup_state.step_size_state.step > 1
        step_size = jnp.where(
            averaged, da_final(warmup_state.step_size_state), warmup_state.step_size
        )
        return warmup_state.chain, {"step_size": step_size.astype(warmup_state.step_size.dtype)}

    return WarmupAlgorithm(init, step, final)


def _check_acceptance(kernel) -> None:
    value = as_number(kernel.name, "target_acceptance_rate", kernel.target_acceptance_rate)
    if not (np.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"{kernel.name}: target_acceptance_rate must be in (0, 1), got {value}")
    object.__setattr__(kernel, "target_acceptance_rate", value)


def _stats(kernel, state: MAMLAState, info: MAMLAInfo, tuned: dict, extra: dict):
    dtype = state.logdensity.dtype
    step_size = tuned.get("step_size", kernel.step_size)
    return {
        "lp": state.logdensity,
        "acceptance_rate": info.acceptance_rate,
        "diverging": info.diverging,
        "left_support": info.left_support,
        "nonfinite": info.nonfinite,
        "step_size": jnp.asarray(step_size, dtype=dtype),
        **{key: jnp.asarray(value, dtype=dtype) for key, value in extra.items()},
    }


class AbstractMAMLAKernel(AbstractKernel):
    """A Metropolis-adjusted mirror kernel whose warmup tunes ``step_size`` to
    ``target_acceptance_rate`` by dual averaging, restarted along ``restart_schedule``.
    Subclasses hold both fields and ``build(target, step_size)``."""

    def warmup_schedule(self, num_steps: int) -> np.ndarray:
        return restart_schedule(num_steps)

    def warmup_algorithm(self, target: Target) -> WarmupAlgorithm:
        return step_size_warmup(
            lambda step_size: self.build(target, step_size),
            self.step_size,
            self.target_acceptance_rate,
        )


@dataclasses.dataclass(frozen=True)
class mamla(AbstractMAMLAKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The Metropolis-adjusted mirror-Langevin algorithm (MAMLA), for a smooth target whose
    support is the domain of the mirror map.

    The mirror-Langevin step of ``mirror_langevin`` (``scheme="euler"``) is proposed in the
    dual, ``y' = grad phi(x) + h grad log pi(x) + sqrt(2h) hess phi(x)^(1/2) xi``,
    ``x' = grad phi*(y')``, and accepted with the Metropolis-Hastings probability of that
    Gaussian-in-the-dual proposal in both directions, so the chain targets ``pi`` exactly,
    with mass at the walls or not. Warmup tunes ``h`` by dual averaging towards
    ``target_acceptance_rate``, per chain. Default starts are drawn inside the mirror's
    domain, and an ``init`` outside it is refused. A proposal that rounds onto a wall is
    rejected and counted in ``left_support``, one whose density or gradient is NaN or
    infinite in ``nonfinite``; both in ``diverging``.

    Args:
      mirror: the mirror map: ``FermiDirac`` or ``LogBarrierBox`` for a box, ``Burg`` or
        ``Entropy`` for ``x > 0``, ``SimplexEntropy`` for the simplex in its free
        coordinates, ``Hypentropy`` for all of R.
      step_size: the step ``h`` > 0 warmup starts from (and the step, with no warmup).
      target_acceptance_rate: the mean acceptance probability warmup aims for.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import samplers
      >>> beta = inferax.Target.from_logdensity(
      ...     lambda x: jnp.sum(-0.5 * jnp.log(x) - 0.5 * jnp.log1p(-x)), jnp.full(1, 0.5))
      >>> kernel = samplers.mamla(samplers.LogBarrierBox(0.0, 1.0))
      >>> algorithm = kernel.build(beta)
      >>> state, info = algorithm.step(jax.random.key(0), algorithm.init(jnp.full(1, 0.5)))
      >>> bool((state.position > 0).all() & (state.position < 1).all())
      True

    References:
      Srinivasan, Wibisono, Wilson, "Fast sampling from constrained spaces using the
      Metropolis-adjusted mirror Langevin algorithm", COLT 2024.
    """

    mirror: AbstractMirrorMap
    step_size: float = 0.1
    target_acceptance_rate: float = TARGET_ACCEPTANCE_RATE

    name = "mamla"

    def __post_init__(self):
        check_mirror(self.name, self.mirror)
        check_step_size(self)
        _check_acceptance(self)

    def check_target(self, target: Target) -> None:
        check_mirror_target(self.name, target, self.mirror)

    def domain(self, target: Target):
        return self.mirror.support()

    def build(self, target: Target, step_size=None) -> SamplingAlgorithm:
        step_size = self.step_size if step_size is None else step_size
        return mamla_algorithm(target.logdensity, self.mirror, step_size)

    def sample_stats(self, state: Any, info: MAMLAInfo, tuned: dict):
        return _stats(self, state, info, tuned, {})


@dataclasses.dataclass(frozen=True)
class bregman_moreau_mamla(AbstractMAMLAKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """The Metropolis-adjusted Bregman-Moreau mirror-Langevin algorithm, for
    ``pi ∝ exp(-f - g)`` with ``g = target.nonsmooth`` on the mirror's domain: the mirror
    analogue of ``mymala``.

    The proposal is ``bregman_moreau_langevin``'s step, a mirror-Langevin step on ``f``
    plus the Bregman-Moreau envelope of ``g``; it is accepted with the Metropolis-Hastings
    probability computed with the exact ``pi`` (``g`` itself, ``+inf`` off an indicator's
    set) and the proposal's Gaussian-in-the-dual density both ways, so neither the step nor
    the smoothing biases the draws. It needs the closed-form Bregman prox of ``g`` for the
    mirror; a pair without one is refused before anything compiles. Warmup tunes ``h`` as
    ``mamla``'s does.

    Args:
      mirror: the mirror map.
      smoothing: the envelope parameter ``lam`` > 0 of the proposal.
      step_size: the step ``h`` > 0 warmup starts from.
      envelope: ``"left"`` or ``"right"``.
      target_acceptance_rate: the mean acceptance probability warmup aims for.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import samplers
      >>> target = inferax.Target(log_prior=lambda x: -0.5 * jnp.sum((x - 0.3) ** 2) / 0.0625,
      ...                         init=jnp.full(1, 0.5), nonsmooth=samplers.L1(1.5))
      >>> kernel = samplers.bregman_moreau_mamla(samplers.FermiDirac(0.0, 1.0), smoothing=0.01)
      >>> algorithm = kernel.build(target)
      >>> state, info = algorithm.step(jax.random.key(0), algorithm.init(jnp.full(1, 0.5)))
      >>> bool(info.left_support), 0.0 <= float(info.acceptance_rate) <= 1.0
      (False, True)

    References:
      Srinivasan, Wibisono, Wilson, "Fast sampling from constrained spaces using the
      Metropolis-adjusted mirror Langevin algorithm", COLT 2024.
      Lau, Liu, "Bregman Proximal Langevin Monte Carlo via Bregman-Moreau Envelopes",
      ICML 2022.
    """

    mirror: AbstractMirrorMap
    smoothing: float
    step_size: float = 0.1
    envelope: str = "left"
    target_acceptance_rate: float = TARGET_ACCEPTANCE_RATE

    name = "bregman_moreau_mamla"

    def __post_init__(self):
        check_mirror(self.name, self.mirror)
        check_step_size(self)
        check_smoothing(self.name, self.smoothing)
        check_envelope(self.name, self.envelope)
        _check_acceptance(self)

    def check_target(self, target: Target) -> None:
        check_bregman_target(self.name, target, self.mirror, self.smoothing, self.envelope)

    def domain(self, target: Target):
        return mirror_domain(target, self.mirror)

    def build(self, target: Target, step_size=None) -> SamplingAlgorithm:
        step_size = self.step_size if step_size is None else step_size
        proposal = bregman_moreau_logdensity(
            smooth_logdensity(target),
            target.nonsmooth,
            self.mirror,
            self.smoothing,
            self.envelope,
        )
        return mamla_algorithm(target.logdensity, self.mirror, step_size, proposal)

    def sample_stats(self, state: Any, info: MAMLAInfo, tuned: dict):
        return _stats(self, state, info, tuned, {"smoothing": self.smoothing})


__all__ = [
    "TARGET_ACCEPTANCE_RATE",
    "AbstractMAMLAKernel",
    "bregman_moreau_mamla",
    "mamla",
    "DualGeometry",
    "MAMLAInfo",
    "MAMLAState",
    "StepSizeWarmupState",
    "carried_dual",
    "dual_geometry",
    "shifted_dual",
    "restart_schedule",
    "mamla_algorithm",
    "step_size_warmup",
]
