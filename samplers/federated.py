"""Federated stochastic gradient Langevin dynamics: DSGLD and FSGLD.

The data are split into ``S`` client shards (``inferax.federated.split``) that live on the
devices of a mesh. A chain is handed from client to client: the server picks client ``s``
with probability ``f_s``, the client moves the chain ``local_steps`` times with a gradient
estimated from its own data only, then the server picks again. The local estimate is

    v_s(x) = grad log p(x) + N_s / (f_s m) * sum_{i in batch} grad log p(y_i | x)

(distributed SGLD), with a minibatch of ``m`` of the client's ``N_s`` points drawn with
replacement; its mean over the client draw is the full gradient. FSGLD adds the conducive
gradient ``g_s(x) = grad log q(x) - (1 / f_s) grad log q_s(x)``, where ``q_s`` is a
surrogate of client ``s``'s whole likelihood and ``q = prod_s q_s``. Its mean over the
client draw is zero, so the estimate stays unbiased, and it cancels most of the
between-client bias of ``v_s``: with Gaussian surrogates ``q_s = N(mu_s, P_s^-1)`` it is
the affine map ``-(P - P_s / f_s) x + (P mu - P_s mu_s / f_s)`` (``P = sum_s P_s``,
``P mu = sum_s P_s mu_s``), one matrix-vector product per step, precomputed per client.

Step convention, as in ``inferax.samplers.sgmcmc``: ``x' = x + h v + sqrt(2 h) noise``. The
paper writes ``x' = x + (h/2) v + N(0, h)``: its ``h`` is twice ours.

On a mesh the data part of the estimate (minibatch likelihood gradient and conducive term)
runs in ``shard_map`` over the ``"clients"`` axis: every device evaluates it for the chains
whose next client it holds, masks the others, and a ``psum`` over the axis hands every
chain's estimate to every device. Positions, gradients and client indices travel; data never
does. The step's draws are the same on one device and on many, bit for bit.
"""

from __future__ import annotations

import dataclasses
import warnings
import weakref
from typing import Any, NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.base import SamplingAlgorithm
from blackjax.mcmc.diffusions import DiffusionState, overdamped_langevin
from inferax.kernel import AbstractKernel
from inferax.samplers.guarded import guarded, tree_norm
from inferax.samplers.stochastic_gradient import AbstractSGMCMCKernel, SGMCMCInfo, step_size_fn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.federated import (
    CLIENT_AXIS,
    FederatedData,
    is_federated,
    to_host,
    with_client_arrays,
)
from inferax.target import Target
from inferax.typing import ArrayLikeTree, ArrayTree, PRNGKey

CONDUCIVE_ARRAYS = ("conducive_matrix", "conducive_offset", "conducive_constant")
"""The per-client arrays that hold FSGLD's conducive term ``-0.5 x'A_s x + c_s'x + k_s``."""


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


def _client_estimate_fn(target: Target, conducive: bool):
    """``(position, client, indices, scale) -> (value, grad)``: ``scale`` times the base
    likelihood of client ``client``'s points ``indices`` and its gradient, plus the
    conducive term when ``conducive``; evaluated in ``shard_map`` on the device that holds
    the client, and summed over the client axis so every device gets it."""
    data: FederatedData = target.data
    base = target.log_likelihood.base
    _, unravel = jax.flatten_util.ravel_pytree(target.init)
    arrays = tuple(data.client_arrays[name] for name in CONDUCIVE_ARRAYS) if conducive else ()

    def body(shards, arrays, position, client, indices, scale):
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
            matrix, offset, constant = (a[local] for a in arrays)
            flat, _ = jax.flatten_util.ravel_pytree(position)
            product = matrix @ flat
            value = value - 0.5 * flat @ product + offset @ flat + constant
            extra = unravel(offset - product)
            grad = jax.tree.map(jnp.add, grad, extra)
        value = jnp.where(here, value, 0.0)
        grad = jax.tree.map(lambda g: jnp.where(here, g, jnp.zeros_like(g)), grad)
        return jax.lax.psum((value, grad), CLIENT_AXIS)

    shard_specs = jax.tree.map(lambda _: P(CLIENT_AXIS), data.shards)
    array_specs = tuple(P(CLIENT_AXIS) for _ in arrays)
    mapped = jax.shard_map(
        body,
        mesh=data.mesh,
        in_specs=(shard_specs, array_specs, P(), P(), P(), P()),
        out_specs=P(),
    )

    def estimate(position, client, indices, scale):
        return mapped(data.shards, arrays, position, client, indices, scale)

    return estimate


