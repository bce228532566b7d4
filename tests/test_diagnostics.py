"""``inferax.diagnostics``: each check fires on data built to fail it and stays quiet on data
built to pass, with ArviZ's statistics; the report is one self-contained HTML file. A real
bad run, and the report in a browser, are in test_report_browser.py."""

import re
import time

import arviz_base
import arviz_stats
import numpy as np
import pytest
import xarray as xr

from inferax import diagnostics

FEW_PLOTS = {"max_plotted": 3, "max_paired": 2}


def tree(posterior, sample_stats=None, **groups):
    data = {"posterior": posterior}
    if sample_stats is not None:
        data["sample_stats"] = sample_stats
    return arviz_base.from_dict({**data, **groups})


def iid(rng, *shape):
    return rng.normal(size=shape)


def ar1(rng, chains, draws, rho):
    x = np.zeros((chains, draws))
    noise = rng.normal(size=(chains, draws))
    for t in range(1, draws):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(20261123)


@pytest.fixture(scope="module")
def good(rng):
    return tree(
        {"mu": iid(rng, 4, 500), "theta": iid(rng, 4, 500, 3)},
        {
            "diverging": np.zeros((4, 500), bool),
            "energy": iid(rng, 4, 500),
            "reached_max_treedepth": np.zeros((4, 500), bool),
        },
    )


def test_good_draws_pass_every_check(good):
    assert diagnostics.check(good) == []


def test_rhat_flags_chains_that_disagree_and_names_the_worst_element(rng):
    theta = iid(rng, 4, 500, 3)
    theta[:, :, 1] += np.arange(4)[:, None]  # chains centred at 0, 1, 2, 3
    findings = diagnostics.check(tree({"theta": theta}))
    rhat = [f for f in findings if f.check == "r_hat"]
    assert len(rhat) == 1 and rhat[0].severity == "error"
    assert rhat[0].variable == "theta[1]" and (rhat[0].count, rhat[0].total) == (1, 3)
    expected = float(arviz_stats.rhat(tree({"theta": theta}))["theta"].values[1])
    assert rhat[0].value == pytest.approx(expected) and rhat[0].threshold == 1.01
    relaxed = diagnostics.check(tree({"theta": theta}), rhat_max=100.0)
    assert not [f for f in relaxed if f.check == "r_hat"]


def test_ess_threshold_is_per_chain_and_tail_ess_uses_the_5_95_quantiles(rng):
    dt = tree({"x": ar1(rng, 2, 1000, 0.97)})
    findings = {f.check: f for f in diagnostics.check(dt)}
    assert {"ess_bulk", "ess_tail"} <= set(findings)
    assert findings["ess_bulk"].threshold == 200  # 100 per chain x 2 chains
    assert findings["ess_bulk"].severity == "warning"
    tail = float(arviz_stats.ess(dt, method="tail", prob=(0.05, 0.95))["x"])
    assert findings["ess_tail"].value == pytest.approx(tail)
    relaxed = diagnostics.check(dt, ess_min_per_chain=1)
    assert not [f for f in relaxed if f.check.startswith("ess")]


def test_divergences_treedepth_and_bfmi(rng):
    diverging = np.zeros((2, 500), bool)
    diverging[1, 7] = True
    depth = np.zeros((2, 500), bool)
    depth[0, :20] = True  # 2% of draws
    energy = np.cumsum(iid(rng, 2, 500), axis=1)  # a random walk: E-BFMI near 0
    stats = {"diverging": diverging, "reached_max_treedepth": depth, "energy": energy}
    findings = {f.check: f for f in diagnostics.check(tree({"x": iid(rng, 2, 500)}, stats))}
    assert findings["diverging"].severity == "error" and findings["diverging"].value == 1
    assert findings["tree_depth"].value == pytest.approx(0.02)
    assert findings["e_bfmi"].count == 2 and findings["e_bfmi"].value < 0.3
    relaxed = diagnostics.check(
        tree({"x": iid(rng, 2, 500)}, stats),
        max_divergences=1,
        max_treedepth_fraction=0.05,
        bfmi_min=0.0,
    )
    assert relaxed == []


def test_constant_quantities_are_skipped_but_stuck_chains_are_not(rng):
    constant = np.ones((2, 300))
    stuck = np.repeat(np.array([[0.0], [1.0]]), 300, axis=1)
    findings = diagnostics.check(tree({"c": constant, "s": stuck, "x": iid(rng, 2, 300)}))
    assert {f.variable for f in findings} == {"s"}
    assert any(f.check == "r_hat" and f.severity == "error" for f in findings)


