"""Variational inference for SDEs driven by fractional noise (Markov-approximate fBM)."""

from inferax.variational.sde import fbm as fbm

__all__ = ["fbm"]
