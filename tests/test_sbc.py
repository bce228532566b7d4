"""Simulation-based calibration: NUTS on eight schools passes, a misspecified fit is caught,
and a run resumes from its directory."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest

import inferax
from inferax.checkpoint import CheckpointError
from inferax.diagnostics import sbc
from inferax.diagnostics.sbc import rank_uniformity_p_values
from inferax.examples import EIGHT_SCHOOLS, eight_schools_noncentered

SCHOOLS = {"model_args": (EIGHT_SCHOOLS["J"], EIGHT_SCHOOLS["sigma"]), "observed": ["y"]}
NUM_SIMULATIONS = 200


@pytest.fixture(scope="module")
def nuts_result():
    # Small settings: 200 independent fits in one compiled program.
    return sbc(
        eight_schools_noncentered,
        inferax.samplers.nuts(max_num_doublings=5),
        jax.random.key(0),
        NUM_SIMULATIONS,
        num_warmup=100,
        num_samples=30,
        progress=False,
        **SCHOOLS,
    )


def test_nuts_on_eight_schools_is_calibrated(nuts_result):
    result = nuts_result
    assert result.num_simulations == NUM_SIMULATIONS and result.num_draws == 30
    assert result.ranks["theta_tilde"].shape == (NUM_SIMULATIONS, 8)
    assert set(result.ranks) == {"mu", "tau", "theta_tilde"}
    assert all(0 <= r.min() and r.max() <= 30 for r in result.ranks.values())
    assert not result.rejects(0.01), result.p_values


def test_ranks_as_a_datatree_and_the_ecdf_plot(nuts_result):
    tree = nuts_result.to_datatree()
    pit = tree["prior_sbc"]["theta_tilde"]
    assert pit.sizes["chain"] == 1 and pit.sizes["draw"] == NUM_SIMULATIONS
    assert float(pit.min()) > 0 and float(pit.max()) < 1
    assert tree["ranks"]["mu"].dims == ("simulation",)
    figure = nuts_result.plot(var_names=["mu", "theta_tilde"])
    assert len(figure.axes) == 2 and len(figure.axes[1].lines) == 8 + 1  # 8 ECDFs and zero


def normal_mean(y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, 1.0).expand([4]).to_event(1), obs=y)


def too_narrow_prior(y=None):
    # Misspecified on purpose: the prior is 3 times too narrow for the simulations.
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0 / 3.0))
    numpyro.sample("y", dist.Normal(mu, 1.0).expand([4]).to_event(1), obs=y)


def test_a_misspecified_fit_is_caught_and_the_run_resumes(tmp_path):
    settings = dict(
        observed="y",
        fit_model=too_narrow_prior,
        num_warmup=100,
        num_samples=30,
        chunk_size=100,
        run_dir=tmp_path,
        progress=False,
    )
    kernel = inferax.samplers.mala(step_size=0.3)
    result = sbc(normal_mean, kernel, jax.random.key(0), 200, **settings)
    assert result.rejects(0.01), result.p_values
    assert result.outside_band(0.99)["mu"]
    # The chunks are saved; a second call reads them back instead of fitting again.
    again = sbc(normal_mean, kernel, jax.random.key(0), 200, **settings)
    np.testing.assert_array_equal(again.ranks["mu"], result.ranks["mu"])
    with pytest.raises(CheckpointError, match="other settings"):
        sbc(normal_mean, kernel, jax.random.key(1), 200, **settings)


def test_a_variational_family_is_fitted_to_every_simulation():
    result = sbc(
        normal_mean,
        inferax.variational.meanfield_gaussian(),
        jax.random.key(0),
        50,
        observed="y",
        num_samples=40,
        fit_kwargs={"optimizer": optax.adam(0.05), "num_steps": 300},
        progress=False,
    )
    assert result.ranks["mu"].shape == (50,)
    # mean-field is exact here (the posterior is Gaussian): ranks stay uniform.
    assert not result.rejects(0.01), result.p_values


def test_chi_square_on_ranks_detects_a_pile_up():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 31, size=(500, 2))
    assert rank_uniformity_p_values(uniform, 30, 10).min() > 0.01
    piled = np.clip(rng.normal(15, 3, size=500).round(), 0, 30).astype(int)
    assert rank_uniformity_p_values(piled, 30, 10) < 1e-6


def test_bad_input_is_refused_by_name():
    key = jax.random.key(0)
    kernel = inferax.samplers.mala(step_size=0.1)
    with pytest.raises(ValueError, match="observed"):
        sbc(normal_mean, kernel, key, 10, observed=[])
    with pytest.raises(ValueError, match="observed: the model has no sites"):
        sbc(normal_mean, kernel, key, 10, observed=["z"])
    with pytest.raises(ValueError, match="var_names"):
        sbc(normal_mean, kernel, key, 10, observed="y", var_names=["nope"])
    with pytest.raises(ValueError, match="fit_kwargs"):
        sbc(normal_mean, inferax.variational.meanfield_gaussian(), key, 10, observed="y")
    with pytest.raises(ValueError, match="fit_kwargs: only for a variational family"):
        sbc(normal_mean, kernel, key, 10, observed="y", fit_kwargs={"num_steps": 5})
    with pytest.raises(ValueError, match="num_simulations"):
        sbc(normal_mean, kernel, key, 1, observed="y")
    with pytest.raises(TypeError, match="rng_key"):
        sbc(normal_mean, kernel, 0, 10, observed="y")
    with pytest.raises(ValueError, match="num_bins"):
        sbc(normal_mean, kernel, key, 10, observed="y", num_samples=5, num_bins=10)


def test_report_has_an_sbc_section(nuts_result, tmp_path):
    import arviz_base

    run = arviz_base.from_dict({"posterior": {"mu": np.zeros((2, 10))}})
    page = inferax.diagnostics.report(run, tmp_path / "sbc.html", sbc=nuts_result).read_text()
    assert "Simulation-based calibration" in page
    assert "no departure from uniform ranks" in page and "theta_tilde[7]" in page
    assert "could not draw" not in page
