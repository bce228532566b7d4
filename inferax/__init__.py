"""inferax: Bayesian inference in JAX on one log-density interface.

The names below load on first use (module ``__getattr__``), so ``import inferax`` and the
command line's ``--help`` do not import JAX.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferax.compile_cache import disable_compilation_cache as disable_compilation_cache
    from inferax.compile_cache import enable_compilation_cache as enable_compilation_cache
    from inferax.numpyro_bridge import from_numpyro as from_numpyro
    from inferax.posterior import Posterior as Posterior
    from inferax.posterior import load as load
    from inferax.predictions import infer_discrete as infer_discrete
    from inferax.predictions import pointwise_log_likelihood as pointwise_log_likelihood
    from inferax.predictions import predictive as predictive
    from inferax.predictions import prior_predictive as prior_predictive
    from inferax.sampling import resume as resume
    from inferax.sampling import sample as sample
    from inferax.target import Target as Target

_LAZY_NAMES = {
    "Posterior": "inferax.posterior",
    "Target": "inferax.target",
    "disable_compilation_cache": "inferax.compile_cache",
    "enable_compilation_cache": "inferax.compile_cache",
    "from_numpyro": "inferax.numpyro_bridge",
    "infer_discrete": "inferax.predictions",
    "load": "inferax.posterior",
    "pointwise_log_likelihood": "inferax.predictions",
    "predictive": "inferax.predictions",
    "prior_predictive": "inferax.predictions",
    "resume": "inferax.sampling",
    "sample": "inferax.sampling",
}
_SUBPACKAGES = ("diagnostics", "flows", "samplers", "variational")


def __getattr__(name: str):
    # The core imports no subpackage (they import the core); `inferax.samplers` and the
    # others load on first use, and so do the core's own names, which import JAX.
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"inferax.{name}")
    raise AttributeError(f"module 'inferax' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Posterior",
    "Target",
    "diagnostics",
    "disable_compilation_cache",
    "enable_compilation_cache",
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
