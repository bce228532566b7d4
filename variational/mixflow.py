"""MixFlows: mixed variational flows (Xu, Chen, Campbell 2023), built on an uncorrected
Hamiltonian map with Laplace momentum and deterministic momentum refreshment.

The family lives on the augmented space ``s = (x, rho, u)``, ``x, rho`` in ``R^d`` and
``u`` in ``[0, 1)``, whose target is ``pi_bar(s) = pi(x) prod_i m(rho_i)`` with ``m`` the
Laplace(0, 1) density. A map ``T`` that nearly preserves ``pi_bar`` is applied ``n`` times
to draws of a reference ``q0``; the MixFlow is the average of the pushforwards,

    q_N = (1/N) sum_{n < N} T^n_# q0,

with i.i.d. sampling (``n ~ Unif{0..N-1}``, ``s0 ~ q0``, return ``T^n s0``), an exact
density (``N - 1`` inverse steps), and an unbiased ELBO whose orbit estimate costs ``O(N)``
map evaluations.

Everything here runs in float64, whatever the global setting: the map is applied
thousands of times, and in float32 its round-off makes ``T^-n T^n s`` drift from ``s``
until the density is wrong (``docs/mixflows.md``).

The map is MixFlow's own measure-preserving map, not an MCMC kernel: its leapfrog moves
``x`` by ``sign(rho)`` (Laplace momentum), has no accept/reject step, and must run
backwards exactly, so it is not blackjax's Gaussian-momentum integrator, nor the
overdamped Langevin step of the stochastic flows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import ClassVar, Self, final

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.special import logsumexp

from inferax.pytree import pytree_dataclass, static_field
from inferax.target import Target
from inferax.typing import PRNGKey
from inferax.validation import check_count, check_key
from inferax.variational.family import AbstractFamily
from inferax.variational.gaussian import MeanfieldGaussian

REFRESH_SHIFT = math.pi / 16
"""``xi``, the shift of the auxiliary ``u`` per application of ``T``."""

LOG_HALF = math.log(0.5)


# --------------------------------------------------------------------------------------
# The map T on one augmented state.
# --------------------------------------------------------------------------------------


def laplace_logpdf(rho: jax.Array) -> jax.Array:
    """``sum_i log m(rho_i)``, ``m`` the Laplace(0, 1) density."""
    return jnp.sum(-jnp.abs(rho) + LOG_HALF)


def laplace_cdf(r: jax.Array) -> jax.Array:
    """``F(r) = 1/2 - 1/2 sign(r) expm1(-|r|)``."""
    return 0.5 - 0.5 * jnp.sign(r) * jnp.expm1(-jnp.abs(r))


def laplace_icdf(p: jax.Array) -> jax.Array:
    """``F^-1(p) = sign(1/2 - p) log1p(-2 |p - 1/2|)``."""
    return jnp.sign(0.5 - p) * jnp.log1p(-2.0 * jnp.abs(p - 0.5))


def refresh_shift(x: jax.Array, u: jax.Array) -> jax.Array:
    """``z(x, u) = (sin(2x + u) + 1) / 2``, coordinate by coordinate."""
    return 0.5 * (jnp.sin(2.0 * x + u) + 1.0)


def leapfrog(grad_logdensity, x, rho, step_size, num_steps):
    """``num_steps`` uncorrected leapfrog steps of ``H = -log pi(x) - log m(rho)``; with a
    negative ``step_size`` they undo the same steps with the positive one."""

    def one(_, carry):
        x, rho = carry
        rho = rho + 0.5 * step_size * grad_logdensity(x)
        x = x + step_size * jnp.sign(rho)  # -grad log m(rho) = sign(rho)
        rho = rho + 0.5 * step_size * grad_logdensity(x)
        return x, rho

    return jax.lax.fori_loop(0, num_steps, one, (x, rho))


def forward_step(grad_logdensity, state, step_size, num_steps):
    """``T(s)`` and ``log J_T(s)``: leapfrog, then refresh each ``rho_i`` by the shift
    ``z(x_i, u)`` of its Laplace CDF, then shift ``u`` by ``xi``. Only the refreshment
    changes volume: ``log J = sum_i log m(rho_i before) - log m(rho_i after)``."""
    x, rho, u = state
    x, rho = leapfrog(grad_logdensity, x, rho, step_size, num_steps)
    refreshed = laplace_icdf(jnp.mod(laplace_cdf(rho) + refresh_shift(x, u), 1.0))
    log_jac = laplace_logpdf(rho) - laplace_logpdf(refreshed)
    return (x, refreshed, jnp.mod(u + REFRESH_SHIFT, 1.0)), log_jac


def inverse_step(grad_logdensity, state, step_size, num_steps):
    """``T^-1(s)`` and ``log J_T(T^-1(s))``, the forward map's log-Jacobian at the state
    it came from: undo the shift of ``u``, the refreshment, then the leapfrog."""
    x, rho, u = state
    u = jnp.mod(u - REFRESH_SHIFT, 1.0)
    unrefreshed = laplace_icdf(jnp.mod(laplace_cdf(rho) - refresh_shift(x, u), 1.0))
    log_jac = laplace_logpdf(unrefreshed) - laplace_logpdf(rho)
    x, unrefreshed = leapfrog(grad_logdensity, x, unrefreshed, -step_size, num_steps)
    return (x, unrefreshed, u), log_jac


# --------------------------------------------------------------------------------------
# The family.
# --------------------------------------------------------------------------------------


@final
@pytree_dataclass
class MixFlowState:
    """Augmented states: ``x`` and ``rho`` of shape ``(..., d)`` and ``u`` of shape
    ``(...)``, float64."""

    x: jax.Array
    rho: jax.Array
    u: jax.Array


def reference_logpdf(mean, scale, state) -> jax.Array:
    """``log q0(s)`` of one augmented state: Gaussian ``x``, Laplace ``rho``, uniform ``u``."""
    x, rho, _ = state
    gauss = -0.5 * jnp.sum(((x - mean) / scale) ** 2) - jnp.sum(jnp.log(scale))
    return gauss - 0.5 * x.size * math.log(2 * math.pi) + laplace_logpdf(rho)


def reference_draw(mean, scale, rng_key) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One augmented state ``s ~ q0``, float64."""
    x_key, rho_key, u_key = jax.random.split(rng_key, 3)
    x = mean + scale * jax.random.normal(x_key, mean.shape, jnp.float64)
    rho = jax.random.laplace(rho_key, mean.shape, jnp.float64)
    return x, rho, jax.random.uniform(u_key, (), jnp.float64)


