"""MixFlows: the map is invertible to round-off in float64, the density is normalised and
equals its brute-force O(N^2) definition, the O(N) orbit ELBO equals the average of
``log pi_bar - log q_N`` along the orbit, and the cross target's ELBO table of Xu, Chen,
Campbell (2023) reproduces."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import inferax
from inferax import examples, variational

mixflow_module = importlib.import_module("inferax.variational.mixflow")

CROSS_REFERENCE = ((0.0144, -0.0323), (0.1611, 1.9906))
"""The paper's mean-field reference for the cross (mean, scale)."""

PAPER_CROSS_ELBO = {100: -0.507, 200: -0.414}
PAPER_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def cross():
    return examples.cross()


def _mixture_1d(x):
    return jnp.logaddexp(
        jax.scipy.stats.norm.logpdf(x[0], -1.0, 0.5), jax.scipy.stats.norm.logpdf(x[0], 1.5, 0.7)
    ) - math.log(2.0)


@pytest.fixture(scope="module")
def flow_1d():
    target = inferax.Target.from_logdensity(_mixture_1d, jnp.zeros(1))
    return variational.mixflow(
        target, num_flows=5, leapfrog_steps=1, step_size=0.2, reference=((0.0,), (1.5,))
    )


def test_round_trip_at_1000_applications_is_below_1e_8(cross):
    flow = variational.mixflow(cross, num_flows=1000, reference=CROSS_REFERENCE)
    states = flow.sample_augmented(jax.random.key(0), 4)
    assert states.x.dtype == jnp.float64
    assert flow.round_trip_error(states, 1000) < 1e-8
    assert jnp.zeros(1).dtype == jnp.float32  # x64 stayed inside the family


def test_density_integrates_to_one_at_each_u(flow_1d):
    # The u-marginal of q_N stays uniform (T shifts u by a constant), so for each u the
    # density of (x, rho) integrates to 1. A trapezoid rule on a fine grid. One leapfrog
    # step per map keeps the density's discontinuities (from sign(rho)) few enough for the
    # rule: with 10, the integral moved with the grid by a few 1e-3.
    xs = np.linspace(-12.0, 12.0, 801)
    rhos = np.linspace(-25.0, 25.0, 2001)
    grid_x, grid_rho = (a.ravel() for a in np.meshgrid(xs, rhos, indexing="ij"))
    for u in (0.3, 0.8):
        states = variational.MixFlowState(
            grid_x[:, None], grid_rho[:, None], np.full(grid_x.shape, u)
        )
        density = np.exp(np.asarray(flow_1d.log_prob_augmented(states))).reshape(
            xs.size, rhos.size
        )
        total = np.trapezoid(np.trapezoid(density, rhos, axis=1), xs)
        assert abs(total - 1.0) < 2e-3, (u, total)


def test_density_equals_its_brute_force_definition(flow_1d):
    states = flow_1d.sample_augmented(jax.random.key(1), 8)
    got = np.asarray(flow_1d.log_prob_augmented(states))
    with jax.enable_x64(True):
        grad = jax.grad(lambda x: _mixture_1d(x))
        mean, scale = jnp.asarray(flow_1d.mean), jnp.asarray(flow_1d.scale)

        def log_q0(state):
            x, rho, _ = state
            return jnp.sum(
                jax.scipy.stats.norm.logpdf(x, mean, scale)
            ) + mixflow_module.laplace_logpdf(rho)

        for i in range(states.u.shape[0]):
            start = (states.x[i], states.rho[i], states.u[i])
            terms = []
            for n in range(flow_1d.num_flows):  # T^-n s from scratch for each n: O(N^2)
                state, log_jac_sum = start, 0.0
                for _ in range(n):
                    state, log_jac = mixflow_module.inverse_step(grad, state, 0.2, 1)
                    log_jac_sum += log_jac
                terms.append(log_q0(state) - log_jac_sum)
            want = jax.scipy.special.logsumexp(jnp.stack(terms)) - math.log(flow_1d.num_flows)
            np.testing.assert_allclose(got[i], want, rtol=0, atol=1e-10)