def _estimator(target: Target, batch_size: int, client_probs, conducive: bool):
    """``logdensity_and_grad(position, client, indices)`` for the chosen client, and the
    per-client scales ``N_s / (f_s m)``."""
    client_part = _client_estimate_fn(target, conducive)
    sizes = target.data.sizes
    probs = jnp.asarray(client_probs, dtype=jnp.result_type(float))
    scales = sizes.astype(probs.dtype) / (probs * batch_size)

    def logdensity_and_grad(position, client, indices):
        prior_value, prior_grad = jax.value_and_grad(target.log_prior)(position)
        value, grad = client_part(position, client, indices, scales[client])
        return prior_value + value, jax.tree.map(jnp.add, prior_grad, grad)

    return logdensity_and_grad


def gradient_estimate_fn(target: Target, kernel):
    """The kernel's one-step gradient estimate, for tests and diagnostics.

    Args:
      target: a federated target (for ``fsgld``, prepared: ``kernel.prepare_target(fed)``).
      kernel: a ``dsgld`` or ``fsgld`` config.

    Returns:
      ``estimate(rng_key, position) -> (logdensity, grad)``: draws a client with the
      kernel's probabilities and a minibatch of it with replacement, and returns the
      estimate there. Its mean over keys is the full log density and its gradient.
    """
    probs = _probs_for(kernel.name, kernel.client_probs, target.data.num_clients)
    conducive = isinstance(kernel, fsgld)
    if conducive:
        _require_conducive(kernel.name, target)
    logdensity_and_grad = _estimator(target, int(kernel.batch_size), probs, conducive)
    log_probs = jnp.log(jnp.asarray(probs, dtype=jnp.result_type(float)))
    sizes = target.data.sizes

    def estimate(rng_key, position):
        client_key, batch_key = jax.random.split(rng_key)
        client = jax.random.categorical(client_key, log_probs)
        indices = jax.random.randint(batch_key, (int(kernel.batch_size),), 0, sizes[client])
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
      target: a federated target; with ``conducive``, one that carries the conducive arrays
        (``fsgld.prepare_target``).
      step_size: ``h``, a number or an optax schedule.
      batch_size: points per minibatch, drawn with replacement from one client.
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
    num_clients = data.num_clients
    probs = _probs_for("federated_sgld", client_probs, num_clients)
    float_dtype = jnp.result_type(float)
    log_probs = jnp.log(jnp.asarray(probs, dtype=float_dtype))
    logdensity_and_grad = _estimator(target, batch_size, probs, conducive)
    integrator = overdamped_langevin(logdensity_and_grad)
    step_size_at = step_size_fn(step_size, schedule)
    sizes = data.sizes

    def init(position: ArrayLikeTree, rng_key=None) -> FederatedSGLDState:
        if rng_key is None:
            client = jnp.zeros((), jnp.int32)
        else:
            client = jax.random.categorical(rng_key, log_probs).astype(jnp.int32)
        indices = jnp.arange(batch_size, dtype=jnp.int32) % sizes[client]
        logdensity, grad = logdensity_and_grad(position, client, indices)
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
        indices = jax.random.randint(batch_key, (batch_size,), 0, sizes[client])
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
# Surrogates.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianSurrogates:
    """Gaussian surrogates ``q_s(x) ∝ exp(-0.5 (x - mu_s)' P_s (x - mu_s))`` of each client's
    likelihood, on the flattened position (``jax.flatten_util.ravel_pytree(target.init)``).

    Compared and hashed by identity, so a kernel config that holds one stays hashable.

    Args:
      mean: ``(num_clients, dim)``.
      precision: ``(num_clients, dim, dim)``, symmetric positive definite (the inverse of a
        positive definite covariance).

    Raises:
      ValueError: shapes that do not match, non-finite values, or a precision that is not
        symmetric positive definite (the message names the client).
    """

    mean: np.ndarray
    precision: np.ndarray

    def __post_init__(self):
        mean = np.asarray(self.mean, dtype=np.float64)
        precision = np.asarray(self.precision, dtype=np.float64)
        if mean.ndim != 2 or precision.shape != (*mean.shape, mean.shape[1]):
            raise ValueError(
                "GaussianSurrogates: mean must be (num_clients, dim) and precision "
                f"(num_clients, dim, dim), got {mean.shape} and {precision.shape}"
            )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(precision))):
            raise ValueError("GaussianSurrogates: mean and precision must be finite")
        scale = max(1.0, float(np.max(np.abs(precision))))
        asymmetry = np.max(np.abs(precision - np.swapaxes(precision, 1, 2)), axis=(1, 2))
        for client in np.flatnonzero(asymmetry > 1e-6 * scale):
            raise ValueError(
                f"GaussianSurrogates: the precision of client {client} is not symmetric"
            )
        precision = 0.5 * (precision + np.swapaxes(precision, 1, 2))
        for client, matrix in enumerate(precision):
            try:
                np.linalg.cholesky(matrix)
            except np.linalg.LinAlgError:
                smallest = float(np.linalg.eigvalsh(matrix)[0])
                raise ValueError(
                    f"GaussianSurrogates: the surrogate of client {client} has a covariance "
                    f"that is not positive definite (its precision's smallest eigenvalue is "
                    f"{smallest:.3g})"
                ) from None
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "precision", precision)

    @classmethod
    def from_covariance(cls, mean, covariance) -> GaussianSurrogates:
        """Surrogates from means and covariances; each covariance must be positive definite."""
        covariance = np.asarray(covariance, dtype=np.float64)
        precisions = []
        for client, matrix in enumerate(covariance):
            try:
                factor = np.linalg.cholesky(0.5 * (matrix + matrix.T))
            except np.linalg.LinAlgError:
                raise ValueError(
                    f"GaussianSurrogates: the covariance of client {client} is not positive "
                    "definite"
                ) from None
            inverse = np.linalg.inv(factor)
            precisions.append(inverse.T @ inverse)
        return cls(mean, np.stack(precisions))

    @property
    def num_clients(self) -> int:
        return self.mean.shape[0]


