"""MCMC kernels: frozen configs whose ``build(target)`` returns a blackjax ``SamplingAlgorithm``.

This namespace holds the kernel constructors and the values users pass to them (mirror maps,
nonsmooth terms), and ``AbstractKernel`` and ``WarmupAlgorithm`` for writing kernels. States,
infos, ``*_algorithm`` functions and helpers live in their modules (``inferax.samplers.sgld``,
``inferax.samplers.control_variates``, ...); the shared integrators in
``inferax.samplers.integrators``.
"""

from inferax.kernel import AbstractKernel as AbstractKernel
from inferax.kernel import WarmupAlgorithm as WarmupAlgorithm
from inferax.nonsmooth import AbstractNonsmooth as AbstractNonsmooth
from inferax.samplers import federated as federated
from inferax.samplers.blackjax_kernel import from_blackjax as from_blackjax
from inferax.samplers.chees import chees as chees
from inferax.samplers.chees import meads as meads
from inferax.samplers.control_variates import sgld_cv as sgld_cv
from inferax.samplers.federated import GaussianSurrogates as GaussianSurrogates
from inferax.samplers.federated import dsgld as dsgld
from inferax.samplers.federated import fit_surrogates as fit_surrogates
from inferax.samplers.federated import fsgld as fsgld
from inferax.samplers.hmc import hmc as hmc
from inferax.samplers.hmc import nuts as nuts
from inferax.samplers.langevin import mala as mala
from inferax.samplers.langevin import ula as ula
from inferax.samplers.mamla import bregman_moreau_mamla as bregman_moreau_mamla
from inferax.samplers.mamla import mamla as mamla
from inferax.samplers.mirror import bregman_moreau_langevin as bregman_moreau_langevin
from inferax.samplers.mirror import mirror_langevin as mirror_langevin
from inferax.samplers.mirror_maps import AbstractMirrorMap as AbstractMirrorMap
from inferax.samplers.mirror_maps import Burg as Burg
from inferax.samplers.mirror_maps import Entropy as Entropy
from inferax.samplers.mirror_maps import FermiDirac as FermiDirac
from inferax.samplers.mirror_maps import Hypentropy as Hypentropy
from inferax.samplers.mirror_maps import LogBarrierBox as LogBarrierBox
from inferax.samplers.mirror_maps import SimplexEntropy as SimplexEntropy
from inferax.samplers.mirror_maps import SimplexLogBarrier as SimplexLogBarrier
from inferax.samplers.nonsmooth import L1 as L1
from inferax.samplers.nonsmooth import Box as Box
from inferax.samplers.nonsmooth import Linear as Linear
from inferax.samplers.nonsmooth import NonNegative as NonNegative
from inferax.samplers.nonsmooth import PlusLinear as PlusLinear
from inferax.samplers.nonsmooth import Simplex as Simplex
from inferax.samplers.nonsmooth import TotalVariation1D as TotalVariation1D
from inferax.samplers.proximal import mymala as mymala
from inferax.samplers.proximal import myula as myula
from inferax.samplers.sghmc import sghmc as sghmc
from inferax.samplers.sgld import psgld as psgld
from inferax.samplers.sgld import sgld as sgld
from inferax.samplers.smc import tempered_smc as tempered_smc
from inferax.samplers.structured import structured_sgld as structured_sgld

__all__ = [
    "GaussianSurrogates",
    "dsgld",
    "federated",
    "fit_surrogates",
    "fsgld",
    "AbstractKernel",
    "AbstractMirrorMap",
    "AbstractNonsmooth",
    "Box",
    "Burg",
    "Entropy",
    "FermiDirac",
    "Hypentropy",
    "L1",
    "Linear",
    "LogBarrierBox",
    "NonNegative",
    "PlusLinear",
    "Simplex",
    "SimplexEntropy",
    "SimplexLogBarrier",
    "TotalVariation1D",
    "WarmupAlgorithm",
    "bregman_moreau_langevin",
    "bregman_moreau_mamla",
    "chees",
    "from_blackjax",
    "hmc",
    "mala",
    "mamla",
    "meads",
    "mirror_langevin",
    "mymala",
    "myula",
    "nuts",
    "psgld",
    "sghmc",
    "sgld",
    "sgld_cv",
    "structured_sgld",
    "tempered_smc",
    "ula",
]