@final
@pytree_dataclass
class MixFlow(AbstractFamily):
    """A MixFlow for one target: the reference ``q0 = N(mean, diag(scale^2)) x m^d x Unif``
    and the map ``T`` (``leapfrog_steps`` leapfrog steps of ``step_size``), averaged over
    ``num_flows`` applications. Build it with ``mixflow``; fit its reference with
    ``variational.fit`` and pick ``step_size`` with ``tune``.

    As a family, its one trained part is ``reference``, a mean-field Gaussian; its draws
    and importance weights ``log pi_bar(s) - log q_N(s)`` are those of the augmented
    space, whose ``x``-marginal is the target, so ``variational.fit``'s ``Approximation``
    gives draws, ELBO, ``log Z`` estimates and k-hat. The ``x``-marginal density has no
    closed form: ``log_prob`` and ``sample_and_log_prob`` raise, and
    ``log_prob_augmented`` gives ``log q_N`` of augmented states.

    The host-level methods (``sample_augmented``, ``log_prob_augmented``, ``elbo``,
    ``elbo_terms``, ``round_trip_error``, ``tune``) take and return float64 arrays and
    compute in float64 whatever the global ``jax_enable_x64`` setting.

    Args:
      target: the target; its ``logdensity`` of the flat unconstrained position is ``pi``.
      num_flows: ``N``.
      leapfrog_steps: ``L``.
      step_size: ``epsilon``, a float64 scalar.
      reference: the Gaussian part of ``q0``, unfitted (``params`` ``None``) or fitted.
    """

    target: Target = static_field()
    num_flows: int = static_field()
    leapfrog_steps: int = static_field()
    step_size: jax.Array
    reference: MeanfieldGaussian

    float64: ClassVar[bool] = True

    # -- the family's interface, on one point -----------------------------------------

    @property
    def params(self):
        """The reference's parameters, ``{"loc", "raw_scale"}``, or ``None``."""
        return self.reference.params

    @property
    def initialized(self) -> bool:
        return self.reference.initialized

    def check_initialized(self) -> None:
        if not self.initialized:
            raise ValueError(
                "this MixFlow has no reference yet: pass reference=(mean, scale) to mixflow, "
                "or fit one with variational.fit(target, mixflow, key, ...)"
            )

    def check_target(self, target: Target) -> None:
        if target is not self.target:
            raise ValueError("fit: this MixFlow was built for another target")

    def init(self, rng_key: PRNGKey, position: jax.Array) -> Self:
        return dataclasses.replace(self, reference=self.reference.init(rng_key, position))

    def trained_part(self) -> MeanfieldGaussian:
        return self.reference

    def with_trained_part(self, part: MeanfieldGaussian) -> Self:
        return dataclasses.replace(self, reference=part)

    def flat_logdensity(self) -> Callable[[jax.Array], jax.Array]:
        """``log pi`` of one flat float64 position."""
        _, unravel = ravel_pytree(self.target.init)
        return lambda x: self.target.logdensity(unravel(x)).astype(x.dtype)

    def map_settings(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``(mean, scale, step_size)`` in float64."""
        self.check_initialized()
        mean = jnp.asarray(self.params["loc"], jnp.float64)
        scale = jax.nn.softplus(jnp.asarray(self.params["raw_scale"], jnp.float64))
        return mean, scale, jnp.asarray(self.step_size, jnp.float64)

    def draw(self, rng_key: PRNGKey) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One augmented state of ``q_N``: ``n ~ Unif{0..N-1}``, ``s0 ~ q0``, ``T^n s0``."""
        grad = jax.grad(self.flat_logdensity())
        mean, scale, step_size = self.map_settings()
        start_key, count_key = jax.random.split(rng_key)
        state = reference_draw(mean, scale, start_key)
        count = jax.random.randint(count_key, (), 0, self.num_flows)
        return jax.lax.fori_loop(
            0,
            count,
            lambda _, s: forward_step(grad, s, step_size, self.leapfrog_steps)[0],
            state,
        )

    def log_prob_state(self, state) -> jax.Array:
        """``log q_N(s)`` of one augmented state, with ``N - 1`` inverse steps."""
        grad = jax.grad(self.flat_logdensity())
        mean, scale, step_size = self.map_settings()

        # Term k: log q0(T^-k s) - sum_{j=1..k} log J_T(T^-j s).
        def back(carry, _):
            state, log_jac_sum = carry
            state, log_jac = inverse_step(grad, state, step_size, self.leapfrog_steps)
            log_jac_sum = log_jac_sum + log_jac
            return (state, log_jac_sum), reference_logpdf(mean, scale, state) - log_jac_sum

        _, terms = jax.lax.scan(back, (state, jnp.float64(0.0)), None, self.num_flows - 1)
        terms = jnp.concatenate([reference_logpdf(mean, scale, state)[None], terms])
        return logsumexp(terms) - math.log(self.num_flows)

    def sample(self, rng_key: PRNGKey) -> jax.Array:
        return self.draw(rng_key)[0]

    def sample_and_log_weight(
        self, rng_key: PRNGKey, logdensity_fn: Callable[[jax.Array], jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        """One draw's ``x`` and its weight ``log pi_bar(s) - log q_N(s)`` on the augmented
        space, whose ``x``-marginal is the target."""
        state = self.draw(rng_key)
        x, rho, _ = state
        return x, logdensity_fn(x) + laplace_logpdf(rho) - self.log_prob_state(state)

    def sample_and_log_prob(self, rng_key: PRNGKey):
        raise NotImplementedError(
            "a MixFlow's x-marginal density has no closed form: use sample_and_log_weight, "
            "or sample_augmented and log_prob_augmented on the augmented space"
        )

    def log_prob(self, x: jax.Array):
        raise NotImplementedError(
            "a MixFlow's x-marginal density has no closed form: use log_prob_augmented"
        )

    # -- host-level operations, batched, in float64 ------------------------------------

    @property
    def dim(self) -> int:
        return ravel_pytree(self.target.init)[0].shape[0]

    @property
    def mean(self) -> np.ndarray:
        """The reference's mean, float64."""
        self.check_initialized()
        return np.asarray(self.params["loc"], np.float64)

    @property
    def scale(self) -> np.ndarray:
        """The reference's standard deviations, float64."""
        self.check_initialized()
        raw = np.asarray(self.params["raw_scale"], np.float64)
        return np.logaddexp(0.0, raw)

    def sample_augmented(self, rng_key: PRNGKey, n: int) -> MixFlowState:
        """``n`` i.i.d. draws of ``q_N`` on the augmented space."""
        self.check_initialized()
        check_count("n", n, minimum=1)
        rng_key = check_key(rng_key)
        with jax.enable_x64(True):
            return _sample(self, rng_key, int(n))

    def log_prob_augmented(self, states: MixFlowState) -> jax.Array:
        """``log q_N(s)`` of augmented states (a leading axis of points), with ``N - 1``
        inverse steps each. The ``x``-marginal density of a MixFlow has no closed form;
        this is the density on the augmented space, where the ELBO is taken."""
        self.check_initialized()
        with jax.enable_x64(True):
            return _log_prob(self, _as_states(states, self.dim))

    def elbo(self, rng_key: PRNGKey, n: int) -> tuple[float, float]:
        """The augmented ELBO ``E_q[log pi_bar - log q_N]`` by the orbit estimator on ``n``
        reference draws, and its standard error. It bounds ``log Z`` of the target's
        ``logdensity`` from below."""
        values = self.elbo_terms(rng_key, n)
        return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))

    def elbo_terms(self, rng_key: PRNGKey, n: int) -> np.ndarray:
        """The ``n`` independent orbit estimates whose mean is ``elbo``."""
        self.check_initialized()
        check_count("n", n, minimum=2)
        rng_key = check_key(rng_key)
        with jax.enable_x64(True):
            return np.asarray(_orbit_elbo(self, rng_key, int(n)))

    def round_trip_error(self, states: MixFlowState, num_steps: int) -> jax.Array:
        """``max |s - T^-n T^n s|`` over states and coordinates, ``n = num_steps``: how far
        round-off has moved the map from invertible."""
        self.check_initialized()
        with jax.enable_x64(True):
            return _round_trip_error(self, _as_states(states, self.dim), int(num_steps))

    def tune(self, rng_key: PRNGKey, step_sizes: Sequence[float], num_draws: int = 200) -> Self:
        """The MixFlow with the step size from ``step_sizes`` whose augmented ELBO (on
        ``num_draws`` reference draws, the same for every candidate) is highest."""
        self.check_initialized()
        candidates = [check_step_size(h) for h in step_sizes]
        if not candidates:
            raise ValueError("tune: step_sizes is empty")
        scores = [
            dataclasses.replace(self, step_size=np.float64(h)).elbo(rng_key, num_draws)[0]
            for h in candidates
        ]
        best = candidates[int(np.nanargmax(scores))]
        return dataclasses.replace(self, step_size=np.float64(best))


def mixflow(
    target: Target,
    num_flows: int = 500,
    leapfrog_steps: int = 60,
    step_size: float = 0.0035,
    reference: tuple | None = None,
) -> MixFlow:
    """A MixFlow: ``num_flows`` applications of an uncorrected Hamiltonian map of
    ``leapfrog_steps`` leapfrog steps of ``step_size`` with Laplace momentum and
    deterministic refreshment, averaged.

    Args:
      target: the target; its ``logdensity`` is ``pi`` (on the flattened unconstrained
        position).
      num_flows: ``N``, the number of pushforwards averaged. Cost per draw and per density
        evaluation grows like ``N``; the ELBO approaches ``log Z`` as ``N`` grows when the
        map is close to ergodic for ``pi_bar``.
      leapfrog_steps: ``L``, leapfrog steps per application of ``T``.
      step_size: ``epsilon``. Too large and ``T`` no longer nearly preserves ``pi_bar``;
        too small and the orbit does not travel. ``MixFlow.tune`` picks it by ELBO.
      reference: ``(mean, scale)`` of the Gaussian part of ``q0``, each of shape ``(d,)``;
        ``None`` leaves it to be fitted, by ``variational.fit(target, mixflow, key, ...)``.

    Returns:
      A ``MixFlow``.

    Examples:
      >>> import jax, jax.numpy as jnp, inferax
      >>> from inferax import variational
      >>> target = inferax.Target.from_logdensity(lambda x: -0.5 * x @ x, jnp.zeros(2))
      >>> mf = variational.mixflow(target, 10, 5, 0.1, reference=([0.0, 0.0], [1.0, 1.0]))
      >>> mf.sample_augmented(jax.random.key(0), 3).x.shape
      (3, 2)

    References:
      Xu, Chen, Campbell, "MixFlows: principled variational inference via mixed flows",
      ICML 2023.
    """
    if not isinstance(target, Target):
        raise TypeError(f"target must be an inferax.Target, got {type(target).__name__}")
    check_count("num_flows", num_flows, minimum=1)
    check_count("leapfrog_steps", leapfrog_steps, minimum=1)
    step_size = np.float64(check_step_size(step_size))
    flow = MixFlow(target, int(num_flows), int(leapfrog_steps), step_size, MeanfieldGaussian())
    if reference is None:
        return flow
    mean, scale = (np.asarray(a, np.float64) for a in reference)
    dim = flow.dim
    if mean.shape != (dim,) or scale.shape != (dim,):
        raise ValueError(
            f"reference must be (mean, scale) of shape ({dim},) each, got {mean.shape} and "
            f"{scale.shape}"
        )
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise ValueError("reference: mean must be finite and scale finite and positive")
    # In numpy, so the reference stays float64 whatever jax's precision setting.
    raw_scale = scale + np.log(-np.expm1(-scale))
    gaussian = MeanfieldGaussian({"loc": mean, "raw_scale": raw_scale})
    return dataclasses.replace(flow, reference=gaussian)


def check_step_size(step_size) -> float:
    """``step_size`` as a float, checked to be finite and positive."""
    value = float(step_size)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"step_size must be a finite positive number, got {step_size!r}")
    return value


