"""Bundled NumPyro models and data, for the demo, the docs and the benchmarks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from inferax.target import Target

# posteriordb's `eight_schools` data (github stan-dev/posteriordb,
# posterior_database/data/data/eight_schools.json), copied unchanged.
EIGHT_SCHOOLS = {
    "J": 8,
    "y": np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]),
    "sigma": np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
}


def eight_schools_noncentered(J, sigma, y=None):
    """Eight schools, non-centred: ``theta = mu + tau * theta_tilde``.

    Rubin, "Estimation in parallel randomized experiments", 1981; Gelman et al.,
    "Bayesian Data Analysis", 3rd ed., section 5.5.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def logistic_regression(X, y=None):
    """Bayesian logistic regression with a standard normal prior on the weights and bias."""
    num_features = X.shape[1]
    w = numpyro.sample("w", dist.Normal(jnp.zeros(num_features), 1.0).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=X @ w + b), obs=y)


def synthetic_logistic_data(rng_key, num_data: int, num_features: int):
    """Features ~ N(0, 1), true weights ~ N(0, 1), labels drawn from the logistic model."""
    x_key, w_key, y_key = jax.random.split(rng_key, 3)
    X = jax.random.normal(x_key, (num_data, num_features))
    w = jax.random.normal(w_key, (num_features,))
    y = jax.random.bernoulli(y_key, jax.nn.sigmoid(X @ w)).astype(jnp.int32)
    return np.asarray(X), np.asarray(y), np.asarray(w)


# Test energies for 2-D variational inference. Each target's log density is -U(z) for one
# flat point z = (z1, z2); log Z is that density's log normaliser.


def _w1(z1):
    return jnp.sin(jnp.pi * z1 / 2)


def _w2(z1):
    return 3.0 * jnp.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1):
    return 3.0 * jax.nn.sigmoid((z1 - 1.0) / 0.3)


_ENVELOPE_SCALE = 4.0


def _envelope(z1):
    # U2-U4 as published do not decay in z1 and cannot be normalised; this Gaussian
    # envelope makes them proper.
    return 0.5 * (z1 / _ENVELOPE_SCALE) ** 2


def _u1(z):
    radius = jnp.sqrt(jnp.sum(z**2))
    return 0.5 * ((radius - 2.0) / 0.4) ** 2 - jnp.logaddexp(
        -0.5 * ((z[0] - 2.0) / 0.6) ** 2, -0.5 * ((z[0] + 2.0) / 0.6) ** 2
    )


def _u2(z):
    return 0.5 * ((z[1] - _w1(z[0])) / 0.4) ** 2 + _envelope(z[0])


def _u3(z):
    gap = z[1] - _w1(z[0])
    return -jnp.logaddexp(
        -0.5 * (gap / 0.35) ** 2, -0.5 * ((gap + _w2(z[0])) / 0.35) ** 2
    ) + _envelope(z[0])


def _u4(z):
    gap = z[1] - _w1(z[0])
    return -jnp.logaddexp(
        -0.5 * (gap / 0.4) ** 2, -0.5 * ((gap + _w3(z[0])) / 0.35) ** 2
    ) + _envelope(z[0])


def _energy_target(energy):
    return Target.from_logdensity(lambda z: -energy(z), jnp.zeros(2))


def energy_u1():
    """Rezende & Mohamed's U1, a ring with two modes:
    ``((|z| - 2)/0.4)^2/2 - log(exp(-((z1-2)/0.6)^2/2) + exp(-((z1+2)/0.6)^2/2))``.

    The ``logaddexp`` is exact, with no ``+1e-10``. log Z = 1.8775 (``ENERGY_LOG_Z``).

    References:
      Rezende, Mohamed, "Variational Inference with Normalizing Flows", 2015, table 1.
    """
    return _energy_target(_u1)


def energy_u2():
    """Rezende & Mohamed's U2, ``((z2 - w1)/0.4)^2/2`` with ``w1 = sin(pi z1/2)``, plus
    the envelope ``z1^2/(2 * 4^2)`` that ours adds: as published it does not decay in
    ``z1`` and cannot be normalised. log Z = 2.3074 (``ENERGY_LOG_Z``)."""
    return _energy_target(_u2)


def energy_u3():
    """Rezende & Mohamed's U3,
    ``-log(exp(-((z2-w1)/0.35)^2/2) + exp(-((z2-w1+w2)/0.35)^2/2))`` with
    ``w2 = 3 exp(-((z1-1)/0.6)^2/2)``, plus the envelope ``z1^2/(2 * 4^2)`` that ours adds
    (as published it cannot be normalised). log Z = 2.8670 (``ENERGY_LOG_Z``)."""
    return _energy_target(_u3)


