"""Federated stochastic gradient Langevin dynamics: DSGLD and FSGLD.

The data are split into ``S`` client shards (``split``) that live on the
devices of a mesh. A chain is handed from client to client: the server picks client ``s``
with probability ``f_s``, the client moves the chain ``local_steps`` times with a gradient
estimated from its own data only, then the server picks again. The local estimate is

    v_s(x) = grad log p(x) + N_s / (f_s m) * sum_{i in batch} grad log p(y_i | x)

(distributed SGLD), with a minibatch of ``m`` of the client's ``N_s`` points drawn without
replacement; its mean over the client draw is the full gradient. FSGLD adds the conducive
gradient ``g_s(x) = grad log q(x) - (1 / f_s) grad log q_s(x)``, where ``q_s`` is a
surrogate of client ``s``'s whole likelihood and ``q = prod_s q_s``. Its mean over the
client draw is zero, so the estimate stays unbiased, and it cancels most of the
between-client bias of ``v_s``: with Gaussian surrogates ``q_s = N(mu_s, P_s^-1)`` it is
the affine map ``-(P - P_s / f_s) x + (P mu - P_s mu_s / f_s)`` (``P = sum_s P_s``,
``P mu = sum_s P_s mu_s``), one matrix-vector product per step.

Step convention, as in ``inferax.samplers.sgld``: ``x' = x + h v + sqrt(2 h) noise``. The
paper writes ``x' = x + (h/2) v + N(0, h)``: its ``h`` is twice ours.

On a mesh the data part of the estimate (minibatch likelihood gradient and conducive term)
runs in ``shard_map`` over the ``"clients"`` axis: every device evaluates it for the chains
whose next client it holds, masks the others, and a ``psum`` over the axis hands every
chain's estimate to every device. Positions, gradients and client indices travel; data never
does. The step's draws are the same on one device and on many, bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.sharding import PartitionSpec as P

from inferax.samplers.federated.split import (
    CLIENT_AXIS,
    FederatedData,
    client_minibatch_indices,
    is_federated,
)
from inferax.samplers.federated.surrogates import conducive_arrays
from inferax.samplers.guarded import guarded
from inferax.samplers.integrators import DiffusionState, overdamped_langevin
from inferax.samplers.stochastic_gradient import AbstractSGMCMCKernel, SGMCMCInfo, step_size_fn
from inferax.target import Target
from inferax.tree_math import tree_norm
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey

# --------------------------------------------------------------------------------------
# Client probabilities.
# --------------------------------------------------------------------------------------


def _freeze_probs(name: str, client_probs) -> tuple[float, ...] | None:
    if client_probs is None:
        return None
    probs = np.asarray(client_probs, dtype=np.float64)
    if probs.ndim != 1 or probs.size == 0:
        raise ValueError(f"{name}: client_probs must be a 1-D sequence, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs <= 0):
        raise ValueError(
            f"{name}: client_probs must be finite and > 0 (a client never picked makes the "
            f"gradient estimate biased), got {probs.tolist()}"
        )
    if abs(probs.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name}: client_probs must sum to 1, they sum to {probs.sum():.9g}")
    return tuple(float(p) for p in probs)


def _probs_for(name: str, client_probs, num_clients: int) -> np.ndarray:
    if client_probs is None:
        return np.full(num_clients, 1.0 / num_clients)
    if len(client_probs) != num_clients:
        raise ValueError(
            f"{name}: client_probs has {len(client_probs)} entries for {num_clients} clients"
        )
    return np.asarray(client_probs, dtype=np.float64)


# --------------------------------------------------------------------------------------
# The client's part of the gradient estimate, on the mesh.
# --------------------------------------------------------------------------------------


def _client_estimate_fn(target: Target, conducive_terms):
    """``(position, client, indices, scale) -> (value, grad)``: ``scale`` times the base
    likelihood of client ``client``'s points ``indices`` and its gradient, plus the
    conducive term ``-0.5 x'A_s x + c_s'x + k_s`` when ``conducive_terms = (A, c, k)`` is
    given; evaluated in ``shard_map`` on the device that holds the client, and summed over
    the client axis so every device gets it."""
    data: FederatedData = target.data
    base = target.log_likelihood.base
    _, unravel = jax.flatten_util.ravel_pytree(target.init)
    conducive = conducive_terms is not None
    terms = tuple(conducive_terms) if conducive else ()

    def body(shards, terms, position, client, indices, scale):
        per_device = jax.tree.leaves(shards)[0].shape[0]
        local = client - jax.lax.axis_index(CLIENT_AXIS) * per_device
        here = (local >= 0) & (local < per_device)
        local = jnp.clip(local, 0, per_device - 1)
        batch = jax.tree.map(lambda leaf: leaf[local, indices], shards)
        # Differentiate at a per-device copy of the position: the gradient at the replicated
        # position itself would be summed over the devices by shard_map's transpose.
        position = jax.tree.map(
            lambda leaf: jax.lax.pcast(leaf, (CLIENT_AXIS,), to="varying"), position
        )
        value, grad = jax.value_and_grad(base)(position, batch)
        value = scale * value
        grad = jax.tree.map(lambda g: scale * g, grad)
        if conducive:
            # The terms are replicated: every device indexes them by the global client.
            matrix, offset, constant = (term[client] for term in terms)
            flat, _ = jax.flatten_util.ravel_pytree(position)
            product = matrix @ flat
            value = value - 0.5 * flat @ product + offset @ flat + constant
            grad = jax.tree.map(jnp.add, grad, unravel(offset - product))
        value = jnp.where(here, value, 0.0)
        grad = jax.tree.map(lambda g: jnp.where(here, g, jnp.zeros_like(g)), grad)
        return jax.lax.psum((value, grad), CLIENT_AXIS)

    shard_specs = jax.tree.map(lambda _: P(CLIENT_AXIS), data.shards)
    mapped = jax.shard_map(
        body,
        mesh=data.mesh,
        in_specs=(shard_specs, tuple(P() for _ in terms), P(), P(), P(), P()),
        out_specs=P(),
    )

    def estimate(position, client, indices, scale):
        return mapped(data.shards, terms, position, client, indices, scale)

    return estimate


def _estimator(target: Target, batch_size: int, client_probs, conducive: bool):
    """``logdensity_and_grad(position, client, indices)`` for the chosen client: the prior
    plus the client's part, its likelihood scaled by ``N_s / (f_s m)``."""
    data: FederatedData = target.data
    terms = conducive_arrays(data.surrogates, client_probs) if conducive else None
    client_part = _client_estimate_fn(target, terms)
    probs = jnp.asarray(client_probs, dtype=jnp.result_type(float))
    scales = jnp.asarray(data.sizes, probs.dtype) / (probs * batch_size)

    def logdensity_and_grad(position, client, indices):
        prior_value, prior_grad = jax.value_and_grad(target.log_prior)(position)
        value, grad = client_part(position, client, indices, scales[client])
        return prior_value + value, jax.tree.map(jnp.add, prior_grad, grad)

    return logdensity_and_grad


