"""Variational inference for SDEs driven by fractional noise (Markov-approximate fBM),
fitted to observations by ``fit(sde, rng_key, times, observed_index, observed_values,
noise_sd, ...)``."""

from inferax.variational.sde import fbm as fbm
from inferax.variational.sde.exact_fbm import fbm_covariance as fbm_covariance
from inferax.variational.sde.exact_fbm import sample_fbm as sample_fbm
from inferax.variational.sde.fractional_sde import FractionalSDE as FractionalSDE
from inferax.variational.sde.fractional_sde import SDEFit as SDEFit
from inferax.variational.sde.fractional_sde import fit as fit
from inferax.variational.sde.fractional_sde import fractional_sde as fractional_sde

__all__ = [
    "FractionalSDE",
    "SDEFit",
    "fbm",
    "fbm_covariance",
    "fit",
    "fractional_sde",
    "sample_fbm",
]