def conducive_arrays(surrogates: GaussianSurrogates, client_probs) -> dict[str, np.ndarray]:
    """Client ``s``'s conducive term ``log q(x) - (1/f_s) log q_s(x)`` as
    ``-0.5 x' A_s x + c_s' x + k_s``: ``A_s = P - P_s / f_s``, ``c_s = eta - eta_s / f_s``
    with ``eta_s = P_s mu_s``, ``P = sum P_s``, ``eta = sum eta_s``; ``k_s`` makes the
    estimate of the log density unbiased too."""
    f = np.asarray(client_probs, dtype=np.float64)
    precision, mean = surrogates.precision, surrogates.mean
    eta = np.einsum("sij,sj->si", precision, mean)
    kappa = -0.5 * np.einsum("si,si->s", mean, eta)
    matrix = precision.sum(0)[None] - precision / f[:, None, None]
    offset = eta.sum(0)[None] - eta / f[:, None]
    constant = kappa.sum() - kappa / f
    return {
        "conducive_matrix": matrix,
        "conducive_offset": offset,
        "conducive_constant": constant,
    }


SURROGATE_KINDS = ("gaussian", "laplace", "global_laplace", "analytic")
"""The ways ``fit_surrogates`` fits a client's Gaussian surrogate."""


def _client_map(target: Target, fn, rng_key, *args):
    """``fn(shard, size, rng_key, *args)`` for every client, each on the device that holds
    it; the results, stacked along a leading client axis, replicated on every device."""
    return _client_mapper(target, fn, len(args))(rng_key, *args)


def _client_mapper(target: Target, fn, num_args: int):
    """``_client_map`` as one compiled function of ``(rng_key, *args)``, for calling
    repeatedly (an iteration whose every step asks all clients)."""
    data: FederatedData = target.data

    def body(shards, sizes, keys, *args):
        out = jax.vmap(lambda s, n, k: fn(s, n, jax.random.wrap_key_data(k), *args))(
            shards, sizes, keys
        )
        return out

    shard_specs = jax.tree.map(lambda _: P(CLIENT_AXIS), data.shards)
    mapped = jax.shard_map(
        body,
        mesh=data.mesh,
        in_specs=(shard_specs, P(CLIENT_AXIS), P(CLIENT_AXIS), *(P() for _ in range(num_args))),
        out_specs=P(CLIENT_AXIS),
        check_vma=False,  # the fits start from replicated values and vary per client
    )
    compiled = jax.jit(mapped, out_shardings=NamedSharding(data.mesh, P()))

    def call(rng_key, *args):
        keys = jax.random.key_data(jax.random.split(rng_key, data.num_clients))
        return compiled(data.shards, data.sizes, keys, *args)

    return call


