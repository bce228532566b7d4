"""Every sampler keeps the kernel contract, checked from one registry of constructors.

For each kernel, in float32 and float64: ``build(target, **tuned)`` returns blackjax's
``SamplingAlgorithm``; ``step(rng_key, state)`` returns a NamedTuple state of the same type
and dtypes, and a NamedTuple info; ``sample_stats`` uses ArviZ's names; and a step into a
region where the log density is NaN is undone and counted as ``diverging``.
"""

import inspect
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.base import SamplingAlgorithm

import inferax
from inferax import samplers
from inferax.kernel import AbstractKernel
from inferax.samplers import federated

ARVIZ_STATS = {
    "lp",
    "acceptance_rate",
    "diverging",
    "energy",
    "step_size",
    "tree_depth",
    "n_steps",
    "reached_max_treedepth",
}
INFERAX_STATS = {"grad_norm", "left_support", "nonfinite", "smoothing"}
"""Statistics ArviZ has no name for, documented in docs/diagnostics.md."""

DIM = 2
NUM_DATA = 16


def _broken_away_from(start):
    """0 at ``start`` and NaN everywhere else: any step that moves must be undone."""
    return lambda x: jnp.where(jnp.all(x == start), 0.0, jnp.nan)


def _smooth(start):
    fault = _broken_away_from(start)
    return inferax.Target.from_logdensity(
        lambda x: -0.5 * jnp.sum((x - 0.5) ** 2) + fault(x), start
    )


def _with_data(start):
    fault = _broken_away_from(start)
    data = jnp.linspace(0.2, 0.8, NUM_DATA * DIM, dtype=start.dtype).reshape(NUM_DATA, DIM)
    return inferax.Target(
        log_prior=lambda x: -0.5 * jnp.sum(x**2) + fault(x),
        log_likelihood=lambda x, batch: -0.5 * jnp.sum((batch - x[None, :]) ** 2),
        data=data,
        init=start,
    )


def _federated(start):
    return federated.split(_with_data(start), 2)


def _federated_with_surrogates(start):
    fed = _federated(start)
    surrogates = federated.GaussianSurrogates.from_covariance(
        jnp.zeros((2, DIM), start.dtype),
        jnp.broadcast_to(jnp.eye(DIM, dtype=start.dtype), (2, DIM, DIM)),
    )
    return federated.with_surrogates(fed, surrogates)


def _nonsmooth(start):
    fault = _broken_away_from(start)
    return inferax.Target(
        log_prior=lambda x: -0.5 * jnp.sum((x - 0.5) ** 2) + fault(x),
        init=start,
        nonsmooth=samplers.L1(1.0),
    )


def _step_and_mass(start):
    return {
        "step_size": jnp.asarray(0.01, start.dtype),
        "inverse_mass_matrix": jnp.ones_like(start),
    }


def _centre(start):
    # The broken target is finite only at the start: centre the control variate there.
    return {"centre": start}


def _chees_tuned(start):
    return {"step_size": jnp.asarray(0.01, start.dtype), "num_leapfrog_steps": 3.0}


def _meads_tuned(start):
    return {
        "step_size": jnp.asarray(0.01, start.dtype),
        "momentum_inverse_scale": jnp.ones_like(start),
        "alpha": jnp.asarray(0.3, start.dtype),
        "delta": jnp.asarray(0.15, start.dtype),
    }


class Case(NamedTuple):
    kernel: AbstractKernel
    make_target: Callable  # start -> a target finite only at start
    tuned: Callable = lambda start: {}  # start -> what warmup would tune


def _barker(logdensity_fn, step_size, inverse_mass_matrix):
    import blackjax

    return blackjax.barker_proposal(logdensity_fn, step_size, inverse_mass_matrix)


