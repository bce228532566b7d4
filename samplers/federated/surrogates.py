"""Gaussian surrogates of each client's likelihood, for FSGLD's conducive gradient.

A surrogate is an explicit value: ``fit_surrogates(fed, rng_key, kind)`` fits one per
client, each on the device that holds the client's data, and ``with_surrogates(fed,
surrogates)`` attaches them to the federated target's data, where ``fsgld`` reads them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.pytree import pytree_dataclass
from inferax.samplers.federated.split import (
    CLIENT_AXIS,
    FederatedData,
    client_minibatch_indices,
    place_on_clients,
    place_replicated,
    require_federated,
    to_host,
)
from inferax.samplers.stochastic_gradient import langevin_algorithm, step_size_fn
from inferax.target import Target
from inferax.typing import ArrayTree, PRNGKey

SURROGATE_KINDS = ("analytic", "laplace", "global_laplace", "gaussian")
"""The ways ``fit_surrogates`` fits a client's Gaussian surrogate."""


@pytree_dataclass
class GaussianSurrogates:
    """Gaussian surrogates ``q_s(x) ∝ exp(-0.5 (x - mu_s)' P_s (x - mu_s))`` of each client's
    likelihood, on the flattened position (``jax.flatten_util.ravel_pytree(target.init)``).

    A pytree of two arrays. Build one from numbers with ``from_precision`` or
    ``from_covariance``, which check it; ``fit_surrogates`` returns one.

    Attributes:
      mean: ``(num_clients, dim)``.
      precision: ``(num_clients, dim, dim)``, symmetric positive definite.
    """

    mean: jax.Array
    precision: jax.Array

    @property
    def num_clients(self) -> int:
        """How many clients the surrogates are for."""
        return int(np.shape(self.mean)[0])

    @classmethod
    def from_precision(cls, mean, precision) -> GaussianSurrogates:
        """Surrogates from means and precisions, checked.

        Raises:
          ValueError: shapes that do not match, non-finite values, or a precision that is
            not symmetric positive definite (the message names the client).
        """
        mean = np.asarray(mean, dtype=np.float64)
        precision = np.asarray(precision, dtype=np.float64)
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
        return cls(mean, precision)

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
        return cls.from_precision(mean, np.stack(precisions))


def with_surrogates(target: Target, surrogates: GaussianSurrogates) -> Target:
    """A copy of a federated target that carries ``surrogates``, checked, in the position's
    float dtype and replicated on every device of its mesh.

    Args:
      target: a federated target (``split``).
      surrogates: one surrogate per client, of the flattened position's dimension.

    Returns:
      The federated target with ``data.surrogates`` set.

    Raises:
      ValueError: surrogates for another number of clients or another dimension, or not
        positive definite.
    """
    data = require_federated(target, "with_surrogates")
    if not isinstance(surrogates, GaussianSurrogates):
        raise TypeError(
            f"with_surrogates: expected GaussianSurrogates, got {type(surrogates).__name__}"
        )
    checked = GaussianSurrogates.from_precision(
        to_host(surrogates.mean), to_host(surrogates.precision)
    )
    flat_init = jax.flatten_util.ravel_pytree(target.init)[0]
    expected = (data.num_clients, flat_init.shape[0])
    if checked.mean.shape != expected:
        raise ValueError(
            f"with_surrogates: the surrogates are for {checked.mean.shape[0]} clients of "
            f"dimension {checked.mean.shape[1]}; the target has {expected[0]} clients of "
            f"dimension {expected[1]}"
        )
    placed = jax.tree.map(
        lambda leaf: place_replicated(data.mesh, leaf.astype(flat_init.dtype)), checked
    )
    return dataclasses.replace(target, data=dataclasses.replace(data, surrogates=placed))