def fit_surrogates(
    target: Target,
    rng_key: PRNGKey,
    kind: str = "gaussian",
    *,
    step_size: float | None = None,
    batch_size: int | None = None,
    num_steps: int | None = None,
    num_chains: int = 4,
    learning_rate: float = 0.05,
) -> GaussianSurrogates:
    """Fits a Gaussian surrogate of each client's likelihood, each client on its own device
    from its own data.

    - ``"analytic"``: exact when the log likelihood is quadratic in the position (a
      conjugate Gaussian model): the Hessian and gradient at ``target.init``, one Newton
      step. Refused when the Hessian differs at a second point.
    - ``"laplace"``: the mode of ``p(x)^(1/S) p(data_s | x)`` found with optax's Adam
      (``num_steps`` full-shard steps, default 1000), then ``P_s`` is minus the Hessian of the
      client's log likelihood there and ``P_s mu_s`` matches its gradient there.
    - ``"global_laplace"``: each client's log likelihood to second order at the mode of the
      whole posterior, which is found first by damped Newton steps in which every client
      returns the value, gradient and Hessian of its log likelihood at the server's current
      position (``num_steps`` at most, default 50): ``P_s`` is minus the client's Hessian
      there and ``P_s mu_s`` matches its gradient there. Where the posterior concentrates,
      this is what each client's likelihood looks like, even when that likelihood alone has
      no mode (a client holding a single class); there the local fits below describe it
      far from where the chain goes, and FSGLD's local steps inherit their error.
    - ``"gaussian"``: ``num_chains`` local SGLD chains per client on
      ``p(x)^(1/S) p(data_s | x)`` (``num_steps`` steps, default 2000, the first half
      discarded), moment-matched by a Gaussian ``N(m, C)``; the prior's share is divided out
      with its Hessian and gradient at ``m``: ``P_s = C^-1 + H_prior(m) / S``,
      ``P_s mu_s = P_s m - grad log p(m) / S`` (exact for a Gaussian prior). Tempering the
      prior keeps the local target proper where the client's likelihood alone is not.

    A fitted precision whose eigenvalues are not all positive (a client whose likelihood is
    flat in some direction) has them raised to ``1e-6`` of the largest, with a warning.

    Args:
      target: a federated target.
      rng_key: the key.
      kind: ``"analytic"``, ``"laplace"``, ``"global_laplace"`` or ``"gaussian"``.
      step_size: the local SGLD step (``"gaussian"``); required for it.
      batch_size: the local SGLD minibatch, drawn with replacement; ``None``, the whole shard.
      num_steps: optimiser or SGLD steps.
      num_chains: local SGLD chains per client.
      learning_rate: Adam's learning rate (``"laplace"``).

    Returns:
      ``GaussianSurrogates``.

    References:
      El Mekkaoui, Mesquita, Blomstedt, Kaski, "Federated Stochastic Gradient Langevin
      Dynamics", UAI 2021.
    """
    if not is_federated(target):
        raise TypeError("fit_surrogates: expected a federated target from inferax.federated.split")
    if kind not in SURROGATE_KINDS:
        raise ValueError(f"fit_surrogates: kind must be one of {SURROGATE_KINDS}, got {kind!r}")
    data: FederatedData = target.data
    base = target.log_likelihood.base
    num_clients = data.num_clients
    flat_init, unravel = jax.flatten_util.ravel_pytree(target.init)
    dtype = flat_init.dtype
    max_size = data.max_size

    def shard_ll(flat, shard, size):
        params = unravel(flat)

        def one(point):
            return base(params, jax.tree.map(lambda leaf: leaf[None], point))

        values = jax.vmap(one)(shard)
        return jnp.sum(jnp.where(jnp.arange(max_size) < size, values, 0.0))

    def flat_prior(flat):
        return target.log_prior(unravel(flat))

    if kind == "analytic":

        def fit(shard, size, key, shift):
            del key
            grad = jax.grad(shard_ll)(flat_init, shard, size)
            hess = jax.hessian(shard_ll)(flat_init, shard, size)
            hess_shifted = jax.hessian(shard_ll)(flat_init + shift, shard, size)
            return -hess, -hess @ flat_init + grad, hess_shifted - hess

        precision, eta, change = map(
            to_host, _client_map(target, fit, rng_key, jnp.asarray(0.5, dtype))
        )
        scale = np.maximum(np.abs(precision).max(axis=(1, 2)), 1e-12)
        bad = np.flatnonzero(np.abs(change).max(axis=(1, 2)) > 1e-4 * scale)
        if bad.size:
            raise ValueError(
                f"fit_surrogates: 'analytic' needs a log likelihood quadratic in the position "
                f"(a conjugate Gaussian model), but the Hessian of client(s) {bad.tolist()} "
                "changes with the position; use 'laplace' or 'gaussian'"
            )
    elif kind == "laplace":
        steps = 1000 if num_steps is None else int(num_steps)
        optimizer = optax.adam(learning_rate)

        def fit(shard, size, key):
            del key

            def loss(flat):
                return -(flat_prior(flat) / num_clients + shard_ll(flat, shard, size))

            def update(carry, _):
                flat, opt_state = carry
                grad = jax.grad(loss)(flat)
                updates, opt_state = optimizer.update(grad, opt_state, flat)
                return (optax.apply_updates(flat, updates), opt_state), None

            (mode, _), _ = jax.lax.scan(
                update, (flat_init, optimizer.init(flat_init)), None, steps
            )
            grad = jax.grad(shard_ll)(mode, shard, size)
            precision = -jax.hessian(shard_ll)(mode, shard, size)
            return precision, precision @ mode + grad

        precision, eta = map(to_host, _client_map(target, fit, rng_key))
    elif kind == "global_laplace":

        def expand(shard, size, key, flat):
            del key
            return (shard_ll(flat, shard, size), jax.grad(shard_ll)(flat, shard, size),
                    jax.hessian(shard_ll)(flat, shard, size))  # fmt: skip

        # One compiled mapping serves the search and the expansion at its end.
        expand_all = _client_mapper(target, expand, 1)
        mode = _global_mode(expand_all, rng_key, flat_init, flat_prior,
                            50 if num_steps is None else int(num_steps))  # fmt: skip
        _, grad, hess = map(to_host, expand_all(rng_key, mode))
        precision = -hess.astype(np.float64)
        eta = np.einsum("sij,j->si", precision, np.asarray(mode, np.float64)) + grad
    else:
        if step_size is None:
            raise ValueError("fit_surrogates: 'gaussian' needs the local SGLD step_size")
        steps = 2000 if num_steps is None else int(num_steps)
        keep = steps - steps // 2
        h = jnp.asarray(step_size, dtype)

        def local_grad(flat, shard, size, key):
            tempered = jax.grad(flat_prior)(flat) / num_clients
            if batch_size is None:
                return tempered + jax.grad(shard_ll)(flat, shard, size)
            indices = jax.random.randint(key, (batch_size,), 0, size)
            batch = jax.tree.map(lambda leaf: leaf[indices], shard)
            scale = size.astype(dtype) / batch_size
            return tempered + scale * jax.grad(lambda x: base(unravel(x), batch))(flat)

        def fit(shard, size, key):
            def one_chain(chain_key):
                def move(flat, step_key):
                    batch_key, noise_key = jax.random.split(step_key)
                    noise = jax.random.normal(noise_key, flat.shape, dtype)
                    grad = local_grad(flat, shard, size, batch_key)
                    flat = flat + h * grad + jnp.sqrt(2 * h) * noise
                    return flat, flat

                _, path = jax.lax.scan(move, flat_init, jax.random.split(chain_key, steps))
                return path[steps - keep :]

            draws = jax.vmap(one_chain)(jax.random.split(key, num_chains))
            draws = draws.reshape(-1, flat_init.shape[0])
            mean = draws.mean(0)
            centred = draws - mean[None, :]
            covariance = centred.T @ centred / (draws.shape[0] - 1)
            prior_grad = jax.grad(flat_prior)(mean)
            prior_hess = jax.hessian(flat_prior)(mean)
            return mean, covariance, prior_grad, prior_hess

        mean, covariance, prior_grad, prior_hess = map(to_host, _client_map(target, fit, rng_key))
        mean, covariance = mean.astype(np.float64), covariance.astype(np.float64)
        precision = np.linalg.inv(covariance) + prior_hess / num_clients
        eta = np.einsum("sij,sj->si", precision, mean) - prior_grad / num_clients
    return _surrogates_from_natural(np.asarray(precision, np.float64), np.asarray(eta, np.float64))


