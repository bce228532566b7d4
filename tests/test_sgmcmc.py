"""Stochastic-gradient kernels against known answers: conjugate Bayesian linear regression
(N=10,000, d=5) with its exact posterior, and a correlated 2-D Gaussian whose mean-field
answer is known. Tolerances come from MCSE; seeds are fixed."""

import dataclasses
import math

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from mcse_helpers import assert_within_mcse, mean_and_mcse, min_ess, sd_and_mcse

import inferax
from inferax import samplers
from inferax.compile_cache import compile_count
from inferax.minibatch import feistel_sizes, minibatch_indices

KEY = jax.random.key(20261123)

# ---- Conjugate Bayesian linear regression: y = X beta + noise, beta ~ N(0, I), noise N(0, 1).
NUM_DATA, DIM = 10_000, 5
_rng = np.random.default_rng(3)
X = _rng.normal(size=(NUM_DATA, DIM)).astype(np.float32)
BETA = np.array([1.0, -0.5, 0.25, 2.0, 0.0])
Y = (X @ BETA + _rng.normal(size=NUM_DATA)).astype(np.float32)
_X64 = X.astype(np.float64)
POST_COV = np.linalg.inv(np.eye(DIM) + _X64.T @ _X64)
POST_MEAN = POST_COV @ _X64.T @ Y.astype(np.float64)
POST_VAR = np.diag(POST_COV)


def _log_likelihood(beta, batch):
    residual = batch["y"] - batch["X"] @ beta
    return -0.5 * jnp.sum(residual**2)


REGRESSION = inferax.Target(
    log_prior=lambda beta: -0.5 * jnp.sum(beta**2),
    init=jnp.zeros(DIM),
    log_likelihood=_log_likelihood,
    data={"X": X, "y": Y},
)

# Posterior precision is about NUM_DATA = 1e4 in every direction, so h * 1e4 is the
# contraction per step; the gradient noise of a batch of B adds a variance of order
# h * NUM_DATA / B relative to the posterior's.
MEAN_CASES = {
    "sgld_cv": (samplers.sgld_cv(step_size=1e-5, batch_size=100), 4000),
    "sghmc_baoab": (samplers.sghmc(step_size=1e-6, batch_size=1000, friction=200.0), 4000),
    "sghmc_euler": (
        samplers.sghmc(step_size=1e-6, batch_size=1000, friction=200.0, integrator="euler"),
        4000,
    ),
    "psgld": (samplers.psgld(step_size=1e-6, batch_size=1000), 4000),
}


@pytest.mark.parametrize("name", list(MEAN_CASES))
def test_posterior_mean_of_linear_regression(name):
    kernel, num_samples = MEAN_CASES[name]
    post = inferax.sample(
        REGRESSION,
        kernel,
        KEY,
        num_chains=4,
        num_warmup=1000,
        num_samples=num_samples,
        chunk_size=num_samples,
    )
    draws = post.draws["x"]
    assert min_ess(draws) > 200, "too few effective draws for the MCSE to be trusted"
    mean, mcse = mean_and_mcse(draws)
    assert_within_mcse(f"{name} mean", mean, mcse, POST_MEAN)
    assert post.stats["diverging"].sum() == 0
    assert np.all(post.stats["step_size"] == np.float32(kernel.step_size))
    assert np.all(np.isfinite(post.stats["grad_norm"]))


def _relative_variance_bias(step_size, num_samples):
    """SGLD's variance over the posterior's, minus one, averaged over the coordinates, with
    its MCSE."""
    post = inferax.sample(
        REGRESSION,
        samplers.sgld(step_size=step_size, batch_size=1000),
        KEY,
        num_chains=4,
        num_warmup=1000,
        num_samples=num_samples,
        chunk_size=num_samples,
    )
    sd, sd_mcse = sd_and_mcse(post.draws["x"])
    bias = sd**2 / POST_VAR - 1.0
    bias_mcse = 2.0 * sd * sd_mcse / POST_VAR
    return bias.mean(), np.sqrt(np.sum(bias_mcse**2)) / DIM


def test_sgld_variance_bias_is_first_order_in_the_step_size():
    """Halving h halves SGLD's excess variance: with gradient noise from batches of B,
    the stationary variance is about the posterior's times 1 + (h / 2) lambda N / B."""
    large, large_mcse = _relative_variance_bias(8e-6, 10_000)
    small, small_mcse = _relative_variance_bias(4e-6, 10_000)
    assert small > 4 * small_mcse, "the bias must be visible at the smaller step"
    assert large - small > 4 * np.hypot(large_mcse, small_mcse), "the bias must shrink"
    order = np.log2(large / small)
    order_mcse = np.hypot(large_mcse / large, small_mcse / small) / np.log(2.0)
    assert order_mcse < 0.25, "the order must be measured to better than a quarter"
    assert abs(order - 1.0) <= 4 * order_mcse, f"order {order} +- {order_mcse}, expected 1"