def test_orbit_elbo_is_the_orbit_average_of_log_pi_bar_minus_log_q(flow_1d):
    key = jax.random.key(2)
    terms = flow_1d.elbo_terms(key, 3)
    with jax.enable_x64(True):
        grad = jax.grad(lambda x: _mixture_1d(x))
        mean, scale = jnp.asarray(flow_1d.mean), jnp.asarray(flow_1d.scale)
        for i, draw_key in enumerate(jax.random.split(key, 3)):
            # The same reference draw the estimator makes from this key.
            state = mixflow_module.reference_draw(mean, scale, draw_key)
            orbit = [state]
            for _ in range(flow_1d.num_flows - 1):
                state = mixflow_module.forward_step(grad, state, 0.2, 1)[0]
                orbit.append(state)
            stacked = variational.MixFlowState(*(jnp.stack(a) for a in zip(*orbit, strict=True)))
            log_q = flow_1d.log_prob_augmented(stacked)
            log_pi_bar = jax.vmap(_mixture_1d)(stacked.x) + jax.vmap(
                mixflow_module.laplace_logpdf
            )(stacked.rho)
            np.testing.assert_allclose(terms[i], jnp.mean(log_pi_bar - log_q), atol=1e-9)


@pytest.mark.parametrize("num_flows", sorted(PAPER_CROSS_ELBO))
def test_cross_elbo_reproduces_the_paper(cross, num_flows):
    flow = variational.mixflow(
        cross, num_flows=num_flows, leapfrog_steps=60, step_size=0.0035, reference=CROSS_REFERENCE
    )
    elbo, se = flow.elbo(jax.random.key(3), 1000)
    assert abs(elbo - PAPER_CROSS_ELBO[num_flows]) < PAPER_TOLERANCE, (elbo, se)


def test_fit_fits_the_reference_and_tune_picks_the_best_step(cross):
    flow = variational.mixflow(cross, num_flows=20)
    key = jax.random.key(4)
    settings = {"optimizer": optax.adam(1e-2), "num_steps": 500, "num_particles": 8}
    approx = variational.fit(cross, flow, key, progress=False, **settings)
    gaussian = variational.fit(
        cross, variational.meanfield_gaussian(), key, progress=False, **settings
    )
    # A MixFlow's fit is an Approximation like any other, whose family is the MixFlow
    # with its reference fitted exactly as the mean-field Gaussian alone would be.
    assert isinstance(approx, variational.Approximation)
    fitted = approx.family
    assert isinstance(fitted, variational.MixFlow)
    np.testing.assert_allclose(fitted.mean, gaussian.params["loc"], rtol=1e-6)
    np.testing.assert_allclose(fitted.scale, gaussian.family.scale(), rtol=1e-6)
    np.testing.assert_array_equal(approx.losses, gaussian.losses)
    assert np.isfinite(approx.khat)
    draws = approx.sample(jax.random.key(7), 10)
    assert draws.shape == (10, 2) and np.all(np.isfinite(draws))
    with pytest.raises(NotImplementedError, match="closed form"):
        approx.log_prob(draws)
    steps = [0.0035, 0.02, 0.3]
    tuned = fitted.tune(jax.random.key(5), steps, num_draws=50)
    scores = [
        variational.mixflow(cross, 20, 60, h, (fitted.mean, fitted.scale)).elbo(
            jax.random.key(5), 50
        )[0]
        for h in steps
    ]
    assert tuned.step_size == steps[int(np.argmax(scores))]
    draws = tuned.sample_augmented(jax.random.key(6), 10).x
    assert draws.shape == (10, 2) and np.all(np.isfinite(draws))


def test_bad_input_is_refused(cross):
    with pytest.raises(ValueError, match="num_flows"):
        variational.mixflow(cross, num_flows=0)
    with pytest.raises(ValueError, match="step_size"):
        variational.mixflow(cross, step_size=-1.0)
    with pytest.raises(ValueError, match="reference"):
        variational.mixflow(cross, reference=((0.0,), (1.0,)))
    with pytest.raises(ValueError, match="reference"):
        variational.mixflow(cross, reference=((0.0, 0.0), (1.0, 0.0)))
    with pytest.raises(ValueError, match="no reference"):
        variational.mixflow(cross).sample_augmented(jax.random.key(0), 3)
    with pytest.raises(TypeError, match="target"):
        variational.mixflow(lambda x: x)
    other = examples.cross()
    with pytest.raises(ValueError, match="another target"):
        variational.fit(
            other,
            variational.mixflow(cross),
            jax.random.key(0),
            optimizer=optax.adam(1e-2),
            num_steps=5,
            progress=False,
        )
