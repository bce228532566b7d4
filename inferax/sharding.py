"""Device meshes: chains and data laid out over devices, and over processes.

One mesh code for the whole library. ``inferax.sample(..., devices=)`` or ``mesh=`` puts the
chain axis on a mesh axis named ``"chains"``; ``Target.shard_data(mesh)`` puts the data
points on an axis named ``"data"``; federated targets put their clients on ``"clients"``.
``initialize`` joins several processes into one JAX run, after which ``jax.devices()`` lists
every process's devices and a mesh may span them all.
"""

from __future__ import annotations

import contextvars
import pathlib
import socket
import time
from collections.abc import Sequence

import jax
import jax.extend
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from inferax import compile_cache

CHAIN_AXIS = "chains"
"""The name of the mesh axis that ``inferax.sample`` lays the chains out along."""

DATA_AXIS = "data"
"""The name of the mesh axis that ``Target.shard_data`` lays the data points out along."""


def default_mesh(axis_name: str, devices: Sequence | None = None) -> Mesh:
    """A one-axis mesh named ``axis_name`` over ``devices`` (every device of every process
    by default).

    Examples:
      >>> import inferax.sharding
      >>> inferax.sharding.default_mesh("chains").axis_names
      ('chains',)
    """
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (axis_name,))


def check_mesh(mesh, axis_name: str, count: int, what: str, argument: str = "mesh") -> Mesh:
    """Checks that ``mesh`` is a ``Mesh`` with an axis ``axis_name`` whose size divides
    ``count`` (the number of ``what`` laid out along it).

    Raises:
      TypeError: not a ``jax.sharding.Mesh``.
      ValueError: no such axis, or ``count`` does not divide evenly over it.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{argument} must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"{argument}: needs an axis named '{axis_name}' to lay the {what} out along, got "
            f"axes {mesh.axis_names}"
        )
    size = mesh.shape[axis_name]
    if count % size:
        raise ValueError(
            f"{count} {what} do not divide evenly over the {size} devices of the mesh's "
            f"'{axis_name}' axis; use a number of {what} that is a multiple of {size}, or "
            f"pass {argument} with a '{axis_name}' axis whose size divides {count}"
        )
    return mesh


def chain_mesh(devices, mesh, num_chains: int) -> Mesh | None:
    """The mesh that ``inferax.sample`` lays its chains out on, from its ``devices=`` or
    ``mesh=`` argument; ``None`` when neither is given (every chain on the default device).

    Raises:
      TypeError: ``devices`` is not a sequence of ``jax.Device``, or ``mesh`` not a Mesh.
      ValueError: both are given, or ``num_chains`` does not divide evenly over the devices.
    """
    if devices is not None and mesh is not None:
        raise ValueError("devices and mesh: pass one or the other (a mesh names its devices)")
    if devices is not None:
        if isinstance(devices, jax.Device) or not isinstance(devices, Sequence | np.ndarray):
            raise TypeError(
                f"devices must be a sequence of jax.Device, such as jax.devices(), got "
                f"{type(devices).__name__}"
            )
        devices = list(devices)
        if not devices or not all(isinstance(device, jax.Device) for device in devices):
            raise TypeError("devices must be a non-empty sequence of jax.Device (jax.devices())")
        if len(set(devices)) != len(devices):
            raise ValueError("devices: a device is listed more than once")
        mesh = default_mesh(CHAIN_AXIS, devices)
        argument = "devices"
    elif mesh is not None:
        argument = "mesh"
    else:
        return None
    if argument == "devices" and num_chains % mesh.shape[CHAIN_AXIS]:
        raise ValueError(
            f"num_chains: {num_chains} chains do not divide evenly over {len(devices)} "
            f"devices; use a multiple of {len(devices)} chains or fewer devices"
        )
    return check_mesh(mesh, CHAIN_AXIS, num_chains, "chains", argument)


CHAIN_BATCH_AXIS = "chain"
"""The name of the ``vmap`` axis over the chains that one device steps."""

_ON_MESH: contextvars.ContextVar[bool] = contextvars.ContextVar("chains_on_mesh", default=False)


def map_chains(fn, mesh: Mesh | None, in_axes=0):
    """``fn`` over every chain: a ``vmap`` over the chains of one device (named
    ``"chain"``), and, with a ``mesh``, a ``shard_map`` that gives each device of its
    ``"chains"`` axis its own block of chains. Each device then steps its chains on its own,
    with no communication (a NUTS tree grows per device, not in lockstep over all of them);
    ``gather_chains`` and ``chain_index`` reach across both axes.

    Args:
      fn: a function of one chain's arguments.
      mesh: the chains' mesh, or ``None`` for a plain ``vmap``.
      in_axes: as in ``vmap``, 0 or ``None`` per argument; arguments with ``None`` are
        replicated on every device.
    """
    batched = jax.vmap(fn, in_axes=in_axes, axis_name=CHAIN_BATCH_AXIS)
    if mesh is None:
        return batched

    def local(*args):
        token = _ON_MESH.set(True)
        try:
            return batched(*args)
        finally:
            _ON_MESH.reset(token)

    def mapped(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        specs = tuple(P() if axis is None else P(CHAIN_AXIS) for axis in axes)
        return jax.shard_map(
            local, mesh=mesh, in_specs=specs, out_specs=P(CHAIN_AXIS), check_vma=False
        )(*args)

    return mapped


def gather_chains(tree):
    """Inside ``map_chains``: every chain's value of ``tree``, stacked in chain order."""

    def gather(leaf):
        leaf = jax.lax.all_gather(leaf, CHAIN_BATCH_AXIS)
        if _ON_MESH.get():
            leaf = jax.lax.all_gather(leaf, CHAIN_AXIS, tiled=True)
        return leaf

    return jax.tree.map(gather, tree)


