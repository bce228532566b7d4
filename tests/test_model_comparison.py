"""The tree ArviZ users reach for next: PSIS-LOO and model comparison on the
``log_likelihood`` group, and posterior predictive plots."""

import arviz_base
import arviz_plots
import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import MCMC, NUTS

import inferax
from inferax import diagnostics, samplers
from inferax.compile_cache import compile_count, programs_compiled

X = jnp.linspace(-1.0, 1.0, 30)
Y = 0.5 + 1.5 * X + 0.5 * jax.random.normal(jax.random.key(3), (30,))


def line(x, y=None):
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 5.0))
    slope = numpyro.sample("slope", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(intercept + slope * x, sigma), obs=y)


def constant(x, y=None):
    intercept = numpyro.sample("intercept", dist.Normal(0.0, 5.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(intercept, sigma), obs=y)


@pytest.fixture(scope="module")
def runs():
    """Each model's target and posterior with its posterior predictive group."""
    results = {}
    for name, model in (("line", line), ("constant", constant)):
        target = inferax.from_numpyro(model, X, y=Y)
        post = inferax.sample(
            target,
            samplers.nuts(),
            jax.random.key(0),
            num_chains=4,
            num_warmup=500,
            num_samples=500,
        )
        results[name] = (target, inferax.predictive(target, post, jax.random.key(1)))
    return results


@pytest.fixture(scope="module")
def posteriors(runs):
    return {name: post.to_datatree() for name, (_, post) in runs.items()}


def test_loo_agrees_with_arviz_on_numpyros_own_draws(posteriors):
    ours = arviz_stats.loo(posteriors["line"])
    mcmc = MCMC(
        NUTS(line),
        num_warmup=500,
        num_samples=500,
        num_chains=4,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(2), X, y=Y)
    theirs = arviz_stats.loo(arviz_base.from_numpyro(mcmc, log_likelihood=True))
    assert abs(ours.elpd - theirs.elpd) < theirs.se, (ours.elpd, theirs.elpd, theirs.se)
    assert ours.n_data_points == 30


def test_compare_ranks_the_model_that_fits_first(posteriors):
    table = arviz_stats.compare(posteriors)
    assert list(table.index) == ["line", "constant"]
    assert abs(table.loc["constant", "elpd_diff"]) > 2 * table.loc["constant", "dse"]


def test_plot_ppc_reads_the_tree(posteriors):
    tree = posteriors["line"]
    assert tree["posterior_predictive"]["y"].dims == ("chain", "draw", "obs")
    arviz_plots.plot_ppc_dist(tree, backend="matplotlib")


def test_check_and_report_use_the_loo(posteriors, tmp_path):
    tree = posteriors["line"]
    assert "loo" in diagnostics.checks.checks_applied(tree)
    assert not [f for f in diagnostics.check(tree) if f.check == "loo"]
    path = tmp_path / "report.html"
    diagnostics.report(tree, path)
    page = path.read_text()
    assert "elpd_loo = " in page
    assert "Posterior predictive check" in page


def test_the_log_likelihood_is_skipped_on_request(runs):
    target, _ = runs["constant"]
    post = inferax.sample(
        target,
        samplers.nuts(),
        jax.random.key(2),
        num_chains=4,
        num_warmup=500,
        num_samples=500,
        log_likelihood=False,
    )
    assert post.log_likelihood == {}
    # The fixture's run compiled the program ahead, beside its own; it serves these draws.
    assert "_log_likelihood" in programs_compiled(target)
    before = compile_count()
    assert inferax.pointwise_log_likelihood(target, post).log_likelihood["y"].shape == (4, 500, 30)
    assert compile_count() == before
    with pytest.raises(TypeError, match="log_likelihood must be True, False or None"):
        inferax.sample(target, samplers.nuts(), jax.random.key(0), log_likelihood="yes")


def test_every_group_survives_save_and_load(runs, tmp_path):
    target, post = runs["constant"]
    post = inferax.prior_predictive(target, post, jax.random.key(2), num_samples=30)
    post.save(tmp_path / "post.nc")
    loaded = inferax.load(tmp_path / "post.nc").to_datatree()
    original = post.to_datatree()
    assert set(loaded.children) == set(original.children)
    for group in original.children:
        for name, values in original[group].dataset.data_vars.items():
            assert loaded[group][name].dims == values.dims, (group, name)
            np.testing.assert_array_equal(loaded[group][name].values, values.values)
