"""Variational inference for SDEs driven by fractional noise (Markov-approximate fBM)."""

from inferax.variational.sde import fbm as fbm
from inferax.variational.sde.exact_fbm import fbm_covariance as fbm_covariance
from inferax.variational.sde.exact_fbm import sample_fbm as sample_fbm
from inferax.variational.sde.fractional_sde import FractionalSDE as FractionalSDE
from inferax.variational.sde.fractional_sde import Observations as Observations
from inferax.variational.sde.fractional_sde import fractional_sde as fractional_sde

__all__ = [
    "FractionalSDE",
    "Observations",
    "fbm",
    "fbm_covariance",
    "fractional_sde",
    "sample_fbm",
]
