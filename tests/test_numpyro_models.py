"""Models users bring, written as NumPyro's own examples write them: improper priors,
enumerated discrete sites, reparametrisation, scan with condition, and a hierarchical model.
inferax's NUTS agrees with NumPyro's NUTS on each, within Monte Carlo standard errors.

The models and NumPyro's long-run posterior moments live in `benchmarks/numpyro_examples.py`
and the JSON file it writes, so the tests compile only inferax's programs."""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from mcse_helpers import mean_and_mcse, sd_and_mcse

import inferax
from inferax import samplers

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
sys.path.insert(0, BENCHMARKS)
from numpyro_examples import (  # noqa: E402
    BASEBALL_AT_BATS,
    BASEBALL_HITS,
    MODELS,
    REFERENCE_FILE,
    baseball,
    flat_regression,
    mixture,
    regression_data,
)

with open(REFERENCE_FILE) as f:
    REFERENCE = json.load(f)["models"]

NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 500, 1000


def enumeration_broadcasts():
    """NumPyro's enumeration (through funsor) broadcasts by rank promotion, which the test
    suite otherwise raises on."""
    return jax.numpy_rank_promotion("allow")


@functools.cache
def runs_of(name):
    """inferax's NUTS on one model, run once per test process."""
    model, make_args, kwargs = MODELS[name]
    with enumeration_broadcasts():
        target = inferax.from_numpyro(model, *make_args(), **kwargs)
        post = inferax.sample(
            target,
            samplers.nuts(),
            jax.random.key(0),
            num_chains=NUM_CHAINS,
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
        )
    return name, target, post


@pytest.fixture(params=sorted(MODELS))
def one_run(request):
    return runs_of(request.param)


def test_inferax_nuts_agrees_with_numpyro_nuts(one_run):
    name, _, post = one_run
    assert post.fault_counts()["diverging"] <= 0.01 * NUM_CHAINS * NUM_SAMPLES, name
    for site, theirs in REFERENCE[name]["sites"].items():
        if site not in post.draws:  # sites of the reparametrisation NumPyro keeps
            continue
        ours_mean, ours_mcse = mean_and_mcse(post.draws[site])
        bound = 4.0 * np.hypot(ours_mcse, theirs["mean_mcse"])
        assert np.all(np.abs(ours_mean - theirs["mean"]) <= bound), (
            f"{name}.{site}: mean {ours_mean} against NumPyro's {theirs['mean']}, bound {bound}"
        )
        ours_sd, ours_sd_mcse = sd_and_mcse(post.draws[site])
        bound = 4.0 * np.hypot(ours_sd_mcse, theirs["sd_mcse"])
        assert np.all(np.abs(ours_sd - theirs["sd"]) <= bound), (
            f"{name}.{site}: sd {ours_sd} against NumPyro's {theirs['sd']}, bound {bound}"
        )


def test_the_tree_has_what_arviz_reads_next(one_run):
    name, target, post = one_run
    tree = post.to_datatree()
    if target.model.observed and not target.model.enumerated:
        assert "log_likelihood" in tree.children, name
        for site in target.model.observed:
            assert tree["log_likelihood"][site].shape[2:] == target.observed_data[site].shape


def test_flat_priors_and_plates_become_dims():
    x, y = regression_data()
    target = inferax.from_numpyro(flat_regression, x, y=y)
    assert target.model.improper == ("beta", "sigma")
    assert target.model.dims == {"y": ["obs"]}
    assert set(target.model.constant_data) == {"x"}
    no_draws = inferax.Posterior(draws={}, stats={}, timing={})
    with pytest.raises(ValueError, match=r"latent sites \['beta', 'sigma'\] have improper"):
        inferax.prior_predictive(target, no_draws, jax.random.key(1))


def test_a_start_is_found_where_the_origin_has_no_density():
    def walled(y):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0))
        numpyro.factor("wall", jnp.log(jnp.abs(x)))  # -inf at the origin
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    target = inferax.from_numpyro(walled, jnp.array([1.0]))
    assert np.isfinite(target.logdensity(target.init))
    assert float(target.init["x"]) != 0.0
    assert target.model.observed == ("y",)  # the factor is not an observation


