"""Markov-approximate fBM: the speeds, the closed-form optimal weights (checked against the
variance table of issue 7 in closed form and by Monte Carlo), their derivative in H, the
stable ``Q(a, x) e^x``, and the exact bridge variance under the approximate prior."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

fbm = importlib.import_module("inferax.variational.sde.fbm")

TYPE_II_VARIANCE = {0.3: 1.870, 0.5: 2.000, 0.7: 2.233, 0.9: 2.455}
"""Issue 7's table: the type II approximation's variance at T=2, K=5, gamma_max=20."""

BRIDGE_VARIANCE = {0.2: 1.181, 0.3: 0.836, 0.5: 0.482, 0.7: 0.298, 0.9: 0.174}
"""Issue 7's bridge: posterior variance of X(1) given X(2) = 0 (noise sd 0.1), type I on
T=6, under the Markov-approximate prior."""


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def test_speeds_are_geometric_between_inverse_and_gamma_max():
    speeds = np.asarray(fbm.gammas(5, 20.0))
    np.testing.assert_allclose(speeds[[0, -1]], [1 / 20.0, 20.0], rtol=1e-12)
    np.testing.assert_allclose(speeds[1:] / speeds[:-1], 20.0 ** 0.5, rtol=1e-12)


@pytest.mark.parametrize("hurst", sorted(TYPE_II_VARIANCE))
def test_type_ii_variance_matches_the_table_in_closed_form(hurst):
    speeds = fbm.gammas(5, 20.0)
    approximate = float(fbm.approximate_variance(hurst, speeds, 2.0, "II"))
    assert abs(approximate - TYPE_II_VARIANCE[hurst]) < 1e-2
    exact = float(fbm.exact_variance(hurst, 2.0, "II"))
    assert abs(exact - {0.3: 1.864, 0.5: 2.000, 0.7: 2.236, 0.9: 2.457}[hurst]) < 1e-3


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_type_ii_variance_by_monte_carlo_of_the_sde(hurst):
    speeds = fbm.gammas(5, 20.0)
    paths = fbm.sample_paths(jax.random.key(0), hurst, speeds, jnp.linspace(0.0, 2.0, 41),
                             20000, "II")  # fmt: skip
    end = np.asarray(paths[:, -1])
    variance, se = end.var(ddof=1), end.var(ddof=1) * np.sqrt(2.0 / (end.size - 1))
    assert abs(variance - TYPE_II_VARIANCE[hurst]) < 3 * se, (variance, se)


def _bridge_variance(hurst):
    # X = sum_k omega_k (Y_k - Y_k(0)) is Gaussian; with stationary Y, Cov(Y_i(a), Y_j(b))
    # = exp(-gamma_j (b - a)) / (gamma_i + gamma_j) for b >= a.
    speeds = fbm.gammas(5, 20.0)
    weights = fbm.omega(hurst, speeds, 6.0, "I")
    gi, gj = speeds[:, None], speeds[None, :]

    def cross(a, b):
        return jnp.where(b >= a, jnp.exp(-gj * (b - a)), jnp.exp(-gi * (a - b))) / (gi + gj)

    def cov(s, t):
        return weights @ (cross(s, t) - cross(s, 0.0) - cross(0.0, t) + cross(0.0, 0.0)) @ weights

    return float(cov(1.0, 1.0) - cov(1.0, 2.0) ** 2 / (cov(2.0, 2.0) + 0.1**2))


@pytest.mark.parametrize("hurst", sorted(BRIDGE_VARIANCE))
def test_type_i_bridge_variance_under_the_approximate_prior(hurst):
    assert abs(_bridge_variance(hurst) - BRIDGE_VARIANCE[hurst]) < 2e-3


def test_omega_is_differentiable_in_hurst():
    speeds = fbm.gammas(5, 20.0)
    for kind in fbm.KINDS:
        jacobian = jax.jacobian(lambda h, k=kind: fbm.omega(h, speeds, 6.0, k))(0.7)
        step = 1e-6
        difference = (fbm.omega(0.7 + step, speeds, 6.0, kind)
                      - fbm.omega(0.7 - step, speeds, 6.0, kind)) / (2 * step)  # fmt: skip
        np.testing.assert_allclose(jacobian, difference, rtol=1e-5, atol=1e-6)


def test_upper_gamma_times_exp_is_stable_for_large_arguments():
    for a, x in ((0.8, 3.0), (1.2, 50.0), (1.4, 400.0), (0.7, 0.5), (1.6, 650.0)):
        want = scipy.special.gammaincc(a, x) * np.exp(x)
        np.testing.assert_allclose(fbm.upper_gamma_times_exp(a, x), want, rtol=1e-10)
    assert np.isfinite(fbm.upper_gamma_times_exp(1.2, 5000.0))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="num_processes"):
        fbm.gammas(1, 20.0)
    with pytest.raises(ValueError, match="gamma_max"):
        fbm.gammas(5, 0.5)
    with pytest.raises(ValueError, match="kind"):
        fbm.omega(0.5, fbm.gammas(5, 20.0), 2.0, kind="III")
