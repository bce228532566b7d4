"""Bad input, fuzzed: every call ends in a result or a clear Python exception that names
the argument, never a hang, an XLA crash or a silent wrong result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import inferax
from inferax import samplers

TARGET = inferax.Target.from_logdensity(
    lambda p: -0.5 * jnp.sum(p["a"] ** 2) - 0.5 * p["b"] ** 2,
    {"a": jnp.zeros(2), "b": jnp.zeros(())},
)
KERNEL = samplers.ula(step_size=0.1)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=3),
    st.floats(allow_nan=True),
    st.lists(st.integers(), max_size=2),
    st.integers(-10, 0),
)


@FUZZ
@given(
    setting=st.sampled_from(
        ["num_chains", "num_warmup", "num_samples", "thinning", "chunk_size", "checkpoint_every"]
    ),
    value=junk,
)
def test_bad_counts_name_the_argument(setting, value):
    if setting == "num_warmup" and value == 0:
        return  # zero warmup is allowed
    if setting == "chunk_size" and value is None:
        return  # the automatic chunk length
    with pytest.raises((TypeError, ValueError), match=setting):
        inferax.sample(TARGET, KERNEL, jax.random.key(0), **{setting: value})


@FUZZ
@given(
    num_chains=st.sampled_from([1, 2]),
    num_warmup=st.integers(0, 3),
    num_samples=st.integers(1, 4),
    thinning=st.sampled_from([1, 2]),
)
def test_valid_counts_give_draws_of_the_right_shape(num_chains, num_warmup, num_samples, thinning):
    post = inferax.sample(
        TARGET,
        KERNEL,
        jax.random.key(0),
        num_chains=num_chains,
        num_warmup=num_warmup,
        num_samples=num_samples,
        thinning=thinning,
    )
    assert post.draws["a"].shape == (num_chains, num_samples, 2)
    assert post.draws["b"].shape == (num_chains, num_samples)
    assert np.all(np.isfinite(post.draws["a"]))


@FUZZ
@given(
    key=st.one_of(
        st.integers(0, 2**31),
        st.floats(),
        st.none(),
        st.text(max_size=2),
        st.just(np.zeros(3, dtype=np.uint32)),
        st.just(np.zeros(2, dtype=np.int64)),
        st.just(jax.random.split(jax.random.key(0), 2)),
    )
)
def test_anything_but_a_key_is_refused(key):
    """An int seed is refused with a TypeError, never silently turned into a key."""
    with pytest.raises((TypeError, ValueError), match="rng_key"):
        inferax.sample(TARGET, KERNEL, key)


def test_a_legacy_uint32_key_is_accepted():
    legacy = inferax.sample(
        TARGET, KERNEL, jax.random.PRNGKey(3), num_chains=1, num_warmup=0, num_samples=3
    )
    typed = inferax.sample(
        TARGET, KERNEL, jax.random.key(3), num_chains=1, num_warmup=0, num_samples=3
    )
    np.testing.assert_array_equal(legacy.draws["a"], typed.draws["a"])


@FUZZ
@given(
    step_size=st.one_of(
        st.floats(max_value=0.0),
        st.just(float("nan")),
        st.just(float("inf")),
        st.text(max_size=2),
        st.none(),
        st.booleans(),
    )
)
def test_bad_step_sizes_name_the_argument(step_size):
    for kernel in (samplers.ula, samplers.mala):
        with pytest.raises((TypeError, ValueError), match="step_size"):
            kernel(step_size=step_size)


@FUZZ
@given(
    shapes=st.lists(st.lists(st.integers(0, 3), max_size=2).map(tuple), min_size=1, max_size=3),
    extra_chain_axis=st.integers(0, 2),
)
def test_mismatched_init_is_refused(shapes, extra_chain_axis):
    init = {"a": jnp.zeros((extra_chain_axis, *shapes[0])), "b": jnp.zeros(shapes[-1])}
    if init["a"].shape == (2, 2) and init["b"].shape == (2,) and extra_chain_axis == 2:
        return  # that one is valid
    with pytest.raises(ValueError, match="init"):
        inferax.sample(TARGET, KERNEL, jax.random.key(0), num_chains=2, init=init)


@FUZZ
@given(
    dtype=st.sampled_from([jnp.int32, jnp.bool_, jnp.uint8]),
    shape=st.lists(st.integers(0, 3), max_size=2).map(tuple),
)
def test_non_float_positions_are_refused(dtype, shape):
    with pytest.raises(TypeError, match="init: leaf 'x' has dtype"):
        inferax.Target(log_prior=lambda x: 0.0, init=jnp.zeros(shape, dtype=dtype))


@FUZZ
@given(
    lengths=st.lists(st.integers(0, 5), min_size=2, max_size=3),
    nan_at=st.one_of(st.none(), st.integers(0, 4)),
)
def test_data_is_checked(lengths, nan_at):
    data = {f"leaf{i}": np.ones((n, 2)) for i, n in enumerate(lengths)}

    def log_likelihood(p, batch):
        return -0.5 * sum(jnp.sum((leaf - p[None, :]) ** 2) for leaf in batch.values())

    if len(set(lengths)) > 1:
        with pytest.raises(ValueError, match="data: every leaf must share one leading axis"):
            inferax.Target(
                log_prior=lambda p: 0.0,
                log_likelihood=log_likelihood,
                data=data,
                init=jnp.zeros(2),
            )
        return
    if nan_at is not None and nan_at < lengths[0]:
        data["leaf0"][nan_at, 0] = np.nan
    target = inferax.Target(
        log_prior=lambda p: -0.5 * jnp.sum(p**2),
        log_likelihood=log_likelihood,
        data=data,
        init=jnp.zeros(2),
    )
    assert target.num_data == lengths[0]
    if nan_at is not None and nan_at < lengths[0]:
        with pytest.raises(ValueError, match="not usable at the initial position"):
            inferax.sample(target, KERNEL, jax.random.key(0), num_chains=1, num_samples=2)
    else:
        value = target.logdensity(target.init)
        assert np.isfinite(value)  # empty data is an empty sum


def test_wrong_argument_types():
    with pytest.raises(TypeError, match="target must be an inferax.Target"):
        inferax.sample(lambda x: x, KERNEL, jax.random.key(0))
    with pytest.raises(TypeError, match="kernel must be a sampler"):
        inferax.sample(TARGET, "nuts", jax.random.key(0))


KERNEL_OPTIONS = {
    "nuts": (
        samplers.nuts,
        {},
        [
            "max_num_doublings",
            "target_acceptance_rate",
            "divergence_threshold",
            "initial_step_size",
            "is_mass_matrix_diagonal",
        ],
    ),
    "hmc": (
        samplers.hmc,
        {"num_integration_steps": 5},
        ["num_integration_steps", "step_size_jitter"],
    ),
    "mala": (samplers.mala, {"step_size": 0.1}, ["step_size"]),
    "sgld": (samplers.sgld, {"step_size": 0.1, "batch_size": 2}, ["step_size", "batch_size"]),
    "sghmc": (samplers.sghmc, {"step_size": 0.1, "batch_size": 2, "friction": 1.0}, ["friction"]),
    "psgld": (samplers.psgld, {"step_size": 0.1, "batch_size": 2}, ["decay", "eps"]),
    "myula": (samplers.myula, {"step_size": 0.1, "smoothing": 0.1}, ["smoothing"]),
    "mirror_langevin": (
        samplers.mirror_langevin,
        {"mirror": samplers.Entropy(), "step_size": 0.1},
        ["num_substeps"],
    ),
    "dsgld": (
        samplers.dsgld,
        {"step_size": 0.1, "batch_size": 2, "local_steps": 2},
        ["local_steps"],
    ),
}
OPTIONS = [
    (name, option) for name, (_, _, options) in KERNEL_OPTIONS.items() for option in options
]


@settings(max_examples=300, deadline=None)
@given(which=st.sampled_from(OPTIONS), value=junk | st.floats() | st.integers(-3, 3))
def test_kernel_options_are_refused_by_name_or_are_sound(which, value):
    name, option = which
    make, required, _ = KERNEL_OPTIONS[name]
    try:
        kernel = make(**{**required, option: value})
    except (TypeError, ValueError) as error:
        assert option in str(error), f"{name}({option}={value!r}): {error}"
        return
    stored = getattr(kernel, option)
    assert isinstance(stored, bool | int | float), (name, option, value)
    assert np.isfinite(stored), (name, option, stored)  # never a silent nan or inf
    hash(kernel)
