"""Bad input gets a clear error before compiling; numerical trouble is counted."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import inferax
from inferax import samplers

GAUSSIAN = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))


def test_non_finite_log_density_at_init_names_the_position():
    target = inferax.Target.from_logdensity(lambda x: jnp.sum(jnp.log(x)), jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"not usable at the initial position.*\[1\.0, -1\.0\]"):
        inferax.sample(target, samplers.nuts(), jax.random.key(0))


def test_non_finite_gradient_at_init_is_refused():
    target = inferax.Target.from_logdensity(lambda x: -jnp.sum(jnp.sqrt(x**2)), jnp.zeros(1))
    with pytest.raises(ValueError, match="gradient is not finite"):
        inferax.sample(target, samplers.mala(step_size=0.1), jax.random.key(0))


def test_non_scalar_log_density_is_a_type_error():
    target = inferax.Target.from_logdensity(lambda x: -0.5 * x**2, jnp.zeros(3))
    with pytest.raises(TypeError, match="must return a scalar, got shape \\(3,\\)"):
        inferax.sample(target, samplers.nuts(), jax.random.key(0))


@pytest.mark.parametrize("step_size", [0.0, -0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("kernel", [samplers.mala, samplers.ula])
def test_bad_step_size(kernel, step_size):
    with pytest.raises(ValueError, match="step_size must be finite and > 0"):
        kernel(step_size=step_size)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("num_samples", 0, "num_samples must be >= 1"),
        ("num_chains", 0, "num_chains must be >= 1"),
        ("num_warmup", -1, "num_warmup must be >= 0"),
        ("thinning", 0, "thinning must be >= 1"),
    ],
)
def test_bad_counts(setting, value, message):
    with pytest.raises(ValueError, match=message):
        inferax.sample(GAUSSIAN, samplers.nuts(), jax.random.key(0), **{setting: value})


def test_non_integer_count_is_a_type_error():
    with pytest.raises(TypeError, match="num_samples must be an integer"):
        inferax.sample(GAUSSIAN, samplers.nuts(), jax.random.key(0), num_samples=10.5)


def test_bad_kernel_settings():
    with pytest.raises(ValueError, match="num_integration_steps must be an integer >= 1"):
        samplers.hmc(num_integration_steps=0)
    with pytest.raises(ValueError, match="target_acceptance_rate must lie in"):
        samplers.nuts(target_acceptance_rate=1.5)
    with pytest.raises(ValueError, match="max_num_doublings"):
        samplers.nuts(max_num_doublings=0)


def test_a_key_is_required():
    with pytest.raises(TypeError, match="rng_key must be a JAX random key"):
        inferax.sample(GAUSSIAN, samplers.nuts(), 0)


@dataclasses.dataclass(frozen=True)
class AbsoluteValue:
    scale: float

    def value(self, x):
        return self.scale * jnp.sum(jnp.abs(x))


@pytest.mark.parametrize(
    "kernel",
    [
        samplers.nuts(),
        samplers.hmc(num_integration_steps=5),
        samplers.mala(0.1),
        samplers.ula(0.1),
    ],
)
def test_gradient_kernels_refuse_a_nonsmooth_target(kernel):
    target = dataclasses.replace(GAUSSIAN, nonsmooth=AbsoluteValue(1.0))
    with pytest.raises(ValueError, match="nonsmooth part.*proximal"):
        inferax.sample(target, kernel, jax.random.key(0))


def hard_wall(x):
    # A density that drops to zero outside the unit box: trajectories that cross the wall
    # meet an infinite energy.
    inside = jnp.all(jnp.abs(x) < 1.0)
    return jnp.where(inside, -0.5 * jnp.sum(x**2), -jnp.inf)


WALL = inferax.Target.from_logdensity(hard_wall, jnp.zeros(2))


def test_divergences_are_counted_not_raised():
    post = inferax.sample(
        WALL,
        samplers.hmc(num_integration_steps=20, initial_step_size=0.5),
        jax.random.key(0),
        num_chains=2,
        num_warmup=0,
        num_samples=200,
        init=jnp.zeros((2, 2)),
    )
    assert post.stats["diverging"].sum() > 0
    assert np.all(np.isfinite(post.draws["x"]))
    assert np.all(np.abs(post.draws["x"]) < 1.0)


def test_ula_undoes_and_counts_a_step_into_a_non_finite_region():
    post = inferax.sample(
        WALL,
        samplers.ula(step_size=0.5),
        jax.random.key(0),
        num_chains=2,
        num_warmup=0,
        num_samples=200,
        init=jnp.zeros((2, 2)),
    )
    assert post.stats["diverging"].sum() > 0
    assert np.all(np.abs(post.draws["x"]) < 1.0)


def test_target_validation():
    with pytest.raises(ValueError, match="give both or neither"):
        inferax.Target(log_prior=lambda p: 0.0, init=jnp.zeros(1), data=jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match="share one leading axis"):
        inferax.Target(
            log_prior=lambda p: 0.0,
            init=jnp.zeros(1),
            log_likelihood=lambda p, b: 0.0,
            data={"x": jnp.zeros(3), "y": jnp.zeros(4)},
        )
    with pytest.raises(TypeError, match="positions must be floating point"):
        inferax.Target(log_prior=lambda p: 0.0, init=jnp.zeros(1, dtype=jnp.int32))
    with pytest.raises(TypeError, match="log_prior must be callable"):
        inferax.Target(log_prior=3.0, init=jnp.zeros(1))


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: samplers.nuts(divergence_threshold=float("nan")), ValueError, "divergence_thr"),
        (lambda: samplers.nuts(divergence_threshold=-1.0), ValueError, "divergence_threshold"),
        (lambda: samplers.hmc(5, is_mass_matrix_diagonal="no"), TypeError, "True or False"),
        (lambda: samplers.nuts(target_acceptance_rate="0.8"), TypeError, "real number"),
        (lambda: samplers.mala(step_size=True), TypeError, "step_size must be a real number"),
        (lambda: samplers.ula(step_size=jnp.ones(2)), TypeError, "step_size must be a real"),
    ],
    ids=["nan-threshold", "negative-threshold", "string-flag", "string-rate", "bool", "array"],
)
def test_kernel_options_are_checked_by_type_and_range(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_numpy_and_jax_scalars_are_numbers():
    for step_size in (np.float32(0.1), jnp.float32(0.1), np.int64(1)):
        kernel = samplers.mala(step_size=step_size)
        assert type(kernel.step_size) is float and hash(kernel) == hash(kernel)
    assert samplers.nuts(initial_step_size=np.float32(0.5)) == samplers.nuts(initial_step_size=0.5)


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (
            inferax.Target.from_logdensity(lambda x: -jnp.sum(x**2), jnp.zeros(2, jnp.float16)),
            TypeError,
            "float32 or float64, got float16",
        ),
        (
            inferax.Target.from_logdensity(lambda x: -jnp.sum(x**2), jnp.zeros(2, jnp.bfloat16)),
            TypeError,
            "float32 or float64, got bfloat16",
        ),
        (
            inferax.Target.from_logdensity(
                lambda x: -jnp.sum(x**2), jnp.zeros(2), constrain=lambda x: x
            ),
            TypeError,
            "constrain must return a dict",
        ),
        (
            inferax.Target.from_logdensity(
                lambda p: -jnp.sum(p["chain"] ** 2), {"chain": jnp.zeros(2)}
            ),
            ValueError,
            "site name 'chain'",
        ),
        (
            inferax.Target.from_logdensity(
                lambda x: -jnp.sum(x**2), jnp.zeros(2), constrain=lambda x: {"a/b": x}
            ),
            ValueError,
            "site name 'a/b'",
        ),
    ],
    ids=["float16", "bfloat16", "constrain-not-a-dict", "site-chain", "site-slash"],
)
def test_targets_whose_output_cannot_be_written_are_refused_before_compiling(
    target, error, message
):
    with pytest.raises(error, match=message):
        inferax.sample(target, samplers.mala(0.1), jax.random.key(0), num_samples=5)


def test_runs_too_long_or_too_large_are_refused_before_compiling(monkeypatch):
    target = inferax.Target.from_logdensity(lambda x: -jnp.sum(x**2), jnp.zeros(2))
    with pytest.raises(ValueError, match="step indices are 32-bit"):
        inferax.sample(target, samplers.mala(0.1), jax.random.key(0), thinning=2**31)
    with pytest.raises(MemoryError, match=r"need about \d+\.\d\d GB and"):
        inferax.sample(target, samplers.mala(0.1), jax.random.key(0), num_chains=10**7)
    monkeypatch.setenv("INFERAX_MEMORY_LIMIT", "1000")
    with pytest.raises(MemoryError, match="0.00 GB is available"):
        inferax.sample(target, samplers.mala(0.1), jax.random.key(0), num_samples=10)


def test_a_data_name_is_one_name():
    import numpyro
    import numpyro.distributions as dist

    def model(obs):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", obs.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=obs)

    target = inferax.from_numpyro(model, data="obs", obs=jnp.ones(4))
    assert target.num_data == 4