def _global_mode(expand, rng_key, start, flat_prior, max_steps: int) -> jax.Array:
    """The mode of the whole posterior by Newton steps, each regularised (``-H + lam I``)
    until positive definite and halved until the log posterior rises; only positions go
    out to the clients, and values, gradients and Hessians of their log likelihoods come
    back. Stops when a step moves less than ``1e-8 (1 + |x|)`` or none rises."""
    prior_terms = jax.jit(lambda x: (flat_prior(x), jax.grad(flat_prior)(x),
                                     jax.hessian(flat_prior)(x)))  # fmt: skip

    def terms(x):
        values, grads, hessians = map(to_host, expand(rng_key, x))
        prior_value, prior_grad, prior_hess = map(to_host, prior_terms(x))
        value = float(values.sum() + prior_value)
        grad, hess = grads.sum(0) + prior_grad, hessians.sum(0) + prior_hess
        finite = np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))
        return value, grad.astype(np.float64), hess.astype(np.float64), finite

    x = np.asarray(start, np.float64)
    value, grad, hess, finite = terms(jnp.asarray(x, start.dtype))
    if not finite:
        raise ValueError(
            "fit_surrogates: the log posterior or its derivatives are not finite at the "
            "target's init, where 'global_laplace' starts its search for the mode"
        )
    eye = np.eye(x.size)
    for _ in range(max_steps):
        shift = 0.0
        for _ in range(200):  # doubling from 1e-6 of |H|: far past any finite Hessian
            try:
                np.linalg.cholesky(-hess + shift * eye)
                break
            except np.linalg.LinAlgError:
                shift = max(2.0 * shift, 1e-6 * max(1.0, float(np.abs(hess).max())))
        step = np.linalg.solve(-hess + shift * eye, grad)
        for _ in range(30):
            candidate = x + step
            new_value, new_grad, new_hess, finite = terms(jnp.asarray(candidate, start.dtype))
            if finite and new_value >= value - 1e-9 * abs(value):
                break
            step = step / 2.0
        else:
            break
        x, value, grad, hess = candidate, new_value, new_grad, new_hess
        if np.linalg.norm(step) < 1e-8 * (1.0 + np.linalg.norm(x)):
            break
    return jnp.asarray(x, start.dtype)


