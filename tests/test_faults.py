"""Numerical faults are contained: for every kernel family, a log density that turns NaN,
a gradient that overflows, and mass piled at a constraint boundary leave the chains
finite, and the events are counted."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import diagnostics, samplers

DATA = jnp.zeros((20, 2))


def with_data(log_prior, init):
    """The same density as a data-split target, for the stochastic-gradient kernels: the
    prior carries the fault, the likelihood is a weak Gaussian term."""
    return inferax.Target(
        log_prior=log_prior,
        log_likelihood=lambda x, batch: -0.005 * jnp.sum((batch - x[None, :]) ** 2),
        data=DATA,
        init=init,
    )


def nan_region(x):
    # NaN to the right of x0 = 1: a model that breaks in part of its space.
    return jnp.where(x[0] > 1.0, jnp.nan, -0.5 * jnp.sum(x**2))


def overflowing(x):
    # exp(x^4) overflows float32 once |x| > 3; its gradient sooner.
    return -0.5 * jnp.sum(x**2) - 0.01 * jnp.sum(jnp.exp(x**4))


def at_boundary(x):
    # Gamma(0.5, 1) in each coordinate, on x > 0: the density is infinite at the boundary
    # and zero past it, so the mass piles against a wall gradients cannot see.
    inside = jnp.all(x > 0.0)
    return jnp.where(inside, jnp.sum(-0.5 * jnp.log(jnp.abs(x)) - x), -jnp.inf)


KERNELS = {
    "nuts": samplers.nuts(),
    "hmc": samplers.hmc(num_integration_steps=10),
    "mala": samplers.mala(step_size=0.5),
    "ula": samplers.ula(step_size=0.3),
    "sgld": samplers.sgld(step_size=0.3, batch_size=5),
}
FAULTS = {"nan_region": nan_region, "overflowing": overflowing, "at_boundary": at_boundary}
START = {"nan_region": 0.0, "overflowing": 0.0, "at_boundary": 0.5}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("name", list(KERNELS))
def test_faults_are_contained_and_counted(name, fault):
    logdensity = FAULTS[fault]
    init = jnp.full(2, START[fault])
    target = (
        with_data(logdensity, init)
        if name == "sgld"
        else inferax.Target.from_logdensity(logdensity, init)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a run must not hand back NaN draws, even with a warning
        # A chain whose every step fails stays where it started; that is named, not an error.
        warnings.filterwarnings("ignore", message=".*did not move after warmup")
        post = inferax.sample(
            target,
            KERNELS[name],
            jax.random.key(11),
            num_chains=2,
            num_warmup=100,
            num_samples=200,
            init=jnp.tile(init, (2, 1)),
            chunk_size=300,
        )
    draws = post.draws["x"]
    assert np.all(np.isfinite(draws)), f"{name} left non-finite draws on {fault}"
    assert np.all(np.isfinite(post.stats["lp"]))
    assert post.stats["diverging"].sum() > 0, f"{name} did not count the faults on {fault}"
    if fault == "nan_region":
        assert np.all(draws[..., 0] <= 1.0)
    if fault == "at_boundary":
        assert np.all(draws > 0.0)
    assert post.fault_counts()["diverging"] == int(post.stats["diverging"].sum())


def test_summary_shows_the_counts():
    target = inferax.Target.from_logdensity(nan_region, jnp.zeros(2))
    post = inferax.sample(
        target,
        samplers.ula(step_size=0.3),
        jax.random.key(11),
        num_chains=2,
        num_warmup=100,
        num_samples=200,
        chunk_size=300,
    )
    with pytest.warns(UserWarning, match=r"\d+ divergent transitions and 0 draws with non-finite"):
        table = post.summary()
    assert table.attrs["diverging"] == post.stats["diverging"].sum() > 0
    assert table.attrs["nonfinite_draws"] == 0


def test_non_finite_draws_are_never_returned_silently():
    # A constrain map that overflows: the chain is fine, its output is not.
    target = inferax.Target.from_logdensity(
        lambda x: -0.5 * jnp.sum(x**2),
        jnp.zeros(1),
        constrain=lambda x: {"y": jnp.exp(1e3 * x)},
    )
    with pytest.warns(UserWarning, match=r"draws have NaN or infinite values \(y in \d+\)"):
        post = inferax.sample(
            target,
            samplers.ula(step_size=0.1),
            jax.random.key(0),
            num_chains=2,
            num_warmup=0,
            num_samples=50,
        )
    assert post.fault_counts()["nonfinite_draws"] > 0
    # The checks, the summary and the report say so too: an error, never "all passed".
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        findings = diagnostics.check(post.to_datatree())
        table = diagnostics.summary(post.to_datatree())
    assert findings[0].severity == "error" and findings[0].check == "nonfinite"
    assert findings[0].variable == "y[0]" and "NaN or infinite" in findings[0].message
    assert table.loc["y[0]", "n_nonfinite"] == post.fault_counts()["nonfinite_draws"]
