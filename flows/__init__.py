"""Normalizing flows as values: bijections (planar, radial, affine coupling (RealNVP),
rational-quadratic spline coupling) and the blocks of stochastic normalizing flows. Each
builder returns a flow's recipe; ``inferax.variational.fit`` trains it."""

from inferax.flows.coupling import RealNVP as RealNVP
from inferax.flows.coupling import realnvp as realnvp
from inferax.flows.flow import AbstractFlow as AbstractFlow
from inferax.flows.flow import AbstractTransform as AbstractTransform
from inferax.flows.flow import Flow as Flow
from inferax.flows.flow import LayerScan as LayerScan
from inferax.flows.planar import Planar as Planar
from inferax.flows.planar import PlanarBijector as PlanarBijector
from inferax.flows.planar import planar as planar
from inferax.flows.radial import Radial as Radial
from inferax.flows.radial import RadialBijector as RadialBijector
from inferax.flows.radial import radial as radial
from inferax.flows.spline import Spline as Spline
from inferax.flows.spline import spline as spline
from inferax.flows.stochastic import AbstractStochasticBlock as AbstractStochasticBlock
from inferax.flows.stochastic import LangevinBlock as LangevinBlock
from inferax.flows.stochastic import MetropolisBlock as MetropolisBlock
from inferax.flows.stochastic import StochasticFlow as StochasticFlow
from inferax.flows.stochastic import langevin_block as langevin_block
from inferax.flows.stochastic import metropolis_block as metropolis_block
from inferax.flows.stochastic import stochastic as stochastic

__all__ = [
    "AbstractFlow",
    "AbstractStochasticBlock",
    "AbstractTransform",
    "Flow",
    "LangevinBlock",
    "LayerScan",
    "MetropolisBlock",
    "Planar",
    "PlanarBijector",
    "Radial",
    "RadialBijector",
    "RealNVP",
    "Spline",
    "StochasticFlow",
    "langevin_block",
    "metropolis_block",
    "planar",
    "radial",
    "realnvp",
    "spline",
    "stochastic",
]