# ---- A 2-D Gaussian with correlation 0.9, as a posterior with data: a flat prior and
# N points y_i with sum zero, each contributing -0.5 (y_i - x)' (P / N) (y_i - x), make the
# posterior exactly N(0, S) with precision P = S^-1.
RHO = 0.9
COV_2D = np.array([[1.0, RHO], [RHO, 1.0]])
PRECISION_2D = np.linalg.inv(COV_2D)
_points = 0.1 * np.random.default_rng(5).normal(size=(1000, 2))
POINTS_2D = (_points - _points.mean(axis=0)).astype(np.float32)


def _gaussian_log_likelihood(x, batch):
    residual = batch - x[None, :]
    weights = jnp.asarray(PRECISION_2D / POINTS_2D.shape[0], jnp.float32)
    return -0.5 * jnp.sum(residual * (residual @ weights))


GAUSSIAN_2D = inferax.Target(
    log_prior=lambda x: jnp.zeros(()),
    init=jnp.zeros(2),
    log_likelihood=_gaussian_log_likelihood,
    data=POINTS_2D,
)
STEP_2D = 0.01
BUFFER_2D = 300


def _run_2d(kernel, num_warmup=2000, num_samples=20_000):
    post = inferax.sample(
        GAUSSIAN_2D,
        kernel,
        KEY,
        num_chains=4,
        num_warmup=num_warmup,
        num_samples=num_samples,
        chunk_size=num_samples,
    )
    return post.draws["x"]


def _iat(draws):
    """Integrated autocorrelation time of each chain about its own mean, averaged over
    chains: a frozen buffer gives each chain its own centre, which a multi-chain ESS would
    count as poor mixing."""
    ess = [arviz_stats.ess(np.asarray(chain[None], np.float64), method="mean") for chain in draws]
    return np.mean([draws.shape[1] / np.asarray(e) for e in ess], axis=0)


def _within_chain_variance(draws):
    """The variance about each chain's own mean, averaged over chains, with its MCSE: with a
    frozen buffer each chain's centre depends on its buffer, so chains differ in mean."""
    sds, mcses = zip(*(sd_and_mcse(chain[None]) for chain in draws), strict=True)
    sds, mcses = np.array(sds), np.array(mcses)
    variance = np.mean(sds**2, axis=0)
    return variance, np.sqrt(np.sum((2 * sds * mcses) ** 2, axis=0)) / len(draws)


def test_structured_sgld_breaks_the_correlation_and_mixes_faster():
    structured = _run_2d(
        samplers.structured_sgld(
            step_size=STEP_2D, batch_size=100, groups=((0,), (1,)), buffer_size=BUFFER_2D
        ),
        num_warmup=20 * BUFFER_2D,
        num_samples=10_000,
    )
    plain = _run_2d(samplers.sgld(step_size=STEP_2D, batch_size=100), num_samples=10_000)
    # Each group sees the precision P11 with the other group drawn from the buffer, so the
    # marginal variance is the mean-field 1 - rho^2 = 0.19, up to the step's bias.
    expected = _structured_variance(STEP_2D)
    assert abs(expected - (1 - RHO**2)) < 0.1 * (1 - RHO**2)
    variance, variance_mcse = _within_chain_variance(structured)
    assert_within_mcse("structured_sgld variance", variance, variance_mcse, expected)
    correlations = [np.corrcoef(chain.T)[0, 1] for chain in structured]
    assert np.all(np.abs(correlations) < 0.1), f"the groups stay correlated: {correlations}"
    ratio = _iat(plain) / _iat(structured)
    assert np.all(ratio >= 5.0), f"IAT(SGLD) / IAT(structured SGLD) = {ratio}"


def _structured_variance(step_size):
    """The discretised mean-field variance: the AR(1) recursion
    x' = (1 - h P11) x - h P12 x~ + sqrt(2h) xi, with x~ drawn from a buffer of the same
    variance, gives 2 / (2 P11 - h (P11^2 + P12^2))."""
    p11, p12 = PRECISION_2D[0, 0], PRECISION_2D[0, 1]
    return 2.0 / (2.0 * p11 - step_size * (p11**2 + p12**2))


def test_structured_sgld_dropout_sits_between_sgld_and_mean_field():
    """With L=2 composites for 2 groups, half the steps keep both groups in one composite
    (an SGLD step with the exact coupling), so the marginal variance lies strictly between
    the structured value (about 0.2) and SGLD's (about 1)."""
    draws = _run_2d(
        samplers.structured_sgld(
            step_size=STEP_2D,
            batch_size=100,
            groups=((0,), (1,)),
            buffer_size=BUFFER_2D,
            dropout=2,
        ),
        num_warmup=20 * BUFFER_2D,
        num_samples=20_000,
    )
    variance, variance_mcse = _within_chain_variance(draws)
    assert np.all(variance - 4 * variance_mcse > _structured_variance(STEP_2D)), (
        variance,
        variance_mcse,
    )
    assert np.all(variance + 4 * variance_mcse < 0.9), (variance, variance_mcse)


