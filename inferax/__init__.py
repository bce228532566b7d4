"""inferax: Bayesian inference in JAX on one log-density interface."""

import importlib

from inferax.numpyro_bridge import from_numpyro as from_numpyro
from inferax.posterior import Posterior as Posterior
from inferax.posterior import load as load
from inferax.predictive import infer_discrete as infer_discrete
from inferax.predictive import pointwise_log_likelihood as pointwise_log_likelihood
from inferax.predictive import predictive as predictive
from inferax.predictive import prior_predictive as prior_predictive
from inferax.sampling import resume as resume
from inferax.sampling import sample as sample
from inferax.target import Target as Target

_SUBPACKAGES = ("diagnostics", "flows", "samplers", "variational")


def __getattr__(name: str):
    # The core imports no subpackage (they import the core); `inferax.samplers` and the
    # others load on first use.
    if name in _SUBPACKAGES:
        return importlib.import_module(f"inferax.{name}")
    raise AttributeError(f"module 'inferax' has no attribute '{name}'")


__all__ = [
    "Posterior",
    "Target",
    "diagnostics",
    "flows",
    "from_numpyro",
    "infer_discrete",
    "load",
    "pointwise_log_likelihood",
    "predictive",
    "prior_predictive",
    "resume",
    "sample",
    "samplers",
    "variational",
]
