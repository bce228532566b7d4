"""The data of a federated target: client shards on a device mesh.

``split(target, clients)`` regroups a target's data into per-client shards, pads them to a
common length, stacks them along a leading client axis and places that axis on a
``jax.sharding.Mesh`` axis named ``"clients"``: each device (each process, across hosts)
holds only its own clients' shards. The result is an ordinary ``Target`` whose ``data`` is
a ``FederatedData`` and whose ``log_likelihood`` sums over the clients, so every part of
``inferax.sample`` reads it unchanged; the federated kernels (``dsgld``, ``fsgld``) step it
with ``shard_map`` over the client axis, so that chain positions travel between devices and
data never does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from inferax import sharding
from inferax.minibatch import minibatch_indices
from inferax.pytree import pytree_dataclass, static_field
from inferax.target import AbstractData, Target
from inferax.typing import ArrayTree, PRNGKey

CLIENT_AXIS = "clients"
"""The name of the mesh axis that the clients are laid out along."""


@pytree_dataclass
class FederatedData(AbstractData):
    """Client shards on a mesh, with the clients' sizes and, once fitted, their surrogates.

    Attributes:
      shards: the data, every leaf of shape ``(num_clients, max_size, ...)``; client ``s``'s
        points are ``[s, :sizes[s]]``, the rest is padding (copies of its first point).
        The leading axis is sharded over the mesh's ``"clients"`` axis.
      sizes: how many data points each client holds (static: part of the structure).
      mesh: the mesh (static).
      surrogates: ``None``, or a ``GaussianSurrogates`` of each client's likelihood,
        replicated on every device (``with_surrogates``).
    """

    shards: ArrayTree
    sizes: tuple[int, ...] = static_field()
    mesh: Mesh = static_field()
    surrogates: Any = None

    @property
    def num_clients(self) -> int:
        """How many clients hold the data."""
        return len(self.sizes)

    @property
    def num_data(self) -> int:
        """How many data points the clients hold together (padding not counted)."""
        return int(sum(self.sizes))

    @property
    def max_size(self) -> int:
        """The padded length of every shard: the size of the largest client."""
        return int(np.shape(jax.tree_util.tree_leaves(self.shards)[0])[1])

    def mask(self) -> np.ndarray:
        """``(num_clients, max_size)``: True where a shard holds a real point."""
        return np.arange(self.max_size)[None, :] < np.asarray(self.sizes)[:, None]


@dataclasses.dataclass(frozen=True)
class FederatedLikelihood:
    """The log likelihood of a federated target: the base likelihood summed over every
    client's real points (padding masked out). Hashable through ``base``, so two
    federated targets of one model share compiled programs.

    ``base(params, batch)`` is the model's likelihood, summed over the leading axis of
    ``batch``; the federated kernels call it on minibatches drawn from one client.
    """

    base: Callable[[ArrayTree, ArrayTree], jax.Array]

    def __call__(self, params: ArrayTree, data: FederatedData) -> jax.Array:
        def one_point(point):
            return self.base(params, jax.tree.map(lambda leaf: leaf[None], point))

        per_point = jax.vmap(jax.vmap(one_point))(data.shards)
        return jnp.sum(jnp.where(data.mask(), per_point, 0.0))


def is_federated(target: Target) -> bool:
    """Whether ``target`` came from ``split`` (its data lives in client shards)."""
    return isinstance(target, Target) and isinstance(target.data, FederatedData)


def require_federated(target: Target, who: str) -> FederatedData:
    """``target.data``; raises TypeError, with a message starting with ``who``, unless
    ``target`` is federated."""
    if not is_federated(target):
        raise TypeError(
            f"{who}: expected a federated target from "
            f"inferax.samplers.federated.split(target, clients), got {type(target).__name__}"
            + ("" if not isinstance(target, Target) else " with data not split into clients")
        )
    return target.data


def num_clients(target: Target) -> int:
    """The number of clients of a federated target."""
    return require_federated(target, "num_clients").num_clients


def client_sizes(target: Target) -> np.ndarray:
    """How many data points each client of a federated target holds, ``(num_clients,)``."""
    return np.asarray(require_federated(target, "client_sizes").sizes)


def client_minibatch_indices(
    rng_key: PRNGKey, client: jax.Array, sizes: tuple[int, ...], batch_size: int
) -> jax.Array:
    """``batch_size`` distinct indices into client ``client``'s shard, drawn without
    replacement with ``inferax.minibatch.minibatch_indices``.

    ``client`` may be traced; the sizes are static, so each client's draw is one branch of
    a ``lax.switch``. Every client must hold at least ``batch_size`` points.
    """
    branches = [lambda key, size=size: minibatch_indices(key, size, batch_size) for size in sizes]
    return jax.lax.switch(client, branches, rng_key)


# --------------------------------------------------------------------------------------
# Placement on the mesh.
# --------------------------------------------------------------------------------------


def default_mesh() -> Mesh:
    """Every device (of every process) along one ``"clients"`` axis."""
    return sharding.default_mesh(CLIENT_AXIS)


def _check_mesh(mesh, clients: int) -> Mesh:
    return sharding.check_mesh(mesh, CLIENT_AXIS, clients, "clients")


def place_on_clients(mesh: Mesh, host: np.ndarray) -> jax.Array:
    """A global array whose leading (client) axis is sharded over the mesh's ``"clients"``
    axis, built from a host array that every process holds; each device receives only its
    own clients' slice, so this works across processes."""
    return sharding.place_sharded(mesh, np.asarray(host), CLIENT_AXIS)