# ---- NumPyro models.


def _regression_model(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)


def test_numpyro_model_with_data_matches_the_exact_posterior():
    target = inferax.from_numpyro(_regression_model, X, y=Y, data=("X", "y"))
    assert target.num_data == NUM_DATA
    kernel = samplers.sgld(step_size=4e-6, batch_size=1000)
    post = inferax.sample(
        target, kernel, KEY, num_chains=4, num_warmup=1000, num_samples=5000, chunk_size=5000
    )
    draws = post.draws["beta"]
    assert min_ess(draws) > 200
    mean, mcse = mean_and_mcse(draws)
    assert_within_mcse("numpyro sgld mean", mean, mcse, POST_MEAN)


def test_numpyro_data_argument_without_a_leading_axis_is_named():
    def model(X, scale, y=None):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, scale), obs=y)

    with pytest.raises(ValueError, match="argument 'scale' is a scalar"):
        inferax.from_numpyro(model, X, 1.0, y=Y, data=("X", "scale", "y"))

    def per_feature(X, prior_scale, y=None):
        beta = numpyro.sample("beta", dist.Normal(0.0, prior_scale).to_event(1))
        with numpyro.plate("data", X.shape[0]):
            numpyro.sample("y", dist.Normal(X @ beta, 1.0), obs=y)

    with pytest.raises(ValueError, match="'prior_scale' with 5"):
        inferax.from_numpyro(per_feature, X, jnp.ones(DIM), y=Y, data=("X", "prior_scale", "y"))


# ---- Bad input and numerical trouble.