def energy_u4():
    """Rezende & Mohamed's U4,
    ``-log(exp(-((z2-w1)/0.4)^2/2) + exp(-((z2-w1+w3)/0.35)^2/2))`` with
    ``w3 = 3 sigmoid((z1-1)/0.3)``, plus the envelope ``z1^2/(2 * 4^2)`` that ours adds
    (as published it cannot be normalised). log Z = 2.9360 (``ENERGY_LOG_Z``)."""
    return _energy_target(_u4)


def _banana(z):
    # z1 ~ N(0, 2^2), z2 | z1 ~ N(0.25 (z1^2 - 4), 1): normalised, log Z = 0.
    mean = 0.25 * (z[0] ** 2 - 4.0)
    return jax.scipy.stats.norm.logpdf(z[0], 0.0, 2.0) + jax.scipy.stats.norm.logpdf(
        z[1], mean, 1.0
    )


def _funnel(z):
    # Neal's funnel in 2-D: v ~ N(0, 3^2), x | v ~ N(0, exp(v/2)^2); log Z = 0.
    return jax.scipy.stats.norm.logpdf(z[0], 0.0, 3.0) + jax.scipy.stats.norm.logpdf(
        z[1], 0.0, jnp.exp(z[0] / 2.0)
    )


_MIXTURE_MEANS = np.array([[2.0, 2.0], [-2.0, 2.0], [-2.0, -2.0], [2.0, -2.0]])


def _mixture(z):
    # An equal mixture of four N(m, 0.5^2 I) at (+-2, +-2); log Z = 0.
    log_components = jnp.sum(
        jax.scipy.stats.norm.logpdf(z[None, :], jnp.asarray(_MIXTURE_MEANS), 0.5), axis=1
    )
    return jax.scipy.special.logsumexp(log_components) - jnp.log(4.0)


_CROSS_MEANS = np.array([[0.0, 2.0], [-2.0, 0.0], [2.0, 0.0], [0.0, -2.0]])
_CROSS_SCALES = np.array([[0.15, 1.0], [1.0, 0.15], [1.0, 0.15], [0.15, 1.0]])


def _cross(z):
    # An equal mixture of four narrow Gaussians in a cross; log Z = 0.
    log_components = jnp.sum(
        jax.scipy.stats.norm.logpdf(
            z[None, :], jnp.asarray(_CROSS_MEANS), jnp.asarray(_CROSS_SCALES)
        ),
        axis=1,
    )
    return jax.scipy.special.logsumexp(log_components) - jnp.log(4.0)


def _double_well(z):
    # Unnormalised: wells at z1 = +-sqrt(2), barrier 2 high; log Z by quadrature.
    return -0.5 * (z[0] ** 2 - 2.0) ** 2 - 0.5 * z[1] ** 2


def banana():
    """A banana: ``z1 ~ N(0, 2^2)``, ``z2 | z1 ~ N((z1^2 - 4)/4, 1)``; normalised, log Z = 0."""
    return Target.from_logdensity(_banana, jnp.zeros(2))


def funnel():
    """Neal's funnel in 2-D: ``v ~ N(0, 3^2)``, ``x | v ~ N(0, exp(v))``; log Z = 0.

    References:
      Neal, "Slice sampling", 2003.
    """
    return Target.from_logdensity(_funnel, jnp.zeros(2))


def mixture_2d():
    """An equal mixture of four ``N(m, 0.5^2 I)`` at ``(+-2, +-2)``; log Z = 0."""
    return Target.from_logdensity(_mixture, jnp.zeros(2))


def cross():
    """The cross of Xu, Chen, Campbell's MixFlows paper: an equal mixture of
    ``N((0, 2), diag(.15^2, 1))``, ``N((-2, 0), diag(1, .15^2))``,
    ``N((2, 0), diag(1, .15^2))`` and ``N((0, -2), diag(.15^2, 1))``; log Z = 0."""
    return Target.from_logdensity(_cross, jnp.zeros(2))


def double_well():
    """A 2-D double well, ``log p = -(z1^2 - 2)^2/2 - z2^2/2`` (unnormalised): two modes at
    ``z1 = +-sqrt(2)`` behind a barrier of 2."""
    return Target.from_logdensity(_double_well, jnp.zeros(2))


ENERGY_LOG_Z = {
    "u1": 1.8775,
    "u2": 2.3074,
    "u3": 2.8670,
    "u4": 2.9360,
    "banana": 0.0,
    "funnel": 0.0,
    "mixture_2d": 0.0,
    "cross": 0.0,
}
"""log Z of the test energies: U1-U4 by quadrature on [-14, 14]^2, the others normalised."""

ENERGIES = {
    "u1": energy_u1,
    "u2": energy_u2,
    "u3": energy_u3,
    "u4": energy_u4,
    "banana": banana,
    "funnel": funnel,
    "mixture_2d": mixture_2d,
    "cross": cross,
}
"""The test energies by name: functions that make each ``Target``."""
