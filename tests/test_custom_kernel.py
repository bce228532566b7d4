"""A user's blackjax kernel runs in ``inferax.sample``: draws agree with a conjugate
posterior, and its info fields become ArviZ statistics."""

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.base import SamplingAlgorithm
from mcse_helpers import assert_within_mcse, mean_and_mcse, sd_and_mcse

import inferax
from inferax import samplers

MEAN = jnp.array([1.0, -2.0])
SD = jnp.array([0.5, 2.0])
TARGET = inferax.Target.from_logdensity(
    lambda x: -0.5 * jnp.sum(((x - MEAN) / SD) ** 2), jnp.zeros(2)
)


def barker(logdensity_fn, step_size, inverse_mass_matrix):
    return blackjax.barker_proposal(logdensity_fn, step_size, inverse_mass_matrix)


def random_walk(logdensity_fn):
    """An init/step pair of the user's own, from blackjax's random-walk Metropolis."""
    algorithm = blackjax.additive_step_random_walk.normal_random_walk(logdensity_fn, 0.8 * SD)
    return SamplingAlgorithm(algorithm.init, algorithm.step)


@pytest.mark.parametrize(
    "kernel",
    [
        samplers.from_blackjax(barker, adaptation="window", name="barker"),
        samplers.from_blackjax(random_walk, name="random_walk"),
    ],
    ids=["barker_window_adaptation", "init_step_pair"],
)
def test_draws_match_the_gaussian(kernel):
    post = inferax.sample(
        TARGET, kernel, jax.random.key(0), num_chains=4, num_warmup=1000, num_samples=2000
    )
    mean, mcse = mean_and_mcse(post.draws["x"])
    assert_within_mcse("mean", mean, mcse, MEAN)
    sd, sd_mcse = sd_and_mcse(post.draws["x"])
    assert_within_mcse("sd", sd, sd_mcse, SD)
    assert {"acceptance_rate", "lp"} <= set(post.stats)
    assert np.all(post.stats["acceptance_rate"].mean(axis=1) > 0.1)


def test_window_adaptation_tunes_the_step_size():
    kernel = samplers.from_blackjax(barker, adaptation="window")
    post = inferax.sample(
        TARGET, kernel, jax.random.key(1), num_chains=2, num_warmup=300, num_samples=10
    )
    assert post.stats["step_size"].shape == (2, 10)
    assert np.all(post.tuned["step_size"] != kernel.initial_step_size)


def test_bad_configurations_are_refused():
    with pytest.raises(TypeError, match="build must be callable"):
        samplers.from_blackjax("nuts")
    with pytest.raises(ValueError, match="adaptation must be one of"):
        samplers.from_blackjax(barker, adaptation="pathfinder")
    with pytest.raises(TypeError, match="not a blackjax SamplingAlgorithm"):
        inferax.sample(TARGET, samplers.from_blackjax(lambda f: f), jax.random.key(0))