def gradient_estimate_fn(target: Target, kernel: AbstractFederatedKernel):
    """The kernel's one-step gradient estimate, for tests and diagnostics.

    Args:
      target: a federated target (for ``fsgld``, one that carries surrogates).
      kernel: a ``dsgld`` or ``fsgld`` config.

    Returns:
      ``estimate(rng_key, position) -> (logdensity, grad)``: draws a client with the
      kernel's probabilities and a minibatch of it without replacement, and returns the
      estimate there. Its mean over keys is the full log density and its gradient.
    """
    kernel.check_target(target)
    data: FederatedData = target.data
    probs = _probs_for(kernel.name, kernel.client_probs, data.num_clients)
    batch_size = int(kernel.batch_size)
    logdensity_and_grad = _estimator(target, batch_size, probs, kernel.conducive)
    log_probs = jnp.log(jnp.asarray(probs, dtype=jnp.result_type(float)))

    def estimate(rng_key, position):
        client_key, batch_key = jax.random.split(rng_key)
        client = jax.random.categorical(client_key, log_probs)
        indices = client_minibatch_indices(batch_key, client, data.sizes, batch_size)
        return logdensity_and_grad(position, client, indices)

    return estimate


# --------------------------------------------------------------------------------------
# The algorithm.
# --------------------------------------------------------------------------------------


class FederatedSGLDState(NamedTuple):
    """A federated SGLD chain: its position; the log density estimate and gradient estimate
    there, for the client that moves it next; the step count (for the step-size schedule);
    that client; and how many moves it has made in its current round."""

    position: ArrayTree
    logdensity: jax.Array
    logdensity_grad: ArrayTree
    step: jax.Array
    client: jax.Array
    local_step: jax.Array


