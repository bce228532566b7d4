"""Joining several processes into one JAX run, so that clients span every process's devices."""

from __future__ import annotations

import socket
import time

import jax
import jax.extend
import numpy as np


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
    # Importing inferax imports blackjax, which computes a few constants at import time and
    # so starts the local backend; nothing of ours holds arrays on it yet, so it is dropped
    # here and started again by the first computation, joined to the other processes.
    jax.extend.backend.clear_backends()
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(1, int(np.ceil(timeout))),
    )


def _wait_for_coordinator(address: str, process_id: int, num_processes: int, timeout: float):
    """Polls the coordinator's port until it accepts a connection. JAX's runtime aborts the
    whole process (no Python exception) when it cannot connect, so the check comes first."""

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


__all__ = ["initialize"]
