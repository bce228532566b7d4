"""Federated targets: the data split into client shards that live on a device mesh.

``split(target, clients)`` regroups a target's data into per-client shards, pads them to a
common length, stacks them along a leading client axis and places that axis on a
``jax.sharding.Mesh`` axis named ``"clients"``: each device (each process, across hosts)
holds only its own clients' shards. The result is an ordinary ``Target`` whose ``data`` is
a ``FederatedData`` and whose ``log_likelihood`` sums over the clients, so every part of
``inferax.sample`` reads it unchanged; the federated kernels (``inferax.samplers.dsgld``,
``inferax.samplers.fsgld``) step it with ``shard_map`` over the client axis, so that chain
positions travel between devices and data never does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from inferax.target import Target
from inferax.typing import ArrayTree

CLIENT_AXIS = "clients"
"""The name of the mesh axis that the clients are laid out along."""


# --------------------------------------------------------------------------------------
# The federated data and likelihood.
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
    """Client shards on a mesh: a pytree whose leaves share a leading axis of clients.

    Attributes:
      shards: the data, every leaf of shape ``(num_clients, max_size, ...)``; client ``s``'s
        points are ``[s, :sizes[s]]``, the rest is padding (copies of its first point).
      sizes: int32 ``(num_clients,)``, the number of points each client holds; replicated on
        every device (it is metadata, not data).
      client_arrays: named per-client arrays of shape ``(num_clients, ...)`` placed with the
        shards, such as a kernel's surrogate of each client's likelihood.
      mesh: the mesh; its ``"clients"`` axis shards the leading axis of ``shards`` and of
        ``client_arrays``. Static: it is part of the pytree structure.
    """

    shards: ArrayTree
    sizes: jax.Array
    client_arrays: Mapping[str, jax.Array]
    mesh: Mesh

    @property
    def num_clients(self) -> int:
        return int(np.shape(self.sizes)[0])

    @property
    def max_size(self) -> int:
        return int(np.shape(jax.tree_util.tree_leaves(self.shards)[0])[1])

    def mask(self) -> jax.Array:
        """``(num_clients, max_size)``: True where a shard holds a real point."""
        return jnp.arange(self.max_size)[None, :] < jnp.asarray(self.sizes)[:, None]


def _flatten_data(data: FederatedData):
    names = tuple(sorted(data.client_arrays))
    children = (data.shards, data.sizes, tuple(data.client_arrays[n] for n in names))
    return children, (names, data.mesh)


def _unflatten_data(static, children) -> FederatedData:
    names, mesh = static
    shards, sizes, arrays = children
    out = object.__new__(FederatedData)
    for name, value in (
        ("shards", shards),
        ("sizes", sizes),
        ("client_arrays", dict(zip(names, arrays, strict=True))),
        ("mesh", mesh),
    ):
        object.__setattr__(out, name, value)
    return out


jax.tree_util.register_pytree_node(FederatedData, _flatten_data, _unflatten_data)


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


def _require_federated(target: Target, who: str) -> FederatedData:
    if not is_federated(target):
        raise TypeError(
            f"{who}: expected a federated target from inferax.federated.split(target, "
            f"clients), got {type(target).__name__}"
            + ("" if not isinstance(target, Target) else " with data not split into clients")
        )
    return target.data


def num_clients(target: Target) -> int:
    """The number of clients of a federated target."""
    return _require_federated(target, "num_clients").num_clients


def client_sizes(target: Target) -> np.ndarray:
    """How many data points each client of a federated target holds, ``(num_clients,)``."""
    return to_host(_require_federated(target, "client_sizes").sizes)


# --------------------------------------------------------------------------------------
# Placement on the mesh.
# --------------------------------------------------------------------------------------


def default_mesh() -> Mesh:
    """Every device (of every process) along one ``"clients"`` axis."""
    return Mesh(np.asarray(jax.devices()), (CLIENT_AXIS,))


def _check_mesh(mesh, clients: int) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if CLIENT_AXIS not in mesh.axis_names:
        raise ValueError(
            f"mesh: needs an axis named '{CLIENT_AXIS}' to lay the clients out along, got "
            f"axes {mesh.axis_names}"
        )
    size = mesh.shape[CLIENT_AXIS]
    if clients % size:
        raise ValueError(
            f"{clients} clients do not divide evenly over the {size} devices of the mesh's "
            f"'{CLIENT_AXIS}' axis; use a number of clients that is a multiple of {size}, or "
            f"pass mesh= with a '{CLIENT_AXIS}' axis whose size divides {clients}"
        )
    return mesh


def place_on_clients(mesh: Mesh, host: np.ndarray) -> jax.Array:
    """A global array whose leading (client) axis is sharded over the mesh's ``"clients"``
    axis, built from a host array that every process holds; each device receives only its
    own clients' slice, so this works across processes."""
    host = np.asarray(host)
    sharding = NamedSharding(mesh, P(CLIENT_AXIS))
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_replicated(mesh: Mesh, host: np.ndarray) -> jax.Array:
    """A global array replicated on every device of ``mesh``, from a host array that every
    process holds."""
    host = np.asarray(host)
    sharding = NamedSharding(mesh, P())
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(x) -> np.ndarray:
    """A NumPy copy of ``x``, also when ``x`` spans devices of other processes: a replicated
    array is read from a local copy; a sharded one is gathered from every process (a
    collective: every process must call this in the same order)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# --------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------


def _client_ids(clients, num_data: int, by) -> tuple[np.ndarray, int]:
    if isinstance(clients, int | np.integer) and not isinstance(clients, bool):
        count = int(clients)
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
                    f"split: by= needs one value per data point ({num_data}), got shape "
                    f"{labels.shape}"
                )
            order = np.argsort(labels.reshape(num_data, -1)[:, 0], kind="stable")
        ids = np.empty(num_data, dtype=np.int64)
        ids[order] = (np.arange(num_data) * count) // num_data
        return ids, count
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
    count = int(ids.max()) + 1
    return ids.astype(np.int64), count


def split(
    target: Target,
    clients,
    *,
    by=None,
    mesh: Mesh | None = None,
) -> Target:
    """Splits a target's data into client shards on a device mesh.

    The federated target has the same prior, likelihood and log density as ``target``;
    only the layout of its data changes. Client ``s`` holds the points assigned to it, in
    their original order, padded to the size of the largest client. The client axis is
    sharded over the mesh's ``"clients"`` axis: with ``D`` devices on that axis each
    holds ``num_clients / D`` clients, and only those clients' data. In several processes
    (after ``jax.distributed.initialize``) every process calls ``split`` with the same
    arguments, and each keeps only its own devices' shards.

    ``target.num_data`` of the result is the number of clients (the leading axis of its
    data); ``client_sizes(fed)`` gives the points per client.

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
      >>> y = np.arange(10.0)
      >>> target = inferax.Target(
      ...     log_prior=lambda mu: -0.5 * mu**2, init=jnp.zeros(()),
      ...     log_likelihood=lambda mu, batch: -0.5 * jnp.sum((batch - mu) ** 2), data=y)
      >>> fed = inferax.federated.split(target, np.array([0, 0, 0, 1, 1, 1, 1, 0, 0, 1]))
      >>> inferax.federated.client_sizes(fed).tolist()
      [5, 5]
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
    num_data = target.num_data
    ids, count = _client_ids(clients, num_data, by)
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

    def shard_leaf(leaf):
        host = np.asarray(leaf)
        return place_on_clients(mesh, host[index])

    data = FederatedData(
        shards=jax.tree.map(shard_leaf, target.data),
        sizes=place_replicated(mesh, sizes.astype(np.int32)),
        client_arrays={},
        mesh=mesh,
    )
    return _rebuild(target, data)


