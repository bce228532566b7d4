"""MCMC kernels: frozen configs whose ``build(target)`` returns a blackjax ``SamplingAlgorithm``."""

from inferax.samplers.adaptation import WindowAdaptationState as WindowAdaptationState
from inferax.samplers.adaptation import window_adaptation as window_adaptation
from inferax.kernel import AbstractKernel as AbstractKernel
from inferax.kernel import WarmupAlgorithm as WarmupAlgorithm
from inferax.samplers.blackjax_kernel import from_blackjax as from_blackjax
from inferax.samplers.federated import AbstractFederatedKernel as AbstractFederatedKernel
from inferax.samplers.federated import FederatedSGLDState as FederatedSGLDState
from inferax.samplers.federated import GaussianSurrogates as GaussianSurrogates
from inferax.samplers.federated import dsgld as dsgld
from inferax.samplers.federated import federated_sgld_algorithm as federated_sgld_algorithm
from inferax.samplers.federated import fit_surrogates as fit_surrogates
from inferax.samplers.federated import fsgld as fsgld
from inferax.samplers.hmc import AbstractHMCKernel as AbstractHMCKernel
from inferax.samplers.hmc import hmc as hmc
from inferax.samplers.hmc import nuts as nuts
from inferax.samplers.langevin import ULAInfo as ULAInfo
from inferax.samplers.langevin import ULAState as ULAState
from inferax.samplers.langevin import mala as mala
from inferax.samplers.langevin import ula as ula
from inferax.samplers.langevin import ula_algorithm as ula_algorithm
from inferax.samplers.mirror import MirrorLangevinInfo as MirrorLangevinInfo
from inferax.samplers.mirror import MirrorLangevinState as MirrorLangevinState
from inferax.samplers.mirror import bregman_moreau_langevin as bregman_moreau_langevin
from inferax.samplers.mirror import mirror_langevin as mirror_langevin
from inferax.samplers.mirror import mirror_langevin_algorithm as mirror_langevin_algorithm
from inferax.samplers.mirror import mirror_langevin_step as mirror_langevin_step
from inferax.samplers.mirror_maps import AbstractMirrorMap as AbstractMirrorMap
from inferax.samplers.mirror_maps import Burg as Burg
from inferax.samplers.mirror_maps import Entropy as Entropy
from inferax.samplers.mirror_maps import FermiDirac as FermiDirac
from inferax.samplers.mirror_maps import Hypentropy as Hypentropy
from inferax.samplers.mirror_maps import LogBarrierBox as LogBarrierBox
from inferax.samplers.mirror_maps import SimplexEntropy as SimplexEntropy
from inferax.samplers.nonsmooth import L1 as L1
from inferax.nonsmooth import AbstractNonsmooth as AbstractNonsmooth
from inferax.samplers.nonsmooth import Box as Box
from inferax.samplers.nonsmooth import Linear as Linear
from inferax.samplers.nonsmooth import NonNegative as NonNegative
from inferax.samplers.nonsmooth import PlusLinear as PlusLinear
from inferax.samplers.nonsmooth import Simplex as Simplex
from inferax.samplers.nonsmooth import TotalVariation1D as TotalVariation1D
from inferax.samplers.nonsmooth import tv1d_denoise as tv1d_denoise
from inferax.samplers.proximal import MYMALAInfo as MYMALAInfo
from inferax.samplers.proximal import MYMALAState as MYMALAState
from inferax.samplers.proximal import mymala as mymala
from inferax.samplers.proximal import mymala_algorithm as mymala_algorithm
from inferax.samplers.proximal import myula as myula
from inferax.samplers.sgmcmc import AbstractSGMCMCKernel as AbstractSGMCMCKernel
from inferax.samplers.sgmcmc import PSGLDState as PSGLDState
from inferax.samplers.sgmcmc import SGHMCState as SGHMCState
from inferax.samplers.sgmcmc import SGLDCVWarmupState as SGLDCVWarmupState
from inferax.samplers.sgmcmc import SGLDState as SGLDState
from inferax.samplers.sgmcmc import SGMCMCInfo as SGMCMCInfo
from inferax.samplers.sgmcmc import StructuredSGLDState as StructuredSGLDState
from inferax.minibatch import draw_minibatch as draw_minibatch
from inferax.samplers.sgmcmc import find_mode as find_mode
from inferax.minibatch import minibatch_indices as minibatch_indices
from inferax.samplers.sgmcmc import psgld as psgld
from inferax.samplers.sgmcmc import psgld_algorithm as psgld_algorithm
from inferax.samplers.sgmcmc import sghmc as sghmc
from inferax.samplers.sgmcmc import sghmc_algorithm as sghmc_algorithm
from inferax.samplers.sgmcmc import sgld as sgld
from inferax.samplers.sgmcmc import sgld_algorithm as sgld_algorithm
from inferax.samplers.sgmcmc import sgld_cv as sgld_cv
from inferax.samplers.sgmcmc import sgld_cv_algorithm as sgld_cv_algorithm
from inferax.samplers.sgmcmc import structured_sgld as structured_sgld
from inferax.samplers.sgmcmc import structured_sgld_algorithm as structured_sgld_algorithm
from inferax.samplers.sgmcmc import underdamped_langevin_baoab as underdamped_langevin_baoab
from inferax.samplers.sgmcmc import underdamped_langevin_euler as underdamped_langevin_euler

__all__ = [
    "AbstractFederatedKernel",
    "FederatedSGLDState",
    "GaussianSurrogates",
    "dsgld",
    "federated_sgld_algorithm",
    "fit_surrogates",
    "from_blackjax",
    "fsgld",
    "AbstractHMCKernel",
    "AbstractKernel",
    "AbstractMirrorMap",
    "AbstractNonsmooth",
    "AbstractSGMCMCKernel",
    "Box",
    "Burg",
    "Entropy",
    "FermiDirac",
    "Hypentropy",
    "L1",
    "Linear",
    "LogBarrierBox",
    "MYMALAInfo",
    "MYMALAState",
    "MirrorLangevinInfo",
    "MirrorLangevinState",
    "NonNegative",
    "PSGLDState",
    "PlusLinear",
    "SGHMCState",
    "SGLDCVWarmupState",
    "SGLDState",
    "SGMCMCInfo",
    "Simplex",
    "SimplexEntropy",
    "StructuredSGLDState",
    "TotalVariation1D",
    "ULAInfo",
    "ULAState",
    "WarmupAlgorithm",
    "WindowAdaptationState",
    "bregman_moreau_langevin",
    "draw_minibatch",
    "find_mode",
    "hmc",
    "mala",
    "minibatch_indices",
    "mirror_langevin",
    "mirror_langevin_algorithm",
    "mirror_langevin_step",
    "mymala",
    "mymala_algorithm",
    "myula",
    "nuts",
    "psgld",
    "psgld_algorithm",
    "sghmc",
    "sghmc_algorithm",
    "sgld",
    "sgld_algorithm",
    "sgld_cv",
    "sgld_cv_algorithm",
    "structured_sgld",
    "structured_sgld_algorithm",
    "tv1d_denoise",
    "ula",
    "ula_algorithm",
    "underdamped_langevin_baoab",
    "underdamped_langevin_euler",
    "window_adaptation",
]