def conducive_arrays(
    surrogates: GaussianSurrogates, client_probs
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Client ``s``'s conducive term ``log q(x) - (1/f_s) log q_s(x)`` as
    ``-0.5 x' A_s x + c_s' x + k_s``.

    ``A_s = P - P_s / f_s`` and ``c_s = eta - eta_s / f_s``, with ``eta_s = P_s mu_s``,
    ``P = sum_s P_s`` and ``eta = sum_s eta_s``; ``k_s`` makes the estimate of the log
    density unbiased too.

    Args:
      surrogates: the clients' surrogates.
      client_probs: the server's probabilities ``f_s``, ``(num_clients,)``.

    Returns:
      ``(A, c, k)`` of shapes ``(num_clients, dim, dim)``, ``(num_clients, dim)`` and
      ``(num_clients,)``.
    """
    precision, mean = jnp.asarray(surrogates.precision), jnp.asarray(surrogates.mean)
    f = jnp.asarray(client_probs, dtype=precision.dtype)
    eta = jnp.einsum("sij,sj->si", precision, mean)
    kappa = -0.5 * jnp.einsum("si,si->s", mean, eta)
    matrix = precision.sum(0)[None] - precision / f[:, None, None]
    offset = eta.sum(0)[None] - eta / f[:, None]
    constant = kappa.sum() - kappa / f
    return matrix, offset, constant


# --------------------------------------------------------------------------------------
# Each client's likelihood, on flattened positions, evaluated on its own device.
# --------------------------------------------------------------------------------------


class ClientModel(NamedTuple):
    """A federated target's pieces on flattened positions, for the surrogate fits."""

    data: FederatedData
    base: Callable[[ArrayTree, ArrayTree], jax.Array]
    log_prior: Callable[[ArrayTree], jax.Array]
    flat_init: jax.Array
    unravel: Callable[[jax.Array], ArrayTree]

    @classmethod
    def of(cls, target: Target) -> ClientModel:
        data = require_federated(target, "fit_surrogates")
        flat_init, unravel = jax.flatten_util.ravel_pytree(target.init)
        return cls(data, target.log_likelihood.base, target.log_prior, flat_init, unravel)

    def flat_prior(self, flat: jax.Array) -> jax.Array:
        return self.log_prior(self.unravel(flat))

    def tempered_prior(self, flat: jax.Array) -> jax.Array:
        """The prior's share of one client, ``log p(x) / S``."""
        return self.flat_prior(flat) / self.data.num_clients

    def shard_loglik(self, flat: jax.Array, shard: ArrayTree, size: jax.Array) -> jax.Array:
        """The log likelihood of one client's real points (its padding masked out)."""
        params = self.unravel(flat)

        def one(point):
            return self.base(params, jax.tree.map(lambda leaf: leaf[None], point))

        values = jax.vmap(one)(shard)
        return jnp.sum(jnp.where(jnp.arange(self.data.max_size) < size, values, 0.0))

    def client_mapper(self, fn, num_args: int):
        """``fn(shard, size, client, rng_key, *args)`` for every client, each on the device
        that holds it, as one compiled function of ``(rng_key, *args)``; the results are
        stacked along a leading client axis and replicated on every device."""
        data = self.data

        def body(shards, sizes, clients, keys, *args):
            def one(shard, size, client, key):
                return fn(shard, size, client, jax.random.wrap_key_data(key), *args)

            return jax.vmap(one)(shards, sizes, clients, keys)

        client_spec = P(CLIENT_AXIS)
        mapped = jax.shard_map(
            body,
            mesh=data.mesh,
            in_specs=(
                jax.tree.map(lambda _: client_spec, data.shards),
                client_spec,
                client_spec,
                client_spec,
                *(P() for _ in range(num_args)),
            ),
            out_specs=client_spec,
            check_vma=False,  # the fits start from replicated values and vary per client
        )
        compiled = jax.jit(mapped, out_shardings=NamedSharding(data.mesh, P()))
        sizes = place_on_clients(data.mesh, np.asarray(data.sizes, np.int32))
        clients = place_on_clients(data.mesh, np.arange(data.num_clients, dtype=np.int32))

        def call(rng_key, *args):
            keys = jax.random.key_data(jax.random.split(rng_key, data.num_clients))
            return tuple(map(to_host, compiled(data.shards, sizes, clients, keys, *args)))

        return call


# --------------------------------------------------------------------------------------
# One fit per kind: each returns the natural parameters (P_s, P_s mu_s) on the host.
# --------------------------------------------------------------------------------------


def fit_analytic(model: ClientModel, rng_key: PRNGKey) -> tuple[np.ndarray, np.ndarray]:
    """Exact for a log likelihood quadratic in the position: one Newton step from
    ``init``. Refused when the Hessian differs at a second point."""
    flat_init = model.flat_init

    def fit(shard, size, client, key, shift):
        del client, key
        grad = jax.grad(model.shard_loglik)(flat_init, shard, size)
        hess = jax.hessian(model.shard_loglik)(flat_init, shard, size)
        hess_shifted = jax.hessian(model.shard_loglik)(flat_init + shift, shard, size)
        return -hess, -hess @ flat_init + grad, hess_shifted - hess

    shift = jnp.asarray(0.5, flat_init.dtype)
    precision, eta, change = model.client_mapper(fit, 1)(rng_key, shift)
    scale = np.maximum(np.abs(precision).max(axis=(1, 2)), 1e-12)
    bad = np.flatnonzero(np.abs(change).max(axis=(1, 2)) > 1e-4 * scale)
    if bad.size:
        raise ValueError(
            f"fit_surrogates: 'analytic' needs a log likelihood quadratic in the position "
            f"(a conjugate Gaussian model), but the Hessian of client(s) {bad.tolist()} "
            "changes with the position; use 'laplace' or 'gaussian'"
        )
    return precision, eta


def fit_laplace(
    model: ClientModel, rng_key: PRNGKey, num_steps: int, learning_rate: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each client's mode of ``p(x)^(1/S) p(data_s | x)`` by optax's Adam, then minus the
    Hessian of its log likelihood there. Each client optimises on its own device in one
    compiled scan, so the fit needs no communication."""
    optimizer = optax.adam(learning_rate)

    def fit(shard, size, client, key):
        del client, key

        def loss(flat):
            return -(model.tempered_prior(flat) + model.shard_loglik(flat, shard, size))

        def update(carry, _):
            flat, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss)(flat), opt_state, flat)
            return (optax.apply_updates(flat, updates), opt_state), None

        start = (model.flat_init, optimizer.init(model.flat_init))
        (mode, _), _ = jax.lax.scan(update, start, None, num_steps)
        grad = jax.grad(model.shard_loglik)(mode, shard, size)
        precision = -jax.hessian(model.shard_loglik)(mode, shard, size)
        return precision, precision @ mode + grad

    return model.client_mapper(fit, 0)(rng_key)


def fit_global_laplace(
    model: ClientModel, rng_key: PRNGKey, max_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each client's log likelihood to second order at the mode of the whole posterior."""

    def expand(shard, size, client, key, flat):
        del client, key
        value, grad = jax.value_and_grad(model.shard_loglik)(flat, shard, size)
        return value, grad, jax.hessian(model.shard_loglik)(flat, shard, size)

    # One compiled mapping serves the search and the expansion at its end.
    expand_all = model.client_mapper(expand, 1)
    mode = _global_mode(model, lambda flat: expand_all(rng_key, flat), max_steps)
    _, grad, hess = expand_all(rng_key, mode)
    precision = -hess.astype(np.float64)
    return precision, np.einsum("sij,j->si", precision, np.asarray(mode, np.float64)) + grad


def _global_mode(model: ClientModel, expand, max_steps: int) -> jax.Array:
    """The mode of the whole posterior by Newton steps, each regularised until positive
    definite and halved until the log posterior rises; only positions go out to the
    clients, and values, gradients and Hessians of their log likelihoods come back. Stops
    when a step moves less than ``1e-8 (1 + |x|)`` or none rises."""
    flat_prior = model.flat_prior
    prior_terms = jax.jit(
        lambda x: (flat_prior(x), jax.grad(flat_prior)(x), jax.hessian(flat_prior)(x))
    )
    dtype = model.flat_init.dtype

    def terms(x):
        values, grads, hessians = expand(jnp.asarray(x, dtype))
        prior_value, prior_grad, prior_hess = map(to_host, prior_terms(jnp.asarray(x, dtype)))
        value = float(values.sum() + prior_value)
        grad, hess = grads.sum(0) + prior_grad, hessians.sum(0) + prior_hess
        finite = np.isfinite(value) and np.all(np.isfinite(grad)) and np.all(np.isfinite(hess))
        return value, grad.astype(np.float64), hess.astype(np.float64), finite

    x = np.asarray(model.flat_init, np.float64)
    value, grad, hess, finite = terms(x)
    if not finite:
        raise ValueError(
            "fit_surrogates: the log posterior or its derivatives are not finite at the "
            "target's init, where 'global_laplace' starts its search for the mode"
        )
    for _ in range(max_steps):
        step = _regularised_newton_step(grad, hess)
        for _ in range(30):
            candidate = x + step
            new_value, new_grad, new_hess, finite = terms(candidate)
            if finite and new_value >= value - 1e-9 * abs(value):
                break
            step = step / 2.0
        else:
            break
        x, value, grad, hess = candidate, new_value, new_grad, new_hess
        if np.linalg.norm(step) < 1e-8 * (1.0 + np.linalg.norm(x)):
            break
    return jnp.asarray(x, dtype)


def _regularised_newton_step(grad: np.ndarray, hess: np.ndarray) -> np.ndarray:
    """``(-H + lam I)^-1 grad`` with the smallest ``lam`` (0, or doubling from ``1e-6 |H|``)
    that makes ``-H + lam I`` positive definite."""
    eye = np.eye(grad.size)
    shift = 0.0
    for _ in range(200):  # doubling from 1e-6 of |H|: far past any finite Hessian
        try:
            np.linalg.cholesky(-hess + shift * eye)
            break
        except np.linalg.LinAlgError:
            shift = max(2.0 * shift, 1e-6 * max(1.0, float(np.abs(hess).max())))
    return np.linalg.solve(-hess + shift * eye, grad)


def fit_gaussian(
    model: ClientModel,
    rng_key: PRNGKey,
    step_size: float,
    batch_size: int | None,
    num_steps: int,
    num_chains: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Moment-matched local SGLD draws from ``p(x)^(1/S) p(data_s | x)``, the prior's share
    divided out with its Hessian and gradient at their mean."""
    data = model.data
    num_clients = data.num_clients
    keep = num_steps - num_steps // 2

    def fit(shard, size, client, key):
        def logdensity_and_grad(flat, *batch):
            def local(x):
                if batch_size is None:
                    return model.tempered_prior(x) + model.shard_loglik(x, shard, size)
                points = jax.tree.map(lambda leaf: leaf[batch[0]], shard)
                scale = size.astype(x.dtype) / batch_size
                return model.tempered_prior(x) + scale * model.base(model.unravel(x), points)

            return jax.value_and_grad(local)(flat)

        if batch_size is None:
            draw, init_batch = (lambda _: ()), ()
        else:
            draw = lambda batch_key: (  # noqa: E731
                client_minibatch_indices(batch_key, client, data.sizes, batch_size),
            )
            init_batch = (jnp.arange(batch_size),)
        algorithm = langevin_algorithm(
            logdensity_and_grad, step_size_fn(step_size), draw, init_batch
        )

        def one_chain(chain_key):
            def one(state, step_key):
                state, _ = algorithm.step(step_key, state)
                return state, state.position

            keys = jax.random.split(chain_key, num_steps)
            _, path = jax.lax.scan(one, algorithm.init(model.flat_init), keys)
            return path[num_steps - keep :]

        draws = jax.vmap(one_chain)(jax.random.split(key, num_chains))
        draws = draws.reshape(-1, model.flat_init.shape[0])
        mean = draws.mean(0)
        centred = draws - mean[None, :]
        covariance = centred.T @ centred / (draws.shape[0] - 1)
        prior_grad = jax.grad(model.flat_prior)(mean)
        prior_hess = jax.hessian(model.flat_prior)(mean)
        return mean, covariance, prior_grad, prior_hess

    mean, covariance, prior_grad, prior_hess = model.client_mapper(fit, 0)(rng_key)
    mean, covariance = mean.astype(np.float64), covariance.astype(np.float64)
    precision = np.linalg.inv(covariance) + prior_hess / num_clients
    eta = np.einsum("sij,sj->si", precision, mean) - prior_grad / num_clients
    return precision, eta


def fit_surrogates(
    target: Target,
    rng_key: PRNGKey,
    kind: str,
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
      no mode (a client holding a single class).
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
      rng_key: the key (the ``"gaussian"`` fit's SGLD draws; the other fits are
        deterministic).
      kind: ``"analytic"``, ``"laplace"``, ``"global_laplace"`` or ``"gaussian"``.
      step_size: the local SGLD step (``"gaussian"``); required for it.
      batch_size: the local SGLD minibatch, drawn without replacement from the client;
        ``None``, the whole shard.
      num_steps: optimiser, Newton or SGLD steps.
      num_chains: local SGLD chains per client.
      learning_rate: Adam's learning rate (``"laplace"``).

    Returns:
      ``GaussianSurrogates``, to attach with ``with_surrogates``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, inferax
      >>> from inferax.samplers import federated
      >>> y = np.arange(8.0)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = federated.split(target, 2)
      >>> surrogates = federated.fit_surrogates(fed, jax.random.key(0), "analytic")
      >>> surrogates.mean.round(3).tolist(), surrogates.precision.round(3).tolist()
      ([[1.5], [5.5]], [[[4.0]], [[4.0]]])
      >>> fed = federated.with_surrogates(fed, surrogates)

    References:
      El Mekkaoui, Mesquita, Blomstedt, Kaski, "Federated Stochastic Gradient Langevin
      Dynamics", UAI 2021.
    """
    model = ClientModel.of(target)
    if kind == "analytic":
        precision, eta = fit_analytic(model, rng_key)
    elif kind == "laplace":
        steps = 1000 if num_steps is None else int(num_steps)
        precision, eta = fit_laplace(model, rng_key, steps, learning_rate)
    elif kind == "global_laplace":
        steps = 50 if num_steps is None else int(num_steps)
        precision, eta = fit_global_laplace(model, rng_key, steps)
    elif kind == "gaussian":
        if step_size is None:
            raise ValueError("fit_surrogates: 'gaussian' needs the local SGLD step_size")
        if batch_size is not None and batch_size > min(model.data.sizes):
            raise ValueError(
                f"fit_surrogates: batch_size {batch_size} is larger than the smallest "
                f"client ({min(model.data.sizes)} points)"
            )
        steps = 2000 if num_steps is None else int(num_steps)
        precision, eta = fit_gaussian(model, rng_key, step_size, batch_size, steps, num_chains)
    else:
        raise ValueError(f"fit_surrogates: kind must be one of {SURROGATE_KINDS}, got {kind!r}")
    return _surrogates_from_natural(np.asarray(precision, np.float64), np.asarray(eta, np.float64))


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
    return GaussianSurrogates.from_precision(mean, precision)


__all__ = [
    "SURROGATE_KINDS",
    "ClientModel",
    "GaussianSurrogates",
    "conducive_arrays",
    "fit_analytic",
    "fit_gaussian",
    "fit_global_laplace",
    "fit_laplace",
    "fit_surrogates",
    "with_surrogates",
]