place_replicated = sharding.place_replicated
to_host = sharding.to_host


# --------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------


def _client_ids(clients, num_data: int, by) -> tuple[np.ndarray, int]:
    if isinstance(clients, int | np.integer) and not isinstance(clients, bool):
        return _blocks(int(clients), num_data, by), int(clients)
    if by is not None:
        raise TypeError(
            "split: by= goes with a number of clients, split(target, num_clients, by=...)"
        )
    ids = np.asarray(clients)
    if ids.shape != (num_data,):
        raise ValueError(
            f"split: client_of_datum needs one client index per data point, shape "
            f"({num_data},), got {ids.shape}"
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"split: client indices must be integers, got dtype {ids.dtype}")
    if ids.min() < 0:
        raise ValueError(f"split: client indices must be >= 0, got {int(ids.min())}")
    return ids.astype(np.int64), int(ids.max()) + 1


def _blocks(count: int, num_data: int, by) -> np.ndarray:
    """The client of each point when the data, sorted stably by ``by``, are cut into
    ``count`` contiguous blocks of nearly equal size."""
    if count < 1:
        raise ValueError(f"split: the number of clients must be >= 1, got {count}")
    if count > num_data:
        raise ValueError(
            f"split: {count} clients for {num_data} data points leaves a client with no data"
        )
    order = np.arange(num_data)
    if by is not None:
        labels = np.asarray(by)
        if labels.shape[:1] != (num_data,):
            raise ValueError(
                f"split: by= needs one value per data point ({num_data}), got shape {labels.shape}"
            )
        order = np.argsort(labels.reshape(num_data, -1)[:, 0], kind="stable")
    ids = np.empty(num_data, dtype=np.int64)
    ids[order] = (np.arange(num_data) * count) // num_data
    return ids


def split(target: Target, clients, *, by=None, mesh: Mesh | None = None) -> Target:
    """Splits a target's data into client shards on a device mesh.

    The federated target has the same prior, likelihood and log density as ``target``;
    only the layout of its data changes. Client ``s`` holds the points assigned to it, in
    their original order, padded to the size of the largest client. The client axis is
    sharded over the mesh's ``"clients"`` axis: with ``D`` devices on that axis each
    holds ``num_clients / D`` clients, and only those clients' data. In several processes
    (after ``initialize``) every process calls ``split`` with the same arguments, and each
    keeps only its own devices' shards.

    ``fed.num_data`` is the number of data points, as for any target;
    ``fed.data.num_clients`` is the number of clients and ``client_sizes(fed)`` the points
    per client.

    Args:
      target: a target with a data split (``log_likelihood`` and ``data``).
      clients: either ``client_of_datum``, one integer client index per data point (the
        clients are ``0, ..., max``; each must hold at least one point), or a number of
        clients: the data, in order, are cut into that many contiguous blocks of nearly
        equal size.
      by: with a number of clients, values to sort the data by before cutting (stably),
        such as class labels: each client then holds a narrow range of labels, a non-IID
        split.
      mesh: a ``jax.sharding.Mesh`` with a ``"clients"`` axis whose size divides the number
        of clients. Default: every device along one ``"clients"`` axis.

    Returns:
      A ``Target`` whose ``data`` is a ``FederatedData``.

    Raises:
      ValueError: a client with no data, client indices that are negative or of the
        wrong length, or a number of clients that does not divide over the mesh.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, inferax
      >>> from inferax.samplers import federated
      >>> y = np.arange(10.0)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = federated.split(target, np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1]))
      >>> federated.client_sizes(fed).tolist(), fed.data.num_data
      ([5, 5], 10)
      >>> bool(jnp.isclose(fed.logdensity(1.0), target.logdensity(1.0)))
      True
    """
    if not isinstance(target, Target):
        raise TypeError(f"split: target must be an inferax.Target, got {type(target).__name__}")
    if is_federated(target):
        raise ValueError("split: the target is already federated")
    if target.log_likelihood is None or target.data is None:
        raise ValueError(
            "split: the target has no data split (log_likelihood and data) to divide among "
            "clients; build it with Target(log_prior=..., log_likelihood=..., data=...)"
        )
    ids, count = _client_ids(clients, target.num_data, by)
    sizes = np.bincount(ids, minlength=count)
    empty = np.flatnonzero(sizes == 0)
    if empty.size:
        raise ValueError(
            f"split: client(s) {empty.tolist()} hold no data points; every client index from "
            f"0 to {count - 1} needs at least one (renumber the clients)"
        )
    mesh = _check_mesh(default_mesh() if mesh is None else mesh, count)
    max_size = int(sizes.max())
    # Row s lists client s's points in their original order, padded with its first point.
    order = np.argsort(ids, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    slot = np.minimum(np.arange(max_size)[None, :], sizes[:, None] - 1)
    index = order[starts[:, None] + slot]
    data = FederatedData(
        shards=jax.tree.map(
            lambda leaf: place_on_clients(mesh, np.asarray(leaf)[index]), target.data
        ),
        sizes=tuple(int(size) for size in sizes),
        mesh=mesh,
    )
    return dataclasses.replace(
        target, log_likelihood=FederatedLikelihood(target.log_likelihood), data=data
    )


__all__ = [
    "CLIENT_AXIS",
    "FederatedData",
    "FederatedLikelihood",
    "client_minibatch_indices",
    "client_sizes",
    "default_mesh",
    "is_federated",
    "num_clients",
    "place_on_clients",
    "place_replicated",
    "require_federated",
    "split",
    "to_host",
]