def test_bad_input_is_refused_before_compiling():
    before = compile_count()
    with pytest.raises(ValueError, match="batch_size 20000 is larger than the 10000 data points"):
        inferax.sample(REGRESSION, samplers.sgld(step_size=1e-5, batch_size=20_000), KEY)
    no_split = inferax.Target.from_logdensity(lambda x: -0.5 * jnp.sum(x**2), jnp.zeros(2))
    for kernel in [
        samplers.sgld(step_size=1e-3, batch_size=10),
        samplers.sghmc(step_size=1e-3, batch_size=10, friction=1.0),
        samplers.psgld(step_size=1e-3, batch_size=10),
        samplers.sgld_cv(step_size=1e-3, batch_size=10),
        samplers.structured_sgld(step_size=1e-3, batch_size=10, groups=(0, 1), buffer_size=5),
    ]:
        with pytest.raises(ValueError, match="no data split"):
            inferax.sample(no_split, kernel, KEY)
    with pytest.raises(ValueError, match="in no group"):
        inferax.sample(
            REGRESSION,
            samplers.structured_sgld(step_size=1e-3, batch_size=10, groups=(0, 1), buffer_size=5),
            KEY,
        )
    with pytest.raises(ValueError, match="centre must be a position like target.init"):
        samplers.sgld_cv(step_size=1e-3, batch_size=10).build(REGRESSION, centre=np.zeros(3))
    assert compile_count() == before


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: samplers.sgld(step_size=0.0, batch_size=10), "step_size must be finite and > 0"),
        (lambda: samplers.sgld(step_size=1e-3, batch_size=0), "batch_size must be >= 1"),
        (lambda: samplers.sghmc(step_size=1e-3, batch_size=10, friction=-1.0), "friction"),
        (
            lambda: samplers.sghmc(step_size=1e-3, batch_size=10, friction=1.0, integrator="x"),
            "integrator must be one of",
        ),
        (lambda: samplers.psgld(step_size=1e-3, batch_size=10, decay=1.0), "decay"),
        (
            lambda: samplers.structured_sgld(
                step_size=1e-3, batch_size=10, groups=(0, 1), buffer_size=0
            ),
            "buffer_size",
        ),
    ],
)
def test_bad_settings(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_nan_gradient_marks_the_step_diverging_and_keeps_the_last_finite_position():
    """The log density is NaN beyond x = 0.15, 1.5 posterior sds above the mean: steps that
    land there are undone. The step size follows its schedule, warmup steps included."""
    points = np.random.default_rng(1).normal(size=100).astype(np.float32)
    points -= points.mean()
    target = inferax.Target(
        log_prior=lambda x: -0.5 * x**2 + 1e-3 * jnp.sqrt(0.15 - x),
        init=jnp.zeros(()),
        log_likelihood=lambda x, batch: -0.5 * jnp.sum((batch - x) ** 2),
        data=points,
    )
    schedule = optax.linear_schedule(1.0, 0.5, transition_steps=1000)
    kernel = samplers.sgld(step_size=2e-3, batch_size=10, schedule=schedule)
    post = inferax.sample(
        target, kernel, KEY, num_chains=2, num_warmup=500, num_samples=1000, chunk_size=1000
    )
    draws = post.draws["x"]
    assert np.all(np.isfinite(draws)) and np.all(draws <= 0.15)
    diverging = post.stats["diverging"]
    assert 0 < diverging.sum() < diverging.size // 2
    assert np.all(np.isfinite(post.stats["lp"]))
    assert np.all(np.isfinite(post.stats["grad_norm"][~diverging]))
    expected = 2e-3 * np.asarray(jax.vmap(schedule)(500 + np.arange(1000)))
    np.testing.assert_allclose(post.stats["step_size"][0], expected, rtol=1e-5)


# ---- Pieces.


@pytest.mark.parametrize(
    ("num_data", "batch_size"),
    [(22, 6), (256, 64)],  # 5 x 5 with cycle walking; 16 x 16 exactly, with none
)
def test_minibatch_indices_are_distinct_and_uniform(num_data, batch_size):
    num_draws = 20_000
    assert (math.prod(feistel_sizes(num_data)) == num_data) == (num_data == 256)
    keys = jax.random.split(jax.random.key(0), num_draws)
    for size in (batch_size, num_data):  # Floyd's algorithm, and the permutation path
        draws = np.asarray(
            jax.jit(jax.vmap(lambda k, s=size: minibatch_indices(k, num_data, s)))(keys)
        )
        assert np.all(np.sort(draws, axis=1)[:, 1:] != np.sort(draws, axis=1)[:, :-1])
        assert draws.min() >= 0 and draws.max() < num_data
    draws = np.asarray(
        jax.jit(jax.vmap(lambda k: minibatch_indices(k, num_data, batch_size)))(keys)
    )
    counts = np.bincount(draws.ravel(), minlength=num_data)
    p = batch_size / num_data
    # Each point is in a batch with probability B / N, independently across batches.
    assert np.all(np.abs(counts - num_draws * p) <= 4 * np.sqrt(num_draws * p * (1 - p)))
    # Pairs are uniform too: each pair is together with probability B (B-1) / (N (N-1)).
    together = np.zeros((num_data, num_data))
    for row in draws[:5000]:
        together[np.ix_(row, row)] += 1
    q = batch_size * (batch_size - 1) / (num_data * (num_data - 1))
    off_diagonal = together[~np.eye(num_data, dtype=bool)]
    assert np.all(np.abs(off_diagonal - 5000 * q) <= 5 * np.sqrt(5000 * q * (1 - q)))


def test_sgld_cv_centres_on_a_given_position():
    """A centre of one's own goes in as ``target.init`` with ``centre="init"``, or straight to
    ``build``; at the centre the control-variate gradient is the full-data gradient."""
    centre = jnp.full(DIM, 0.5)
    target = dataclasses.replace(REGRESSION, init=centre)
    kernel = samplers.sgld_cv(step_size=1e-5, batch_size=100, centre="init")
    post = inferax.sample(target, kernel, KEY, num_chains=2, num_warmup=10, num_samples=10)
    np.testing.assert_allclose(post.tuned["centre"], np.broadcast_to(centre, (2, DIM)))
    algorithm = samplers.sgld_cv(step_size=1e-5, batch_size=100).build(REGRESSION, centre=centre)
    state = algorithm.init(centre)
    np.testing.assert_allclose(
        state.logdensity_grad, jax.grad(REGRESSION.logdensity)(centre), rtol=1e-5
    )


def test_configs_are_hashable_and_equal_by_settings():
    assert samplers.sgld_cv(step_size=1e-3, batch_size=5) == samplers.sgld_cv(
        step_size=1e-3, batch_size=5
    )
    a = samplers.sgld_cv(step_size=1e-3, batch_size=5, centre="init")
    assert hash(a) == hash(samplers.sgld_cv(step_size=1e-3, batch_size=5, centre="init"))
    assert a != samplers.sgld_cv(step_size=1e-3, batch_size=5, centre="mode")
    # A centre array is a tuned value, not a setting: the config refuses it.
    with pytest.raises(TypeError, match="tuned value"):
        samplers.sgld_cv(step_size=1e-3, batch_size=5, centre=np.zeros(DIM))
    groups = [[0, 1], [2, 3, 4]]
    b = samplers.structured_sgld(step_size=1e-3, batch_size=5, groups=groups, buffer_size=3)
    assert b.groups == ((0, 1), (2, 3, 4))
    assert hash(b) == hash(
        samplers.structured_sgld(step_size=1e-3, batch_size=5, groups=groups, buffer_size=3)
    )
    hash(samplers.sgld(step_size=optax.constant_schedule(1e-3), batch_size=5))
