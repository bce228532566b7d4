"""The sampling loop: keys, chunks, compile caching, thinning and starting points."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import samplers
from inferax.compile_cache import compile_count, programs_compiled
from inferax.kernel import WarmupAlgorithm


def logdensity(params):
    return -0.5 * jnp.sum(params["a"] ** 2) - 0.5 * (params["b"] - 1.0) ** 2 / 4.0


TARGET = inferax.Target.from_logdensity(logdensity, {"a": jnp.zeros(2), "b": 0.0})
KERNEL = samplers.nuts()
SETTINGS = dict(num_chains=3, num_warmup=60, num_samples=50)


def run(key=0, **overrides):
    return inferax.sample(TARGET, KERNEL, jax.random.key(key), **(SETTINGS | overrides))


def test_same_key_same_draws_and_second_call_does_not_compile():
    first = run()
    compiled_before = compile_count()
    second = run()
    assert compile_count() == compiled_before, "a second call with the same shapes compiled"
    assert second.timing["compile"] == 0.0
    for site in first.draws:
        np.testing.assert_array_equal(first.draws[site], second.draws[site])
    for name in first.stats:
        np.testing.assert_array_equal(first.stats[name], second.stats[name])


def test_a_nuts_run_compiles_one_chunk_program_for_warmup_and_sampling():
    target = inferax.Target.from_logdensity(logdensity, {"a": jnp.zeros(2), "b": 0.0})
    before = compile_count()
    inferax.sample(target, KERNEL, jax.random.key(0), **SETTINGS)
    assert sorted(programs_compiled(target)) == ["chain_chunk", "start", "warmup_final"]
    assert compile_count() - before == 3


@dataclasses.dataclass(frozen=True)
class two_program_nuts(samplers.nuts):  # noqa: N801
    """NUTS whose warmup is not given in parts: warmup and sampling chunks of their own."""

    def warmup_algorithm(self, target):
        return WarmupAlgorithm(*super().warmup_algorithm(target)[:3])


def test_different_key_different_draws():
    assert not np.array_equal(run(0).draws["a"], run(1).draws["a"])


def test_neither_the_chunk_size_nor_separate_warmup_and_sampling_programs_change_the_draws():
    # The automatic length (the default) runs chunks of growing length from 16 steps on;
    # two_program_nuts runs warmup and sampling in programs of their own, as kernels whose
    # warmup is not stepwise do.
    reference = run()
    for chunk_size, kernel in ((7, KERNEL), (50, two_program_nuts())):
        settings = SETTINGS | {"chunk_size": chunk_size}
        other = inferax.sample(TARGET, kernel, jax.random.key(0), **settings)
        for site in reference.draws:
            np.testing.assert_array_equal(reference.draws[site], other.draws[site])
        for name in reference.stats:
            np.testing.assert_array_equal(reference.stats[name], other.stats[name])
        for name in reference.tuned:
            np.testing.assert_array_equal(reference.tuned[name], other.tuned[name])
    assert {"warmup_chunk", "sampling_chunk", "chain_chunk"} <= set(programs_compiled(TARGET))


def test_shapes_stats_and_timing():
    post = run()
    assert post.draws["a"].shape == (3, 50, 2)
    assert post.draws["b"].shape == (3, 50)
    assert set(post.stats) == {
        "lp",
        "acceptance_rate",
        "diverging",
        "energy",
        "n_steps",
        "tree_depth",
        "reached_max_treedepth",
        "step_size",
    }
    for values in post.stats.values():
        assert values.shape == (3, 50)
    assert post.stats["diverging"].dtype == bool
    assert set(post.timing) == {"compile", "warmup", "sampling"}
    assert all(seconds >= 0 for seconds in post.timing.values())
    # Each chain keeps its own tuned step size, constant over its draws.
    assert np.all(post.stats["step_size"] == post.stats["step_size"][:, :1])
    assert post.tuned["inverse_mass_matrix"].shape == (3, 3)


def test_thinning_keeps_every_kth_step():
    thinned = inferax.sample(
        TARGET,
        samplers.ula(step_size=0.1),
        jax.random.key(3),
        num_chains=2,
        num_warmup=10,
        num_samples=20,
        thinning=3,
    )
    full = inferax.sample(
        TARGET,
        samplers.ula(step_size=0.1),
        jax.random.key(3),
        num_chains=2,
        num_warmup=10,
        num_samples=60,
    )
    np.testing.assert_array_equal(thinned.draws["a"], full.draws["a"][:, 2::3])


def test_explicit_init_is_used_exactly():
    init = {"a": jnp.full((2, 2), 3.0), "b": jnp.array([5.0, -5.0])}
    post = inferax.sample(
        TARGET,
        samplers.ula(step_size=1e-8),
        jax.random.key(0),
        num_chains=2,
        num_warmup=0,
        num_samples=1,
        init=init,
    )
    np.testing.assert_allclose(post.draws["a"][:, 0], init["a"], atol=1e-3)
    np.testing.assert_allclose(post.draws["b"][:, 0], init["b"], atol=1e-3)


def test_init_with_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="init: a leaf has shape"):
        inferax.sample(
            TARGET,
            KERNEL,
            jax.random.key(0),
            num_chains=2,
            init={"a": jnp.zeros((3, 2)), "b": jnp.zeros(3)},
        )


def test_chains_start_apart():
    post = inferax.sample(
        TARGET,
        samplers.ula(step_size=1e-8),
        jax.random.key(0),
        num_chains=4,
        num_warmup=0,
        num_samples=1,
    )
    starts = post.draws["a"][:, 0]
    assert np.all(np.abs(starts) <= 2.0 + 1e-3)
    assert len(np.unique(starts[:, 0])) == 4


def test_progress_bar_runs(capsys):
    inferax.sample(TARGET, KERNEL, jax.random.key(0), progress=True, **SETTINGS)
    assert "draw/s" in capsys.readouterr().err


@jax.custom_jvp
def _kink(x):
    return 0.0 * x


@_kink.defjvp
def _kink_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return _kink(x), jnp.where(x > 0.5, jnp.nan, 0.0) * t


def test_chains_start_where_the_gradient_is_finite_too():
    # The log density is finite everywhere; its gradient is NaN above 0.5.
    target = inferax.Target.from_logdensity(
        lambda x: -0.5 * jnp.sum(x**2) + jnp.sum(_kink(x)), jnp.zeros(1)
    )
    from inferax.chain_starts import jittered_positions

    positions = jittered_positions(target, jax.random.key(0), 16)
    _, grads = jax.vmap(target.logdensity_and_grad)(positions)
    assert np.all(positions <= 0.5) and np.all(np.isfinite(grads))
    assert np.unique(np.asarray(positions)).size == 16  # jittered, not all at init