def test_an_unenumerated_discrete_site_is_refused_with_the_way_out():
    def unmarked(data):
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
        with numpyro.plate("data", data.shape[0]):
            numpyro.sample("assignment", dist.Categorical(weights))

    with pytest.raises(ValueError, match=r"'assignment' is discrete .*'enumerate': 'parallel'"):
        inferax.from_numpyro(unmarked, jnp.zeros(3))

    def unbounded(data):
        numpyro.sample("count", dist.Poisson(3.0))

    with pytest.raises(ValueError, match="'count' is discrete .* cannot be enumerated"):
        inferax.from_numpyro(unbounded, jnp.zeros(3))


def test_a_latent_site_per_data_point_is_named_when_minibatching():
    with pytest.raises(ValueError, match="latent site 'alpha' has one value per data point"):
        inferax.from_numpyro(baseball, BASEBALL_AT_BATS, BASEBALL_HITS, data=("at_bats", "hits"))


def test_an_enumerated_model_is_not_split():
    with enumeration_broadcasts(), pytest.raises(ValueError, match="enumerates the discrete"):
        inferax.from_numpyro(mixture, jnp.zeros(4), data=("data",))


def test_infer_discrete_recovers_the_assignments():
    _, target, post = runs_of("mixture")
    with enumeration_broadcasts():
        post = inferax.infer_discrete(target, post, jax.random.key(1))
    assignment = post.draws["assignment"]
    assert assignment.shape == (NUM_CHAINS, NUM_SAMPLES, 8)
    # Points near -2 belong to the first component, points near 2 to the second.
    share = assignment.mean(axis=(0, 1))
    assert np.all(share[:3] < 0.05) and np.all(share[3:] > 0.95), share


def test_predictive_and_prior_groups_have_the_plates_dims():
    _, target, post = runs_of("baseball")
    post = inferax.predictive(target, post, jax.random.key(1))
    post = inferax.prior_predictive(target, post, jax.random.key(2), num_samples=50)
    tree = post.to_datatree(coords={"num_players": np.arange(100, 118)})
    assert tree["posterior"]["alpha"].dims == ("chain", "draw", "num_players")
    assert tree["posterior_predictive"]["obs"].dims == ("chain", "draw", "num_players")
    assert tree["prior"]["alpha"].shape == (1, 50, 18)
    assert tree["prior_predictive"]["obs"].shape == (1, 50, 18)
    assert tree["observed_data"]["obs"].dims == ("num_players",)
    assert int(tree["posterior"]["num_players"][0]) == 100
    replicated = tree["posterior_predictive"]["obs"].values
    assert np.all((replicated >= 0) & (replicated <= 45))
    # Each player's replicated hits centre on the posterior's success probability.
    expected = 45 * jax.nn.sigmoid(post.draws["alpha"]).mean(axis=(0, 1))
    np.testing.assert_allclose(replicated.mean(axis=(0, 1)), expected, atol=1.0)


def test_masks_scales_and_factors_enter_the_density_as_numpyro_has_them():
    def model(x, y, keep):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        numpyro.factor("penalty", -0.5 * w**4)
        with numpyro.plate("obs", x.shape[0]), numpyro.handlers.scale(scale=2.0):
            with numpyro.handlers.mask(mask=keep):
                numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)

    x, y = regression_data()
    keep = jnp.arange(20) % 3 != 0
    target = inferax.from_numpyro(model, x, y=y, keep=keep)
    w = jnp.array(0.7)
    expected = (
        dist.Normal(0.0, 1.0).log_prob(w)
        - 0.5 * w**4
        + 2.0 * jnp.sum(jnp.where(keep, dist.Normal(w * x, 1.0).log_prob(y), 0.0))
    )
    np.testing.assert_allclose(target.logdensity({"w": w}), expected, rtol=1e-5)
    assert set(target.model.constant_data) == {"x", "keep"}
