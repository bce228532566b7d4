"""Tempered SMC: log evidence against a closed form, the evidence statistics through the
DataTree, save/load and the report. The mixture's mode weights and the 2-D energies, which
need more runs, are in benchmarks/smc.py."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import inferax
from inferax.samplers import tempered_smc

NUM_RUNS = 10


def linear_regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 0.5), obs=y)


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5]) + 0.5 * rng.normal(size=20)).astype(np.float32)
    # y ~ N(0, 0.5^2 I + X X^T): the closed-form marginal likelihood.
    covariance = 0.25 * np.eye(20) + X.astype(np.float64) @ X.T.astype(np.float64)
    _, logdet = np.linalg.slogdet(covariance)
    quad = y.astype(np.float64) @ np.linalg.solve(covariance, y.astype(np.float64))
    exact = -0.5 * (20 * np.log(2 * np.pi) + logdet + quad)
    target = inferax.from_numpyro(linear_regression, X, y, data=("X", "y"))
    posterior = tempered_smc(
        target, jax.random.key(0), num_particles=400, num_runs=NUM_RUNS, num_mcmc_steps=5
    )
    return posterior, exact


def test_log_evidence_of_conjugate_regression_within_3_se(regression):
    posterior, exact = regression
    estimate, se = posterior.log_evidence, posterior.log_evidence_mcse
    assert np.isfinite(se) and se > 0
    assert abs(estimate - exact) <= 3 * se, (estimate, exact, se)


def test_evidence_stats_say_how_the_run_went(regression):
    posterior, _ = regression
    stats = posterior.evidence_stats
    assert posterior.num_chains == NUM_RUNS and posterior.num_draws == 400
    assert stats["log_evidence"].shape == (NUM_RUNS,)
    temperature = stats["temperature"]
    for run in range(NUM_RUNS):
        used = temperature[run][~np.isnan(temperature[run])]
        assert used.size == stats["num_stages"][run]
        assert np.all(np.diff(used) > 0) and used[-1] == 1.0
    # The bisection holds every stage but the last at the target ESS fraction (0.5).
    ess = stats["ess"][:, 0]
    assert np.all(np.abs(ess / 400 - 0.5) < 0.15), ess
    assert np.nansum(stats["nonfinite"]) == 0


def test_evidence_survives_the_datatree_and_save_load(regression, tmp_path):
    posterior, _ = regression
    tree = posterior.to_datatree()
    assert tree["posterior"].attrs["log_evidence"] == pytest.approx(posterior.log_evidence)
    assert tree["evidence_stats"]["temperature"].dims == ("chain", "stage")
    path = tmp_path / "smc.nc"
    posterior.save(path)
    loaded = inferax.load(path)
    assert loaded.log_evidence == pytest.approx(posterior.log_evidence)
    assert loaded.log_evidence_mcse == pytest.approx(posterior.log_evidence_mcse)
    np.testing.assert_array_equal(loaded.evidence_stats["ess"], posterior.evidence_stats["ess"])
    assert loaded.draws["w"].shape == posterior.draws["w"].shape


def test_bad_input_is_refused_by_name_before_compiling():
    target = inferax.Target.from_logdensity(lambda x: -jnp.sum(x**2), jnp.zeros(2))
    key = jax.random.key(0)
    prior = dist.Normal(jnp.zeros(2), 1.0)
    with pytest.raises(ValueError, match="prior"):
        tempered_smc(target, key)
    with pytest.raises(ValueError, match="prior: draws have shape"):
        tempered_smc(target, key, prior=dist.Normal(jnp.zeros(3), 1.0))
    with pytest.raises(ValueError, match="target_ess"):
        tempered_smc(target, key, prior=prior, target_ess=1.5)
    with pytest.raises(ValueError, match="resampling"):
        tempered_smc(target, key, prior=prior, resampling="bogus")
    with pytest.raises(TypeError, match="move"):
        tempered_smc(target, key, prior=prior, move=inferax.samplers.ula(step_size=0.1))
    with pytest.raises(TypeError, match="rng_key"):
        tempered_smc(target, 0, prior=prior)
    with pytest.raises(ValueError, match="num_particles"):
        tempered_smc(target, key, prior=prior, num_particles=1)
    numpyro_target = inferax.from_numpyro(linear_regression, np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError, match="brings its own prior"):
        tempered_smc(numpyro_target, key, prior=prior)


def test_report_shows_the_evidence(regression, tmp_path):
    posterior, _ = regression
    page = inferax.diagnostics.report(posterior, tmp_path / "smc.html").read_text()
    assert "Evidence (tempered SMC)" in page
    assert f"{posterior.log_evidence:.4f}" in page
    assert "Temperature schedule" in page and "ESS of the weights per stage" in page
    assert "could not draw" not in page
