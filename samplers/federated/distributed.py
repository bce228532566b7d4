"""Joining several processes into one JAX run, so that clients span every process's devices.

The code is the core's (``inferax.sharding.initialize``), one for chains, data and clients
alike; it is named here too so that a federated script reads ``federated.initialize``.
"""

from __future__ import annotations

from inferax.sharding import initialize

__all__ = ["initialize"]
