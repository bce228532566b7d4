"""Posterior output: ArviZ DataTree layout, summary, save and load."""

import jax
import numpy as np
import pytest
import xarray as xr

import inferax
from inferax import examples, samplers

DATA = examples.EIGHT_SCHOOLS


@pytest.fixture(scope="module")
def posterior():
    target = inferax.from_numpyro(
        examples.eight_schools_noncentered, DATA["J"], DATA["sigma"], y=DATA["y"]
    )
    return inferax.sample(
        target, samplers.nuts(), jax.random.key(0), num_chains=2, num_warmup=200, num_samples=100
    )


def test_datatree_layout(posterior):
    tree = posterior.to_datatree()
    assert isinstance(tree, xr.DataTree)
    assert {"posterior", "sample_stats", "observed_data"} <= set(tree.children)
    mu = tree["posterior"]["mu"]
    assert mu.dims == ("chain", "draw")
    assert tree["posterior"]["theta"].dims[:2] == ("chain", "draw")
    assert tree["posterior"].sizes["chain"] == 2 and tree["posterior"].sizes["draw"] == 100
    assert {
        "diverging",
        "energy",
        "lp",
        "acceptance_rate",
        "step_size",
        "tree_depth",
        "n_steps",
        "reached_max_treedepth",
    } <= set(tree["sample_stats"].data_vars)
    assert "chain" not in tree["observed_data"]["y"].dims
    attrs = tree["posterior"].attrs
    assert attrs["inference_library"] == "inferax"
    assert attrs["tuning_steps"] == 200
    assert attrs["sampling_time"] >= 0


def test_summary_columns(posterior):
    table = posterior.summary()
    for column in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat", "mcse_mean"):
        assert column in table.columns
    assert any(column.startswith("hdi") for column in table.columns)
    assert "mu" in table.index and "theta[0]" in table.index


def test_save_and_load_round_trip(posterior, tmp_path):
    path = tmp_path / "posterior.nc"
    posterior.save(path)
    loaded = inferax.load(path)
    for site, values in posterior.draws.items():
        np.testing.assert_array_equal(loaded.draws[site], values)
    for name, values in posterior.stats.items():
        np.testing.assert_array_equal(loaded.stats[name], values)
    assert loaded.stats["diverging"].dtype == bool
    np.testing.assert_array_equal(loaded.observed_data["y"], DATA["y"])
    assert loaded.num_warmup == 200
    assert loaded.sampler == posterior.sampler
    assert loaded.timing == pytest.approx(posterior.timing)
