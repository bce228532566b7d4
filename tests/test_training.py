"""The core's one training loop: results do not depend on the chunk size, a second run
does not compile again, the host hook sees every chunk, and bad settings are refused."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from inferax import chunking
from inferax.compile_cache import compile_count
from inferax.training import PACK_ABOVE_LEAVES, pack, train


def noisy_descent(x, rng_key, data):
    """A step whose result depends on its key: chunking must not change the keys."""
    noise = 0.01 * jax.random.normal(rng_key, x.shape, x.dtype)
    return x - 0.1 * (x - data) + noise, {"loss": jnp.sum((x - data) ** 2), "noise": noise[0]}


def test_the_fit_does_not_depend_on_the_chunk_size_and_is_compiled_once():
    data = jnp.arange(3.0)
    whole = train(noisy_descent, jnp.zeros(3), jax.random.key(0), data, num_steps=25)
    before = compile_count()
    seen = []
    chunked = train(
        noisy_descent,
        jnp.zeros(3),
        jax.random.key(0),
        data,
        num_steps=25,
        chunk_size=10,
        on_chunk=lambda first, state, metrics: seen.append((first, metrics["loss"].size)),
    )
    np.testing.assert_array_equal(whole.state, chunked.state)
    np.testing.assert_array_equal(whole.trace["noise"], chunked.trace["noise"])
    assert whole.trace["loss"].shape == (25,)
    assert seen == [(0, 10), (10, 10), (20, 5)]
    assert compile_count() == before + 1  # one program for every chunk of 10
    train(noisy_descent, jnp.ones(3), jax.random.key(1), data + 1, num_steps=7, chunk_size=10)
    assert compile_count() == before + 1  # new values, same shapes: no new program


def test_the_automatic_chunk_length_starts_short_with_a_hook_and_gives_the_same_fit():
    data = jnp.arange(3.0)
    seen = []
    watched = train(
        noisy_descent,
        jnp.zeros(3),
        jax.random.key(0),
        data,
        num_steps=1500,
        on_chunk=lambda first, state, metrics: seen.append((first, metrics["loss"].size)),
    )
    # The first chunk measures the step time; the next may grow by MAX_GROWTH at most.
    first, second = seen[0], seen[1]
    assert first == (0, chunking.FIRST_CHUNK_STEPS)
    assert second[0] == chunking.FIRST_CHUNK_STEPS
    assert second[1] <= chunking.MAX_GROWTH * chunking.FIRST_CHUNK_STEPS
    assert sum(size for _, size in seen) == 1500
    before = compile_count()
    plain = train(noisy_descent, jnp.zeros(3), jax.random.key(0), data, num_steps=1500)
    assert compile_count() == before  # without a hook: the same 2048-step program
    np.testing.assert_array_equal(plain.state, watched.state)
    np.testing.assert_array_equal(plain.trace["noise"], watched.trace["noise"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"num_steps": 0}, "num_steps"), ({"num_steps": 5, "chunk_size": 0}, "chunk_size")],
)
def test_bad_settings_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        train(noisy_descent, jnp.zeros(3), jax.random.key(0), jnp.zeros(3), **settings)


def counting_step(state, rng_key, data):
    """A state of several dtypes and a key, as a trainer's may hold."""
    x, count, key = state
    key, sub = jax.random.split(key)
    x = jax.tree.map(lambda a, b: a - 0.1 * (a - b) + 0.01 * jax.random.normal(sub), x, data)
    loss = sum(jnp.sum((a - b) ** 2) for a, b in zip(x.values(), data.values(), strict=True))
    return (x, count + 1, key), {"loss": loss, "even": count % 2 == 0}


