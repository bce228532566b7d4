"""Federated SGLD: the data split over clients on a device mesh, Gaussian surrogates of each
client's likelihood, and the DSGLD and FSGLD kernels."""

from inferax.samplers.federated.distributed import initialize as initialize
from inferax.samplers.federated.kernels import AbstractFederatedKernel as AbstractFederatedKernel
from inferax.samplers.federated.kernels import FederatedSGLDState as FederatedSGLDState
from inferax.samplers.federated.kernels import dsgld as dsgld
from inferax.samplers.federated.kernels import federated_sgld_algorithm as federated_sgld_algorithm
from inferax.samplers.federated.kernels import fsgld as fsgld
from inferax.samplers.federated.kernels import gradient_estimate_fn as gradient_estimate_fn
from inferax.samplers.federated.split import CLIENT_AXIS as CLIENT_AXIS
from inferax.samplers.federated.split import FederatedData as FederatedData
from inferax.samplers.federated.split import FederatedLikelihood as FederatedLikelihood
from inferax.samplers.federated.split import client_sizes as client_sizes
from inferax.samplers.federated.split import default_mesh as default_mesh
from inferax.samplers.federated.split import is_federated as is_federated
from inferax.samplers.federated.split import num_clients as num_clients
from inferax.samplers.federated.split import place_on_clients as place_on_clients
from inferax.samplers.federated.split import place_replicated as place_replicated
from inferax.samplers.federated.split import split as split
from inferax.samplers.federated.split import to_host as to_host
from inferax.samplers.federated.surrogates import SURROGATE_KINDS as SURROGATE_KINDS
from inferax.samplers.federated.surrogates import GaussianSurrogates as GaussianSurrogates
from inferax.samplers.federated.surrogates import conducive_arrays as conducive_arrays
from inferax.samplers.federated.surrogates import fit_surrogates as fit_surrogates
from inferax.samplers.federated.surrogates import with_surrogates as with_surrogates

__all__ = [
    "CLIENT_AXIS",
    "SURROGATE_KINDS",
    "AbstractFederatedKernel",
    "FederatedData",
    "FederatedLikelihood",
    "FederatedSGLDState",
    "GaussianSurrogates",
    "client_sizes",
    "conducive_arrays",
    "default_mesh",
    "dsgld",
    "federated_sgld_algorithm",
    "fit_surrogates",
    "fsgld",
    "gradient_estimate_fn",
    "initialize",
    "is_federated",
    "num_clients",
    "place_on_clients",
    "place_replicated",
    "split",
    "to_host",
    "with_surrogates",
]
