"""ChEES-HMC and MEADS: correct draws from a correlated Gaussian, within MCSE, with their
cross-chain warmups run as ``inferax.sample`` runs them (many chains, one program)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mcse_helpers import assert_within_mcse, mean_and_mcse, min_ess, sd_and_mcse

import inferax
from inferax import samplers

MEAN = np.array([1.0, -2.0, 0.5])
COVARIANCE = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.25]])


@pytest.fixture(scope="module")
def target():
    precision = jnp.asarray(np.linalg.inv(COVARIANCE), jnp.float32)
    mean = jnp.asarray(MEAN, jnp.float32)
    return inferax.Target.from_logdensity(
        lambda x: -0.5 * (x - mean) @ precision @ (x - mean), jnp.zeros(3)
    )


@pytest.mark.parametrize("kernel", [samplers.chees(), samplers.meads()], ids=["chees", "meads"])
def test_correlated_gaussian_within_mcse(target, kernel):
    post = inferax.sample(
        target,
        kernel,
        jax.random.key(0),
        num_chains=32,
        num_warmup=300,
        num_samples=300,
        progress=False,
    )
    draws = post.draws["x"]
    assert min_ess(draws) > 100  # enough for the MCSE to be trusted
    mean, mean_mcse = mean_and_mcse(draws)
    sd, sd_mcse = sd_and_mcse(draws)
    assert_within_mcse(f"{kernel.name} mean", mean, mean_mcse, MEAN)
    assert_within_mcse(f"{kernel.name} sd", sd, sd_mcse, np.sqrt(np.diag(COVARIANCE)))
    # Every chain was tuned from the pooled statistics: one step size per fold at most.
    assert len(np.unique(post.tuned["step_size"])) <= getattr(kernel, "num_folds", 1)
    assert post.stats["diverging"].sum() == 0


def test_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="chees: learning_rate must be finite and > 0"):
        samplers.chees(learning_rate=-1.0)
    with pytest.raises(ValueError, match="chees: jitter_amount must lie in"):
        samplers.chees(jitter_amount=1.5)
    with pytest.raises(ValueError, match="meads: num_folds must be an integer >= 1"):
        samplers.meads(num_folds=0)
    target = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    with pytest.raises(ValueError, match="chees: the warmup tunes across chains"):
        samplers.chees().warmup(target, jax.random.key(0), jnp.zeros(2), 10)
