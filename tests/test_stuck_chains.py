"""Warmup never leaves a step size of zero, and a chain that does not move is named and can
be restarted."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import diagnostics, samplers
from inferax.posterior import stuck_chains
from inferax.samplers.adaptation import window_schedule


def _pinned(x):
    # A standard normal below 5, and above it a single point of finite density at 10: a
    # chain started there has every proposal rejected.
    away = jnp.where(x[0] == 10.0, 0.0, -jnp.inf)
    return jnp.where(x[0] < 5.0, -0.5 * jnp.sum(x**2), away)


TARGET = inferax.Target.from_logdensity(_pinned, jnp.zeros(1))
INIT = jnp.array([[0.3], [10.0]])


def test_the_schedule_searches_a_step_size_at_the_start_and_after_each_window():
    schedule = window_schedule(200)
    searched = np.flatnonzero(schedule[:, 2])
    ends = np.flatnonzero(schedule[:-1, 1])  # a window that ends warmup starts nothing
    assert searched[0] == 0 and ends.size >= 2
    np.testing.assert_array_equal(searched[1:], ends + 1)


def test_each_sign_of_a_stuck_chain_is_read():
    rng = np.random.default_rng(0)
    moving = {"x": rng.normal(size=(4, 50))}
    healthy = {
        "acceptance_rate": np.full((4, 50), 0.8),
        "diverging": np.zeros((4, 50), bool),
        "step_size": np.full((4, 50), 0.5),
    }
    assert stuck_chains(healthy, moving) == []
    frozen = {"x": moving["x"].copy()}
    frozen["x"][2] = 1.0
    assert stuck_chains(healthy, frozen) == [2]
    rejecting = {**healthy, "acceptance_rate": healthy["acceptance_rate"].copy()}
    rejecting["acceptance_rate"][1] = 0.001
    assert stuck_chains(rejecting, moving) == [1]
    diverging = {**healthy, "diverging": healthy["diverging"].copy()}
    diverging["diverging"][3] = True
    assert stuck_chains(diverging, moving) == [3]
    creeping = {**healthy, "step_size": healthy["step_size"].copy()}
    creeping["step_size"][0] = 5e-7
    assert stuck_chains(creeping, moving) == [0]


def test_a_stuck_chain_is_named_and_restarted():
    settings = dict(num_chains=2, num_warmup=200, num_samples=200, init=INIT)
    with pytest.warns(UserWarning, match=r"1 chain\(s\) did not move after warmup.*chain 1 \("):
        post = inferax.sample(TARGET, samplers.nuts(), jax.random.key(0), **settings)
    assert post.stuck_chains() == [1]
    assert np.all(np.isfinite(post.tuned["step_size"])) and np.all(post.tuned["step_size"] > 0)
    finding = [f for f in diagnostics.check(post) if f.check == "stuck_chain"]
    assert finding and finding[0].severity == "error" and "chain(s) 1 " in finding[0].message

    restarted = inferax.sample(
        TARGET, samplers.nuts(), jax.random.key(0), restart_stuck_chains=True, **settings
    )
    assert restarted.stuck_chains() == []
    np.testing.assert_array_equal(restarted.draws["x"][0], post.draws["x"][0])
    assert abs(float(restarted.draws["x"][1].mean())) < 0.5


def test_restart_is_not_checkpointed(tmp_path):
    with pytest.raises(ValueError, match="restart_stuck_chains: restarted chains are not"):
        inferax.sample(
            TARGET,
            samplers.nuts(),
            jax.random.key(0),
            restart_stuck_chains=True,
            checkpoint=tmp_path / "run",
        )


def _exploding(x):
    # Like an MA(1) model's errors: the sum over t of (x^t)^2 grows like x^(2T) past |x| = 1,
    # so a chain started at 1.3 sees a log density near -1e45, with gradients to match. It
    # slides out over several adaptation windows, its step size growing by orders of
    # magnitude within each; dual averaging restarted from its running average at a window's
    # end (rather than its last iterate) froze such chains.
    powers = x[0] ** jnp.arange(1, 201, dtype=x.dtype)
    return -0.5 * jnp.sum(powers**2) - 0.5 * jnp.sum(x**2)


def test_chains_slide_out_of_exploding_curvature_during_warmup():
    with jax.enable_x64(True):
        target = inferax.Target.from_logdensity(_exploding, jnp.zeros(1))
        post = inferax.sample(
            target,
            samplers.nuts(),
            jax.random.key(0),
            num_chains=4,
            num_warmup=1000,
            num_samples=100,
            init=jnp.array([[1.3], [-1.3], [1.45], [-1.45]]),
        )
    assert post.stuck_chains() == []
    assert np.all(np.abs(post.draws["x"]) < 1.0)