@pytest.mark.parametrize("num_extra", [0, PACK_ABOVE_LEAVES])  # as it is, and packed
def test_a_state_of_several_dtypes_and_a_key_comes_back_whole_with_or_without_a_hook(num_extra):
    extra = {f"c{i}": jnp.full((i + 1,), float(i)) for i in range(num_extra)}
    state = (
        {"a": jnp.zeros((2, 3)), "b": jnp.ones(4), **extra},
        jnp.int32(5),
        jax.random.key(3),
    )
    assert (pack(state)[0] is None) == (num_extra == 0)
    data = {"a": jnp.full((2, 3), 2.0), "b": jnp.zeros(4), **extra}
    plain = train(counting_step, state, jax.random.key(0), data, num_steps=12, chunk_size=5)
    hooked = []
    watched = train(
        counting_step,
        state,
        jax.random.key(0),
        data,
        num_steps=12,
        chunk_size=5,
        on_chunk=lambda first, state, metrics: hooked.append(int(state[1])),
    )
    assert hooked == [10, 15, 17]
    for result in (plain, watched):
        x, count, key = result.state
        assert x["a"].shape == (2, 3) and x["a"].dtype == jnp.float32
        assert count.dtype == jnp.int32 and int(count) == 17
        assert jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        assert result.trace["even"].dtype == np.bool_ and result.trace["even"].shape == (12,)
    leaves = zip(jax.tree.leaves(plain.state[:2]), jax.tree.leaves(watched.state[:2]), strict=True)
    for a, b in leaves:
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        jax.random.key_data(plain.state[2]), jax.random.key_data(watched.state[2])
    )


# A step that goes non-finite at steps 13 and 14 (its "loss" at 13, its state from 14 on),
# and a fallback that skips them: from the chunk that went non-finite on, ``train`` runs
# the fallback, so its result is the fallback's all through.
BAD_STEPS = (13, 14)


def descent_that_overflows(x, rng_key, data, guarded=False):
    noise = 0.01 * jax.random.normal(rng_key, x.shape, x.dtype)
    new = x - 0.1 * (x - data) + noise
    t = jnp.rint(x[-1]).astype(jnp.int32)  # the last coordinate counts the steps
    bad = (t == BAD_STEPS[0]) | (t == BAD_STEPS[1])
    loss = jnp.where(t == BAD_STEPS[0], jnp.nan, jnp.sum((x - data) ** 2))
    new = jnp.where(t == BAD_STEPS[1], jnp.inf, new)
    if guarded:
        new = jnp.where(bad, x, new)
    return new.at[-1].set(x[-1] + 1.0), {"loss": loss, "bad": bad, "guarded": jnp.array(guarded)}


def guarded_descent(x, rng_key, data):
    return descent_that_overflows(x, rng_key, data, guarded=True)


@pytest.mark.parametrize("hook", [False, True])  # chunks back to back, and one at a time
def test_a_chunk_that_went_non_finite_runs_again_with_the_fallback(hook):
    data = jnp.array([1.0, 2.0, 0.0])
    settings = {"num_steps": 30, "chunk_size": 8}
    guarded = train(guarded_descent, jnp.zeros(3), jax.random.key(0), data, **settings)
    assert guarded.trace["bad"].sum() == 2 and np.isfinite(guarded.state).all()
    seen = []
    result = train(
        descent_that_overflows,
        jnp.zeros(3),
        jax.random.key(0),
        data,
        fallback=guarded_descent,
        on_chunk=(lambda first, state, metrics: seen.append(first)) if hook else None,
        **settings,
    )
    np.testing.assert_array_equal(result.state, guarded.state)
    np.testing.assert_array_equal(result.trace["loss"], guarded.trace["loss"])
    np.testing.assert_array_equal(result.trace["bad"], guarded.trace["bad"])
    assert seen == ([0, 8, 16, 24] if hook else [])
    # The fallback ran the chunk that went non-finite (steps 8 to 15) and every one after.
    np.testing.assert_array_equal(result.trace["guarded"], np.arange(30) >= 8)


def test_a_finite_fit_never_compiles_its_fallback():
    data = jnp.arange(3.0)
    settings = {"num_steps": 20, "chunk_size": 8}
    plain = train(noisy_descent, jnp.zeros(3), jax.random.key(0), data, **settings)
    before = compile_count()
    result = train(
        noisy_descent, jnp.zeros(3), jax.random.key(0), data, fallback=guarded_descent, **settings
    )
    assert compile_count() == before + 1  # the checked chunk; never the fallback's
    np.testing.assert_array_equal(result.state, plain.state)