def chain_index() -> tuple[jax.Array, int]:
    """Inside ``map_chains``: ``(this chain's index, the number of chains)``."""
    index = jax.lax.axis_index(CHAIN_BATCH_AXIS)
    local = jax.lax.axis_size(CHAIN_BATCH_AXIS)
    if not _ON_MESH.get():
        return index, local
    return jax.lax.axis_index(CHAIN_AXIS) * local + index, local * jax.lax.axis_size(CHAIN_AXIS)


def place_sharded(mesh: Mesh, host, axis_name: str) -> jax.Array:
    """A global array whose leading axis is sharded over ``mesh``'s ``axis_name`` axis and
    replicated over its other axes, built from a value that every process holds the same;
    each device receives only its own slice, so this works across processes."""
    return _place(host, NamedSharding(mesh, P(axis_name)))


def place_replicated(mesh: Mesh, host) -> jax.Array:
    """A global array replicated on every device of ``mesh``, from a value that every
    process holds the same."""
    return _place(host, NamedSharding(mesh, P()))


def _place(value, sharding: NamedSharding) -> jax.Array:
    if isinstance(value, jax.Array) and value.sharding == sharding:
        return value
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return jax.jit(lambda x: x, out_shardings=sharding)(value)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_chains(tree, mesh: Mesh | None):
    """``tree`` with the leading (chain) axis of every leaf on ``mesh``'s ``"chains"`` axis;
    ``tree`` itself when ``mesh`` is ``None``."""
    if mesh is None:
        return tree
    return jax.tree.map(lambda leaf: place_sharded(mesh, leaf, CHAIN_AXIS), tree)


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


def tree_to_host(tree):
    """``to_host`` on every leaf of ``tree``."""
    return jax.tree.map(to_host, tree)


def spans_processes(mesh: Mesh | None, tree=None) -> bool:
    """Whether a run over ``mesh`` (or none) with the arrays of ``tree`` (a target, say)
    involves the devices of other processes: then every process must make the same calls
    in the same order."""
    if jax.process_count() == 1:
        return False
    if mesh is not None and any(
        device.process_index != jax.process_index() for device in mesh.devices.flat
    ):
        return True
    return any(
        isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
        for leaf in jax.tree.leaves(tree)
    )


def same_on_every_process(value: int) -> int:
    """Process 0's ``value``, on every process (a collective: every process must call this
    in the same order). For choices made from measurements, such as a chunk's length from
    its step time, that each process would otherwise make for itself."""
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


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
    lists every process's devices, and ``inferax.sample(..., devices=jax.devices())`` lays
    the chains out over all of them. On a cluster whose launcher sets the coordinator
    (SLURM, Open MPI, Cloud TPU), ``jax.distributed.initialize()`` with no arguments does the
    same.

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
    _no_cache_across_processes()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # Importing inferax.samplers imports blackjax, which computes a few constants at import
    # time and so starts the local backend; nothing of ours holds arrays on it yet, so it is
    # dropped here and started again by the first computation, joined to the others.
    jax.extend.backend.clear_backends()
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(1, int(np.ceil(timeout))),
    )


def _no_cache_across_processes() -> None:
    """Turns inferax's default persistent compilation cache off in this process: a program
    of a run over several processes that is loaded from the cache instead of compiled
    waits forever in its first collective (``compile_cache.enable_compilation_cache``). A
    cache folder configured outside inferax (``jax_compilation_cache_dir``) is left as it
    is."""
    configured = jax.config.jax_compilation_cache_dir
    if not configured or pathlib.Path(configured) == compile_cache.default_cache_dir():
        compile_cache.disable_compilation_cache()


def _wait_for_coordinator(address: str, process_id: int, num_processes: int, timeout: float):
    """Polls the coordinator's port until it accepts a connection. JAX's runtime aborts the
    whole process (no Python exception) when it cannot connect, so the check comes first."""

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"initialize: coordinator_address must be 'host:port', got {address!r}")
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
                    f"initialize: process {process_id} of {num_processes} could not "
                    f"reach the coordinator at {address} within {timeout:g} s ({error}); is "
                    "process 0 running there, and can this host reach it?"
                ) from None
            time.sleep(0.2)


__all__ = [
    "CHAIN_AXIS",
    "CHAIN_BATCH_AXIS",
    "DATA_AXIS",
    "chain_index",
    "chain_mesh",
    "check_mesh",
    "default_mesh",
    "gather_chains",
    "initialize",
    "map_chains",
    "place_replicated",
    "place_sharded",
    "same_on_every_process",
    "shard_chains",
    "spans_processes",
    "to_host",
    "tree_to_host",
]