def _surrogates_from_natural(precision: np.ndarray, eta: np.ndarray) -> GaussianSurrogates:
    precision = 0.5 * (precision + np.swapaxes(precision, 1, 2))
    values, vectors = np.linalg.eigh(precision)
    floor = 1e-6 * np.maximum(values.max(axis=1, keepdims=True), 1e-12)
    raised = np.flatnonzero(np.any(values < floor, axis=1))
    if raised.size:
        warnings.warn(
            f"fit_surrogates: the fitted precision of client(s) {raised.tolist()} is not "
            "positive definite (a likelihood flat in some direction); its eigenvalues were "
            "raised to 1e-6 of the largest",
            stacklevel=3,
        )
        values = np.maximum(values, floor)
        precision = np.einsum("sij,sj,skj->sik", vectors, values, vectors)
    mean = np.linalg.solve(precision, eta[..., None])[..., 0]
    return GaussianSurrogates(mean, precision)


# --------------------------------------------------------------------------------------
# Kernel configs.
# --------------------------------------------------------------------------------------


def _require_conducive(name: str, target: Target) -> None:
    if not all(key in target.data.client_arrays for key in CONDUCIVE_ARRAYS):
        raise ValueError(
            f"{name}: the target carries no surrogates; inferax.sample fits them, or call "
            "kernel.prepare_target(fed) before kernel.build"
        )


