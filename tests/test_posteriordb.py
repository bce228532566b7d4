"""inferax NUTS against posteriordb reference posteriors: a fast slice of the benchmark.

The translations and the stored reference means and sds live in `benchmarks/posteriordb/`
(see `benchmarks/posteriordb.py`, which runs all of them against NumPyro as well). Each test
runs 4 chains of 1000 warmup and 1000 draws in float64 and asserts, for every reported
element, |mean - reference mean| < 4 MCSE and |sd - reference sd| < 15% of the reference sd.
"""

import json
import os
import sys

import arviz_stats
import jax
import numpy as np
import pytest

import inferax
from inferax import samplers

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "posteriordb")
sys.path.insert(0, HERE)
import models  # noqa: E402

with open(os.path.join(HERE, "reference.json")) as f:
    REFERENCE = json.load(f)

POSTERIORS = [
    "eight_schools-eight_schools_noncentered",  # hierarchical, a deterministic site
    "kidiq-kidscore_momiq",  # flat prior on the coefficients
    "garch-garch11",  # flat priors on a half-line, an interval and a scaled interval
]


@pytest.mark.parametrize("name", POSTERIORS)
def test_nuts_matches_the_reference(name):
    posterior = models.POSTERIORS[name]
    expected = REFERENCE[name]["params"]
    with jax.enable_x64(True):
        args, kwargs = posterior.load()
        target = inferax.from_numpyro(posterior.model, *args, **kwargs)
        post = inferax.sample(
            target,
            samplers.nuts(),
            jax.random.key(0),
            num_chains=4,
            num_warmup=1000,
            num_samples=1000,
            progress=False,
        )
    failures = []
    for element in posterior.params:
        values = models.element(post.draws, element)
        mcse = float(arviz_stats.mcse(values, method="mean"))
        z = (values.mean() - expected[element]["mean"]) / mcse
        sd_error = abs(values.std() - expected[element]["sd"]) / expected[element]["sd"]
        if not (abs(z) < 4 and sd_error < 0.15):
            failures.append(f"{element}: z={z:.2f}, sd error={100 * sd_error:.1f}%")
    assert not failures, f"{name}: " + "; ".join(failures)
    assert np.all(np.isfinite(post.draws[posterior.params[0].split("[")[0]]))