def federated_sgld_algorithm(
    target: Target,
    step_size,
    batch_size: int,
    local_steps,
    client_probs=None,
    conducive: bool = False,
    schedule=None,
) -> SamplingAlgorithm:
    """DSGLD (``conducive=False``) or FSGLD (``conducive=True``) as a blackjax
    ``SamplingAlgorithm``; see ``dsgld`` and ``fsgld``.

    Each step moves ``x' = x + h v + sqrt(2 h) noise`` with the cached estimate ``v``; when
    the current client has made ``local_steps`` moves the server draws the next client with
    probabilities ``client_probs``; then the estimate at ``x'`` for the next client is
    evaluated on a fresh minibatch (one gradient per step). A step whose end point has a
    non-finite estimate is undone and reported as ``diverging``.

    Args:
      target: a federated target; with ``conducive``, one that carries surrogates
        (``with_surrogates``).
      step_size: ``h``, a number or an optax schedule.
      batch_size: points per minibatch, drawn without replacement from one client; at most
        the smallest client's size.
      local_steps: moves per round; an int, or a traced integer array.
      client_probs: the server's probabilities ``f_s``; ``None`` for uniform.
      conducive: add FSGLD's conducive gradient.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Returns:
      ``SamplingAlgorithm(init, step)`` with ``FederatedSGLDState`` and ``SGMCMCInfo``.
      ``init(position, rng_key=None)`` starts at client 0 (at a client drawn with
      ``rng_key`` when given) with one move left in its round, on its first points.
    """
    data: FederatedData = target.data
    probs = _probs_for("federated_sgld", client_probs, data.num_clients)
    log_probs = jnp.log(jnp.asarray(probs, dtype=jnp.result_type(float)))
    logdensity_and_grad = _estimator(target, batch_size, probs, conducive)
    integrator = overdamped_langevin(logdensity_and_grad)
    step_size_at = step_size_fn(step_size, schedule)

    def init(position: ArrayLikeTree, rng_key=None) -> FederatedSGLDState:
        if rng_key is None:
            client = jnp.zeros((), jnp.int32)
        else:
            client = jax.random.categorical(rng_key, log_probs).astype(jnp.int32)
        logdensity, grad = logdensity_and_grad(position, client, jnp.arange(batch_size))
        local_step = jnp.asarray(local_steps, jnp.int32) - 1
        return FederatedSGLDState(
            position, logdensity, grad, jnp.zeros((), jnp.int32), client, local_step
        )

    def step(rng_key: PRNGKey, state: FederatedSGLDState):
        noise_key, client_key, batch_key = jax.random.split(rng_key, 3)
        h = step_size_at(state.step)
        round_over = state.local_step + 1 >= local_steps
        drawn = jax.random.categorical(client_key, log_probs).astype(jnp.int32)
        client = jnp.where(round_over, drawn, state.client)
        local_step = jnp.where(round_over, 0, state.local_step + 1).astype(jnp.int32)
        indices = client_minibatch_indices(batch_key, client, data.sizes, batch_size)
        diffusion = DiffusionState(state.position, state.logdensity, state.logdensity_grad)
        moved = integrator(noise_key, diffusion, h, (client, indices))
        new_state, diverging = guarded(
            FederatedSGLDState(*moved, state.step, client, local_step),
            state,
            (moved.logdensity, moved.logdensity_grad),
        )
        new_state = new_state._replace(step=state.step + 1)
        return new_state, SGMCMCInfo(h, tree_norm(moved.logdensity_grad), diverging)

    return SamplingAlgorithm(init, step)


# --------------------------------------------------------------------------------------
# Kernel configs.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AbstractFederatedKernel(AbstractSGMCMCKernel):
    """A federated SGLD config: step size, minibatch size, local steps per round, the
    server's client probabilities, an optional schedule. It samples only federated targets.
    The concrete kernels differ only in ``conducive``."""

    step_size: Any
    batch_size: int
    local_steps: int
    client_probs: Any = None
    schedule: Any = None
    conducive: ClassVar[bool]

    def __post_init__(self):
        self._check_config()

    def _check_config(self) -> None:
        super()._check_config()
        steps = self.local_steps
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"{self.name}: local_steps must be an integer >= 1, got {steps!r}")
        object.__setattr__(self, "client_probs", _freeze_probs(self.name, self.client_probs))

    def check_target(self, target: Target) -> None:
        """Refuses a target that is not federated, has a nonsmooth part, has client
        probabilities of the wrong length, or a client smaller than ``batch_size``."""
        if not is_federated(target):
            raise ValueError(
                f"{self.name}: the target is not federated; split its data among clients "
                "first with inferax.samplers.federated.split(target, client_of_datum)"
            )
        super().check_target(target)
        data: FederatedData = target.data
        _probs_for(self.name, self.client_probs, data.num_clients)
        smallest = min(data.sizes)
        if int(self.batch_size) > smallest:
            raise ValueError(
                f"{self.name}: batch_size {self.batch_size} is larger than the smallest "
                f"client ({smallest} points); minibatches are drawn without replacement "
                "from one client"
            )

    def build(self, target: Target) -> SamplingAlgorithm:
        return federated_sgld_algorithm(
            target,
            self.step_size,
            int(self.batch_size),
            int(self.local_steps),
            self.client_probs,
            self.conducive,
            self.schedule,
        )