REGISTRY = {
    "ula": Case(samplers.ula(0.01), _smooth),
    "mala": Case(samplers.mala(0.01), _smooth),
    "hmc": Case(samplers.hmc(num_integration_steps=3), _smooth, _step_and_mass),
    "nuts": Case(samplers.nuts(max_num_doublings=3), _smooth, _step_and_mass),
    "from_blackjax": Case(
        samplers.from_blackjax(_barker, adaptation="window"), _smooth, _step_and_mass
    ),
    "chees": Case(samplers.chees(), _smooth, _chees_tuned),
    "meads": Case(samplers.meads(), _smooth, _meads_tuned),
    "sgld": Case(samplers.sgld(0.001, batch_size=4), _with_data),
    "sghmc": Case(samplers.sghmc(0.001, batch_size=4, friction=1.0), _with_data),
    "psgld": Case(samplers.psgld(0.001, batch_size=4), _with_data),
    "sgld_cv": Case(samplers.sgld_cv(0.001, batch_size=4), _with_data, _centre),
    "structured_sgld": Case(
        samplers.structured_sgld(0.001, batch_size=4, groups=[[0], [1]], buffer_size=2),
        _with_data,
    ),
    "dsgld": Case(samplers.dsgld(0.001, batch_size=4, local_steps=2), _federated),
    "fsgld": Case(samplers.fsgld(0.001, batch_size=4, local_steps=2), _federated_with_surrogates),
    "myula": Case(samplers.myula(0.01, smoothing=0.01), _nonsmooth),
    "mymala": Case(samplers.mymala(0.01, smoothing=0.01), _nonsmooth),
    "mirror_langevin": Case(samplers.mirror_langevin(samplers.Entropy(), 0.01), _smooth),
    "mamla": Case(samplers.mamla(samplers.Entropy(), 0.01), _smooth),
    "bregman_moreau_mamla": Case(
        samplers.bregman_moreau_mamla(samplers.Hypentropy(1.0), 0.01, step_size=0.01),
        _nonsmooth,
    ),
    "bregman_moreau_langevin": Case(
        samplers.bregman_moreau_langevin(samplers.Hypentropy(1.0), 0.01, smoothing=0.01),
        _nonsmooth,
    ),
}


def test_the_registry_holds_every_sampler():
    constructors = {
        name
        for name in samplers.__all__
        if isinstance(getattr(samplers, name), type)
        and issubclass(getattr(samplers, name), AbstractKernel)
        and not inspect.isabstract(getattr(samplers, name))
    }
    kernels = {type(case.kernel).__name__ for case in REGISTRY.values()}
    assert constructors <= kernels | {"from_blackjax"}, constructors - kernels


def _is_namedtuple(value) -> bool:
    return isinstance(value, tuple) and hasattr(value, "_fields")


def _dtypes(tree):
    return [leaf.dtype for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_kernel_keeps_the_contract(name, x64):
    case = REGISTRY[name]
    kernel = case.kernel
    key = jax.random.key(0)
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        start = jnp.full(DIM, 0.5, dtype)
        broken = case.make_target(start)
        kernel.check_target(broken)
        tuned = case.tuned(start)

        algorithm = kernel.build(kernel.prepare_target(broken), **tuned)
        assert isinstance(algorithm, SamplingAlgorithm)
        parameters = list(inspect.signature(algorithm.step).parameters)
        assert parameters[:2] == ["rng_key", "state"], parameters

        state = algorithm.init(start)
        new_state, info = jax.jit(algorithm.step)(key, state)
        assert _is_namedtuple(state) and type(new_state) is type(state)
        assert _is_namedtuple(info), type(info)
        assert _dtypes(new_state) == _dtypes(state)
        assert new_state.position.dtype == dtype

        stats = kernel.sample_stats(new_state, info, tuned)
        assert set(stats) <= ARVIZ_STATS | INFERAX_STATS, set(stats) - ARVIZ_STATS
        assert {"lp", "diverging"} <= set(stats)
        assert stats["lp"].dtype == dtype

        # Every proposal lands where the log density is NaN: the step is undone and counted.
        np.testing.assert_array_equal(new_state.position, start)
        assert bool(stats["diverging"])
        assert np.isfinite(stats["lp"])