class AbstractFederatedKernel(AbstractSGMCMCKernel):
    """A federated SGLD config: step size, minibatch size, local steps per round, the
    server's client probabilities. It samples only federated targets."""

    step_size: Any
    batch_size: int
    local_steps: int
    client_probs: tuple[float, ...] | None
    schedule: Any

    def _check_config(self) -> None:
        super()._check_config()
        steps = self.local_steps
        if not isinstance(steps, int | np.integer) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"{self.name}: local_steps must be an integer >= 1, got {steps!r}")
        object.__setattr__(self, "client_probs", _freeze_probs(self.name, self.client_probs))

    def check_target(self, target: Target) -> None:
        AbstractKernel.check_target(self, target)
        if not is_federated(target):
            raise ValueError(
                f"{self.name}: the target is not federated; split its data among clients "
                "first with inferax.federated.split(target, client_of_datum)"
            )
        _probs_for(self.name, self.client_probs, target.data.num_clients)

    def _algorithm(self, target: Target, conducive: bool) -> SamplingAlgorithm:
        return federated_sgld_algorithm(
            target, self.step_size, int(self.batch_size), int(self.local_steps),
            self.client_probs, conducive, self.schedule,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class dsgld(AbstractFederatedKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Distributed SGLD: a chain handed between clients, each moving it with its own data.

    The server picks client ``s`` with probability ``f_s``; the client makes ``local_steps``
    moves ``x + h v_s(x) + sqrt(2 h) noise`` with
    ``v_s = grad log p(x) + N_s / (f_s m) * sum_{batch} grad log p(y | x)`` over a minibatch
    of ``m`` of its ``N_s`` points drawn with replacement; then the server picks again.
    ``v_s`` is unbiased over the client draw, but within a round the chain drifts towards
    the client's own posterior: with many local steps and clients that differ (non-IID
    data), the draws spread over the mixture of local posteriors. ``fsgld`` corrects this.

    Args:
      step_size: ``h`` > 0 (our convention; the paper's ``h`` is twice this), or an optax
        schedule.
      batch_size: points per minibatch, drawn with replacement from one client.
      local_steps: moves per client round, >= 1.
      client_probs: the server's probabilities ``f_s``, one per client, > 0, summing to 1;
        ``None`` for uniform.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=400)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = inferax.federated.split(target, 4)
      >>> kernel = inferax.samplers.dsgld(step_size=1e-4, batch_size=20, local_steps=5)
      >>> post = inferax.sample(fed, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=100, num_samples=100, progress=False)
      >>> post.draws["x"].shape
      (2, 100)

    References:
      Ahn, Shahbaba, Welling, "Distributed Stochastic Gradient MCMC", ICML 2014.
      El Mekkaoui, Mesquita, Blomstedt, Kaski, "Federated Stochastic Gradient Langevin
      Dynamics", UAI 2021.
    """

    step_size: Any
    batch_size: int
    local_steps: int
    client_probs: Any = None
    schedule: Any = None

    name = "dsgld"

    def __post_init__(self):
        self._check_config()

    def build(self, target: Target) -> SamplingAlgorithm:
        return self._algorithm(target, conducive=False)


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclasses.dataclass(frozen=True)
class fsgld(AbstractFederatedKernel):  # noqa: N801  (lower case, like blackjax's kernels)
    """Federated SGLD: DSGLD plus the conducive gradient, unbiased however far each client
    moves the chain.

    Each move adds ``g_s(x) = grad log q(x) - (1/f_s) grad log q_s(x)`` to DSGLD's ``v_s``,
    with Gaussian surrogates ``q_s`` of each client's likelihood and ``q = prod_s q_s``.
    ``E_s[g_s] = 0``, and ``v_s + g_s`` is close to the full gradient whatever the client,
    so the chain no longer drifts towards the client's own posterior within a round. With
    Gaussian surrogates ``g_s`` is affine, precomputed per client: a move costs about one
    extra prior gradient.

    The surrogates are fitted once per federated target before anything compiles
    (``prepare_target``, which ``inferax.sample`` calls) and kept with their clients on the
    mesh:

    - ``"gaussian"``: moment-matched local SGLD draws (``fit_surrogates``), with step
      ``num_clients * step_size`` and full-shard gradients, key ``surrogate_seed``;
    - ``"laplace"``: an Adam mode plus a Hessian;
    - ``"analytic"``: exact, for a log likelihood quadratic in the position;
    - a ``GaussianSurrogates``: used as given.

    Args:
      step_size: ``h`` > 0 (our convention; the paper's ``h`` is twice this).
      batch_size: points per minibatch, drawn with replacement from one client.
      local_steps: moves per client round, >= 1.
      client_probs: the server's probabilities ``f_s``; ``None`` for uniform.
      surrogate: ``"gaussian"``, ``"laplace"``, ``"global_laplace"`` (best for non-IID
        clients), ``"analytic"`` (see ``fit_surrogates``) or a ``GaussianSurrogates``.
      surrogate_seed: the seed of the surrogate fit.
      schedule: an optional optax schedule that multiplies ``step_size``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> y = np.random.default_rng(0).normal(1.0, 1.0, size=400)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = inferax.federated.split(target, 4)
      >>> kernel = inferax.samplers.fsgld(
      ...     step_size=1e-4, batch_size=20, local_steps=5, surrogate="analytic")
      >>> post = inferax.sample(fed, kernel, jax.random.key(0), num_chains=2,
      ...                       num_warmup=100, num_samples=100, progress=False)
      >>> post.draws["x"].shape
      (2, 100)

    References:
      El Mekkaoui, Mesquita, Blomstedt, Kaski, "Federated Stochastic Gradient Langevin
      Dynamics", UAI 2021.
    """

    step_size: Any
    batch_size: int
    local_steps: int
    client_probs: Any = None
    surrogate: Any = "gaussian"
    surrogate_seed: int = 0
    schedule: Any = None

    name = "fsgld"

    def __post_init__(self):
        self._check_config()
        kinds = SURROGATE_KINDS
        if not (isinstance(self.surrogate, GaussianSurrogates) or self.surrogate in kinds):
            raise ValueError(
                f"fsgld: surrogate must be one of {kinds} or a GaussianSurrogates, got "
                f"{self.surrogate!r}"
            )
        if self.surrogate == "gaussian" and callable(self.step_size):
            raise ValueError(
                "fsgld: surrogate='gaussian' takes its local step from a numeric step_size; "
                "with a schedule, fit the surrogates with fit_surrogates and pass them"
            )

    def check_target(self, target: Target) -> None:
        super().check_target(target)
        if isinstance(self.surrogate, GaussianSurrogates):
            dim = jax.flatten_util.ravel_pytree(target.init)[0].shape[0]
            if self.surrogate.mean.shape != (target.data.num_clients, dim):
                raise ValueError(
                    f"fsgld: the surrogates are for {self.surrogate.mean.shape[0]} clients "
                    f"of dimension {self.surrogate.mean.shape[1]}; the target has "
                    f"{target.data.num_clients} clients of dimension {dim}"
                )

    def surrogates(self, target: Target) -> GaussianSurrogates:
        """The kernel's surrogates for ``target``: given, or fitted (the fit is not cached
        here; ``prepare_target`` caches the prepared target)."""
        if isinstance(self.surrogate, GaussianSurrogates):
            return self.surrogate
        key = jax.random.key(self.surrogate_seed)
        if self.surrogate == "gaussian":
            return fit_surrogates(
                target, key, "gaussian", step_size=float(self.step_size) * target.data.num_clients
            )
        return fit_surrogates(target, key, self.surrogate)

    def prepare_target(self, target: Target) -> Target:
        """``target`` with the conducive arrays of this kernel's surrogates placed with the
        clients. Fitted once per (target, surrogate settings, client probabilities)."""
        self.check_target(target)
        cache_key = (
            self.surrogate,
            self.surrogate_seed,
            self.client_probs,
            None if self.surrogate != "gaussian" else float(self.step_size),
        )
        per_target = _PREPARED.setdefault(target, {})
        if cache_key not in per_target:
            probs = _probs_for(self.name, self.client_probs, target.data.num_clients)
            arrays = conducive_arrays(self.surrogates(target), probs)
            dtype = jax.flatten_util.ravel_pytree(target.init)[0].dtype
            arrays = {name: value.astype(dtype) for name, value in arrays.items()}
            per_target[cache_key] = with_client_arrays(target, **arrays)
        return per_target[cache_key]

    def build(self, target: Target) -> SamplingAlgorithm:
        _require_conducive(self.name, target)
        return self._algorithm(target, conducive=True)


__all__ = [
    "AbstractFederatedKernel",
    "FederatedSGLDState",
    "GaussianSurrogates",
    "conducive_arrays",
    "dsgld",
    "federated_sgld_algorithm",
    "fit_surrogates",
    "fsgld",
    "gradient_estimate_fn",
]