def _as_states(states, dim: int) -> MixFlowState:
    if not isinstance(states, MixFlowState):
        raise TypeError(f"states must be a MixFlowState, got {type(states).__name__}")
    x, rho, u = (jnp.asarray(a, jnp.float64) for a in (states.x, states.rho, states.u))
    if x.ndim != 2 or x.shape[1] != dim or rho.shape != x.shape or u.shape != x.shape[:1]:
        raise ValueError(
            f"states must have x and rho of shape (n, {dim}) and u of shape (n,), got "
            f"{x.shape}, {rho.shape} and {u.shape}"
        )
    return MixFlowState(x, rho, u)


# --------------------------------------------------------------------------------------
# Compiled programs: one per MixFlow structure (target, L, N) and draw count.
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=2)
def _sample(flow, rng_key, n):
    return MixFlowState(*jax.vmap(flow.draw)(jax.random.split(rng_key, n)))


@jax.jit
def _log_prob(flow, states):
    return jax.vmap(lambda x, rho, u: flow.log_prob_state((x, rho, u)))(
        states.x, states.rho, states.u
    )


@functools.partial(jax.jit, static_argnums=2)
def _orbit_elbo(flow, rng_key, n):
    logdensity = flow.flat_logdensity()
    grad = jax.grad(logdensity)
    mean, scale, step_size = flow.map_settings()
    num_flows, num_steps = flow.num_flows, flow.leapfrog_steps

    def terms_at(state):
        return (
            reference_logpdf(mean, scale, state),
            logdensity(state[0]) + laplace_logpdf(state[1]),
        )

    def one(key):
        start = reference_draw(mean, scale, key)

        def forward(state, _):
            new_state, log_jac = forward_step(grad, state, step_size, num_steps)
            return new_state, (log_jac, *terms_at(new_state))

        def backward(state, _):
            new_state, log_jac = inverse_step(grad, state, step_size, num_steps)
            return new_state, (log_jac, *terms_at(new_state))

        # s_t for t = -(N-1)..(N-1); l_t = log J_T(s_t), the forward log-Jacobian at s_t.
        _, (l_fwd, q0_fwd, pi_fwd) = jax.lax.scan(forward, start, None, num_flows - 1)
        _, (l_bwd, q0_bwd, pi_bwd) = jax.lax.scan(backward, start, None, num_flows - 1)
        q0_start, pi_start = terms_at(start)
        # Forward: l_fwd[t] = log J_T(s_t) for t = 0..N-2 (the step out of s_t); the state
        # after it is s_{t+1}. Backward: l_bwd[k] = log J_T(s_{-k-1}).
        log_q0 = jnp.concatenate([q0_bwd[::-1], q0_start[None], q0_fwd])
        log_pi_bar = jnp.concatenate([pi_bwd[::-1], pi_start[None], pi_fwd])
        log_jac = jnp.concatenate([l_bwd[::-1], l_fwd])  # l_t for t = -(N-1)..(N-2)
        # C_t = sum of l_j over the window's start <= j < t, for t = -(N-1)..(N-1).
        cumulative = jnp.concatenate([jnp.zeros(1, jnp.float64), jnp.cumsum(log_jac)])
        a = log_q0 + cumulative

        # log q_N(s_n) = logsumexp(a_{n-N+1..n}) - C_n - log N, for n = 0..N-1: a window
        # of N terms, each a fresh logsumexp (no running difference, which cancels).
        def log_q_at(n):
            window = jax.lax.dynamic_slice(a, (n,), (num_flows,))
            return logsumexp(window) - cumulative[n + num_flows - 1]

        log_q = jax.lax.map(log_q_at, jnp.arange(num_flows)) - math.log(num_flows)
        return jnp.mean(log_pi_bar[num_flows - 1 :] - log_q)

    return jax.lax.map(one, jax.random.split(rng_key, n), batch_size=min(n, 256))


@functools.partial(jax.jit, static_argnums=2)
def _round_trip_error(flow, states, num_steps):
    grad = jax.grad(flow.flat_logdensity())
    _, _, step_size = flow.map_settings()
    leap = flow.leapfrog_steps

    def one(x, rho, u):
        there = jax.lax.fori_loop(
            0, num_steps, lambda _, s: forward_step(grad, s, step_size, leap)[0], (x, rho, u)
        )
        back = jax.lax.fori_loop(
            0, num_steps, lambda _, s: inverse_step(grad, s, step_size, leap)[0], there
        )
        return jnp.max(jnp.abs(jnp.concatenate([back[0] - x, back[1] - rho, (back[2] - u)[None]])))

    return jnp.max(jax.vmap(one)(states.x, states.rho, states.u))


__all__ = [
    "MixFlow",
    "MixFlowState",
    "check_step_size",
    "forward_step",
    "inverse_step",
    "laplace_cdf",
    "laplace_icdf",
    "laplace_logpdf",
    "leapfrog",
    "mixflow",
    "reference_draw",
    "reference_logpdf",
    "refresh_shift",
]
