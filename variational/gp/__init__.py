"""Sparse variational Gaussian processes: SGPR, SVGP (also dual-parameterised), SWSGP and
DKLGP, with their covariances and likelihoods, fitted to data by ``fit(model, rng_key, X,
y, ...)``; ``sequential`` learns from data that arrive in batches."""

from inferax.variational.gp.covariances import RBF as RBF
from inferax.variational.gp.covariances import AbstractCovariance as AbstractCovariance
from inferax.variational.gp.covariances import Matern12 as Matern12
from inferax.variational.gp.covariances import Matern32 as Matern32
from inferax.variational.gp.covariances import Matern52 as Matern52
from inferax.variational.gp.covariances import Product as Product
from inferax.variational.gp.covariances import Sum as Sum
from inferax.variational.gp.covariances import matern12 as matern12
from inferax.variational.gp.covariances import matern32 as matern32
from inferax.variational.gp.covariances import matern52 as matern52
from inferax.variational.gp.covariances import rbf as rbf
from inferax.variational.gp.dklgp import DKLGP as DKLGP
from inferax.variational.gp.dklgp import dklgp as dklgp
from inferax.variational.gp.dual import DualSVGP as DualSVGP
from inferax.variational.gp.fitting import GPFit as GPFit
from inferax.variational.gp.fitting import fit as fit
from inferax.variational.gp.likelihoods import AbstractLikelihood as AbstractLikelihood
from inferax.variational.gp.likelihoods import Bernoulli as Bernoulli
from inferax.variational.gp.likelihoods import Gaussian as Gaussian
from inferax.variational.gp.likelihoods import Poisson as Poisson
from inferax.variational.gp.likelihoods import StudentT as StudentT
from inferax.variational.gp.likelihoods import bernoulli as bernoulli
from inferax.variational.gp.likelihoods import gaussian as gaussian
from inferax.variational.gp.likelihoods import poisson as poisson
from inferax.variational.gp.likelihoods import student_t as student_t
from inferax.variational.gp.model import AbstractSparseGP as AbstractSparseGP
from inferax.variational.gp.sequential import SequentialGP as SequentialGP
from inferax.variational.gp.sequential import sequential as sequential
from inferax.variational.gp.sgpr import SGPR as SGPR
from inferax.variational.gp.sgpr import sgpr as sgpr
from inferax.variational.gp.svgp import SVGP as SVGP
from inferax.variational.gp.svgp import natural_gradient_step as natural_gradient_step
from inferax.variational.gp.svgp import svgp as svgp
from inferax.variational.gp.swsgp import SWSGP as SWSGP
from inferax.variational.gp.swsgp import swsgp as swsgp

__all__ = [
    "DKLGP",
    "DualSVGP",
    "RBF",
    "SGPR",
    "SVGP",
    "SequentialGP",
    "SWSGP",
    "AbstractCovariance",
    "AbstractLikelihood",
    "AbstractSparseGP",
    "Bernoulli",
    "GPFit",
    "Gaussian",
    "Matern12",
    "Matern32",
    "Matern52",
    "Poisson",
    "Product",
    "StudentT",
    "Sum",
    "bernoulli",
    "dklgp",
    "fit",
    "gaussian",
    "matern12",
    "matern32",
    "matern52",
    "natural_gradient_step",
    "poisson",
    "rbf",
    "sequential",
    "sgpr",
    "student_t",
    "svgp",
    "swsgp",
]