@dataclasses.dataclass(frozen=True)
class dsgld(AbstractFederatedKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Distributed SGLD: a chain handed between clients, each moving it with its own data.

    The server picks client ``s`` with probability ``f_s``; the client makes ``local_steps``
    moves ``x + h v_s(x) + sqrt(2 h) noise`` with
    ``v_s = grad log p(x) + N_s / (f_s m) * sum_{batch} grad log p(y | x)`` over a minibatch
    of ``m`` of its ``N_s`` points drawn without replacement; then the server picks again.
    ``v_s`` is unbiased over the client draw, but within a round the chain drifts towards
    the client's own posterior: with many local steps and clients that differ (non-IID
    data), the draws spread over the mixture of local posteriors. ``fsgld`` corrects this.

    Args:
      step_size: ``h`` > 0 (our convention; the paper's ``h`` is twice this), or an optax
        schedule.
      batch_size: points per minibatch, drawn without replacement from one client.
      local_steps: moves per client round, >= 1.
      client_probs: the server's probabilities ``f_s``, one per client, > 0, summing to 1;
        ``None`` for uniform.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> from inferax.samplers import federated
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=400)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = federated.split(target, 4)
      >>> kernel = federated.dsgld(step_size=1e-4, batch_size=20, local_steps=5)
      >>> algorithm = kernel.build(fed)
      >>> state, info = algorithm.step(jax.random.key(0), algorithm.init(fed.init))
      >>> int(state.local_step), bool(info.diverging)
      (0, False)

    References:
      Ahn, Shahbaba, Welling, "Distributed Stochastic Gradient MCMC", ICML 2014.
      El Mekkaoui, Mesquita, Blomstedt, Kaski, "Federated Stochastic Gradient Langevin
      Dynamics", UAI 2021.
    """

    name = "dsgld"
    conducive = False


@dataclasses.dataclass(frozen=True)
class fsgld(AbstractFederatedKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Federated SGLD: DSGLD plus the conducive gradient, unbiased however far each client
    moves the chain.

    Each move adds ``g_s(x) = grad log q(x) - (1/f_s) grad log q_s(x)`` to DSGLD's ``v_s``,
    with Gaussian surrogates ``q_s`` of each client's likelihood and ``q = prod_s q_s``.
    ``E_s[g_s] = 0``, and ``v_s + g_s`` is close to the full gradient whatever the client,
    so the chain no longer drifts towards the client's own posterior within a round. With
    Gaussian surrogates ``g_s`` is affine: a move costs one matrix-vector product more.

    The surrogates are a value of the target, not of the kernel: fit them with
    ``fit_surrogates(fed, rng_key, kind)`` and attach them with ``with_surrogates``;
    the kernel refuses a federated target without them.

    Args:
      step_size: ``h`` > 0 (our convention; the paper's ``h`` is twice this), or an optax
        schedule.
      batch_size: points per minibatch, drawn without replacement from one client.
      local_steps: moves per client round, >= 1.
      client_probs: the server's probabilities ``f_s``; ``None`` for uniform.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> from inferax.samplers import federated
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=400)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = federated.split(target, 4)
      >>> surrogates = federated.fit_surrogates(fed, jax.random.key(1), "analytic")
      >>> fed = federated.with_surrogates(fed, surrogates)
      >>> kernel = federated.fsgld(step_size=1e-4, batch_size=20, local_steps=5)
      >>> post = inferax.sample(fed, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=100, num_samples=100, progress=False)
      >>> post.draws["x"].shape
      (2, 100)

    References:
      El Mekkaoui, Mesquita, Blomstedt, Kaski, "Federated Stochastic Gradient Langevin
      Dynamics", UAI 2021.
    """

    name = "fsgld"
    conducive = True

    def check_target(self, target: Target) -> None:
        """As ``AbstractFederatedKernel.check_target``, and refuses a target without
        surrogates."""
        super().check_target(target)
        if target.data.surrogates is None:
            raise ValueError(
                "fsgld: the target carries no surrogates; fit them with "
                "federated.fit_surrogates(fed, rng_key, kind) and attach them with "
                "fed = federated.with_surrogates(fed, surrogates)"
            )


__all__ = [
    "AbstractFederatedKernel",
    "FederatedSGLDState",
    "dsgld",
    "federated_sgld_algorithm",
    "fsgld",
    "gradient_estimate_fn",
]
