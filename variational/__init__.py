"""Variational inference: the engine (``fit``), its objectives, and the families: Gaussian,
normalizing and stochastic flows (whose bijections and blocks are in ``inferax.flows``),
and MixFlows. Sparse Gaussian processes are in ``variational.gp`` and SDEs driven by
fractional noise in ``variational.sde``, each with its own ``fit``."""

import importlib

from inferax.variational.engine import Approximation as Approximation
from inferax.variational.engine import fit as fit
from inferax.variational.engine import initial_location as initial_location
from inferax.variational.engine import psis_khat as psis_khat
from inferax.variational.family import AbstractFamily as AbstractFamily
from inferax.variational.flow import NormalizingFlow as NormalizingFlow
from inferax.variational.flow import StochasticNormalizingFlow as StochasticNormalizingFlow
from inferax.variational.flow import normalizing_flow as normalizing_flow
from inferax.variational.flow import stochastic_flow as stochastic_flow
from inferax.variational.gaussian import FullrankGaussian as FullrankGaussian
from inferax.variational.gaussian import MeanfieldGaussian as MeanfieldGaussian
from inferax.variational.gaussian import fullrank_gaussian as fullrank_gaussian
from inferax.variational.gaussian import meanfield_gaussian as meanfield_gaussian
from inferax.variational.mixflow import MixFlow as MixFlow
from inferax.variational.mixflow import MixFlowState as MixFlowState
from inferax.variational.mixflow import mixflow as mixflow
from inferax.variational.objectives import AbstractObjective as AbstractObjective
from inferax.variational.objectives import ciwae as ciwae
from inferax.variational.objectives import elbo as elbo
from inferax.variational.objectives import iwae as iwae
from inferax.variational.objectives import log_weights as log_weights
from inferax.variational.objectives import miwae as miwae
from inferax.variational.objectives import piwae as piwae

_SUBPACKAGES = ("gp", "sde")


def __getattr__(name: str):
    # Loaded on first use: importing the engine should not import every family.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"inferax.variational.{name}")
    raise AttributeError(f"module 'inferax.variational' has no attribute '{name}'")


__all__ = [
    "AbstractFamily",
    "AbstractObjective",
    "Approximation",
    "FullrankGaussian",
    "MeanfieldGaussian",
    "MixFlow",
    "MixFlowState",
    "NormalizingFlow",
    "StochasticNormalizingFlow",
    "ciwae",
    "elbo",
    "fit",
    "fullrank_gaussian",
    "initial_location",
    "gp",
    "iwae",
    "log_weights",
    "meanfield_gaussian",
    "miwae",
    "mixflow",
    "normalizing_flow",
    "piwae",
    "psis_khat",
    "sde",
    "stochastic_flow",
]