def _rebuild(target: Target, data: FederatedData) -> Target:
    base = target.log_likelihood
    likelihood = base if isinstance(base, FederatedLikelihood) else FederatedLikelihood(base)
    return Target(
        log_prior=target.log_prior,
        init=target.init,
        log_likelihood=likelihood,
        data=data,
        constrain=target.constrain,
        nonsmooth=target.nonsmooth,
        observed_data=target.observed_data,
        model=target.model,
    )


def with_client_arrays(target: Target, **arrays: Any) -> Target:
    """A copy of a federated target with named per-client arrays placed with the clients'
    shards (each a host array of shape ``(num_clients, ...)`` that every process holds).
    Kernels keep per-client state here, such as a surrogate of each client's likelihood.

    Args:
      target: a federated target.
      **arrays: host arrays with a leading axis of clients; they replace arrays of the
        same name.

    Returns:
      The federated target with the arrays added.
    """
    data = _require_federated(target, "with_client_arrays")
    placed = dict(data.client_arrays)
    for name, host in arrays.items():
        host = np.asarray(host)
        if host.shape[:1] != (data.num_clients,):
            raise ValueError(
                f"with_client_arrays: '{name}' needs a leading axis of {data.num_clients} "
                f"clients, got shape {host.shape}"
            )
        placed[name] = place_on_clients(data.mesh, host)
    new = FederatedData(data.shards, data.sizes, placed, data.mesh)
    return _rebuild(target, new)


def initialize(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    timeout: float = 60.0,
) -> None:
    """Joins this process to a multi-process JAX run (``jax.distributed.initialize``), with
    the gloo collectives on CPU, and fails with a message naming the coordinator instead of
    hanging when it cannot be reached within ``timeout`` seconds.

    Call it first, before any JAX computation, in every process, with the same
    ``coordinator_address`` and ``num_processes`` and ``process_id`` from 0 to
    ``num_processes - 1`` (process 0 hosts the coordinator). Afterwards ``jax.devices()``
    lists every process's devices and ``split`` lays the clients out over all of them.

    Args:
      coordinator_address: ``"host:port"`` of process 0.
      num_processes: how many processes take part.
      process_id: this process's index.
      timeout: seconds to wait for every process to join.

    Raises:
      RuntimeError: a process other than 0 could not reach the coordinator within
        ``timeout``. (Should a process fail to join later, JAX's runtime ends the others
        after ``timeout`` with ``DEADLINE_EXCEEDED``: none hangs.)
    """
    if process_id != 0:
        _wait_for_coordinator(coordinator_address, process_id, num_processes, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(1, int(np.ceil(timeout))),
    )


def _wait_for_coordinator(address: str, process_id: int, num_processes: int, timeout: float):
    """Polls the coordinator's port until it accepts a connection. JAX's runtime aborts the
    whole process (no Python exception) when it cannot connect, so the check comes first."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"federated.initialize: coordinator_address must be 'host:port', got {address!r}"
        )
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection(
                (host.strip("[]"), int(port)), timeout=max(0.1, min(1.0, remaining))
            ):
                return
        except OSError as error:
            if time.monotonic() + 0.2 >= deadline:
                raise RuntimeError(
                    f"federated.initialize: process {process_id} of {num_processes} could not "
                    f"reach the coordinator at {address} within {timeout:g} s ({error}); is "
                    "process 0 running there, and can this host reach it?"
                ) from None
            time.sleep(0.2)


__all__ = [
    "CLIENT_AXIS",
    "FederatedData",
    "FederatedLikelihood",
    "client_sizes",
    "default_mesh",
    "initialize",
    "is_federated",
    "num_clients",
    "place_on_clients",
    "place_replicated",
    "split",
    "to_host",
    "with_client_arrays",
]