def test_khat_from_log_weights_and_from_attrs(rng):
    # Weights from a Pareto distribution with tail index alpha have k = 1 / alpha; with about
    # 95 draws in the fitted tail, the estimate's sd is about (1 + k) / sqrt(95).
    heavy = tree({"x": iid(rng, 1, 1000)}, {"log_weight": 2 * rng.exponential(size=(1, 1000))})
    (finding,) = [f for f in diagnostics.check(heavy) if f.check == "khat"]
    assert finding.severity == "error" and finding.threshold == 0.7
    assert finding.value > 1.0  # k = 2, sd about 0.3
    light = tree({"x": iid(rng, 1, 1000)}, {"log_weight": rng.exponential(size=(1, 1000)) / 10})
    assert diagnostics.khat(light) < 0.5  # k = 0.1, sd about 0.1
    assert diagnostics.check(light) == []
    middling = tree({"x": iid(rng, 1, 1000)})
    middling["posterior"].attrs["khat"] = 0.6
    (finding,) = diagnostics.check(middling)
    assert (finding.check, finding.severity, finding.threshold) == ("khat", "warning", 0.5)


def test_summary_has_every_quantity_and_stan_tail_ess(good):
    table = diagnostics.summary(good)
    assert list(table.index) == ["mu", "theta[0]", "theta[1]", "theta[2]"]
    assert {"mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"} <= set(table.columns)
    assert any(c.startswith("hdi") for c in table.columns)
    tail = arviz_stats.ess(good, method="tail", prob=(0.05, 0.95))["theta"].values
    np.testing.assert_allclose(table["ess_tail"].values[1:], tail)


def page_of(tmp_path, data, **kwargs):
    path = diagnostics.report(data, tmp_path / "report.html", **kwargs)
    return path.read_text()


def assert_self_contained(page):
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)
    assert "plot-error'>" not in page
    images = re.findall(r"<img src='([^']*)'", page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    return images


def test_report_compares_runs_side_by_side(good, rng, tmp_path):
    other = tree({"mu": 1 + iid(rng, 4, 500), "theta": iid(rng, 4, 500, 3)})
    page = page_of(tmp_path, {"first": good, "second": other}, **FEW_PLOTS)
    assert_self_contained(page)
    comparison = page[page.index("id='comparison'") : page.index("id='run-0'")]
    assert "<th>first</th><th>second</th>" in comparison
    assert "Means and intervals: first, second" in comparison
    assert page.index("id='findings'") < page.index("id='comparison'")


def test_large_posterior_plots_the_first_few_and_tabulates_all(rng, tmp_path):
    dt = tree({"w": iid(rng, 2, 200, 500)})
    started = time.perf_counter()
    page = page_of(tmp_path, dt, max_plotted=4, max_paired=3)
    assert time.perf_counter() - started < 60
    assert_self_contained(page)
    assert "Plots show the first 4 of 500 scalar quantities" in page
    assert "<th>w[499]</th>" in page


def test_variational_report_shows_khat_and_elbo_trace(rng, tmp_path):
    loss = np.exp(-np.linspace(0, 5, 300)) + 1.0
    trace = xr.Dataset({"loss": ("step", loss), "elbo": ("step", -loss)})
    dt = tree({"x": iid(rng, 1, 1000)}, {"log_weight": 0.1 * iid(rng, 1, 1000)})
    dt["optimization"] = xr.DataTree(trace)
    page = page_of(tmp_path, dt, **FEW_PLOTS)
    assert_self_contained(page)
    assert "PSIS k-hat = " in page and "<figcaption>ELBO trace</figcaption>" in page
    # The bound over the last tenth of the steps, as the command line prints it.
    assert f"ELBO over the last 30 of 300 steps: {-loss[-30:].mean():.3g}" in page
    # A file from before the ELBO was stored: its trace is the negative loss.
    del dt["optimization"]
    dt["optimization"] = xr.DataTree(xr.Dataset({"loss": ("step", loss)}))
    assert "<figcaption>ELBO trace</figcaption>" in page_of(tmp_path, dt, **FEW_PLOTS)


def test_report_thresholds_are_used_and_unknown_ones_refused(good, tmp_path):
    page = page_of(tmp_path, good, thresholds={"rhat_max": 1.5}, max_plotted=2, max_paired=0)
    assert "R-hat &le; 1.5" in page
    with pytest.raises(TypeError, match="unknown thresholds"):
        diagnostics.report(good, tmp_path / "x.html", thresholds={"rhat": 1.5})
