"""posteriordb posteriors translated to NumPyro, with their data and the parameters they report.

Each model follows its Stan program line for line: the same priors, the same constraints, and
a flat prior (`dist.ImproperUniform` on the parameter's constraint) wherever Stan states none.
A transformed parameter that the reference reports is a `numpyro.deterministic` site. Stan
names carry over, so a reported element such as `theta[2]` is site `theta`, index 1.

`POSTERIORS` maps each posterior's posteriordb name to a `Posterior`: the model, a loader for
its arguments and the reported elements. Data are read from `data/` next to this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


def load_data(name: str) -> dict:
    with open(os.path.join(DATA_DIR, f"{name}.json")) as f:
        return json.load(f)


def flat(constraint, *shape: int) -> dist.ImproperUniform:
    """Stan's unstated prior: uniform over the parameter's constrained space."""
    return dist.ImproperUniform(constraint, (), shape)


def half_student_t(df: float, scale: float) -> dist.Distribution:
    """Stan's `student_t(df, 0, scale)` on a `<lower=0>` parameter, normalised as brms does."""
    return dist.FoldedDistribution(dist.StudentT(df, 0.0, scale))


# Hierarchical -----------------------------------------------------------------------------


def eight_schools_noncentered(J, sigma, y=None):
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([J]))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta = numpyro.deterministic("theta", theta_trans * tau + mu)
    numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


# Gaussian processes -----------------------------------------------------------------------


def gp_pois_regr(x, k=None):
    n = x.shape[0]
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([n]))
    cov = alpha**2 * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / rho**2)
    cov = cov + 1e-10 * jnp.eye(n)
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)), obs=k)


def _approximate_gp(X, slambda, sdgp, lscale, zgp):
    # Hilbert-space GP: basis functions X scaled by the square root of the exponentiated
    # quadratic kernel's spectral density at the square roots of the eigenvalues (D = 1).
    spd = sdgp**2 * jnp.sqrt(2 * jnp.pi) * lscale * jnp.exp(-0.5 * lscale**2 * slambda**2)
    return X @ (jnp.sqrt(spd) * zgp)


def accel_gp(Xgp_1, slambda_1, Xgp_sigma_1, slambda_sigma_1, Y=None):
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, -13.0, 36.0))
    sdgp_1 = numpyro.sample("sdgp_1", half_student_t(3.0, 36.0))
    lscale_1 = numpyro.sample("lscale_1", dist.InverseGamma(1.124909, 0.0177))
    zgp_1 = numpyro.sample("zgp_1", dist.Normal(0.0, 1.0).expand([Xgp_1.shape[1]]))
    intercept_sigma = numpyro.sample("Intercept_sigma", dist.StudentT(3.0, 0.0, 10.0))
    sdgp_sigma_1 = numpyro.sample("sdgp_sigma_1", half_student_t(3.0, 36.0))
    lscale_sigma_1 = numpyro.sample("lscale_sigma_1", dist.InverseGamma(1.124909, 0.0177))
    zgp_sigma_1 = numpyro.sample(
        "zgp_sigma_1", dist.Normal(0.0, 1.0).expand([Xgp_sigma_1.shape[1]])
    )
    mu = intercept + _approximate_gp(Xgp_1, slambda_1, sdgp_1, lscale_1, zgp_1)
    log_sigma = intercept_sigma + _approximate_gp(
        Xgp_sigma_1, slambda_sigma_1, sdgp_sigma_1, lscale_sigma_1, zgp_sigma_1
    )
    numpyro.sample("Y", dist.Normal(mu, jnp.exp(log_sigma)), obs=Y)


# Mixtures and hidden Markov models --------------------------------------------------------


def low_dim_gauss_mix(y=None):
    mu = numpyro.sample("mu", flat(constraints.ordered_vector, 2))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    numpyro.factor("mu_prior", dist.Normal(0.0, 2.0).log_prob(mu).sum())
    # Stan's log_mix(theta, component 1, component 2), one mixture per data point.
    n = y.shape[0]
    weights = dist.Categorical(probs=jnp.broadcast_to(jnp.stack([theta, 1.0 - theta]), (n, 2)))
    components = dist.Normal(jnp.broadcast_to(mu, (n, 2)), jnp.broadcast_to(sigma, (n, 2)))
    numpyro.sample("y", dist.MixtureSameFamily(weights, components), obs=y)


def hmm_example(K, y):
    theta1 = numpyro.sample("theta1", flat(constraints.simplex, K))
    theta2 = numpyro.sample("theta2", flat(constraints.simplex, K))
    mu = numpyro.sample("mu", flat(constraints.positive_ordered_vector, K))
    numpyro.factor("mu_prior", dist.Normal(jnp.array([3.0, 10.0]), 1.0).log_prob(mu).sum())
    log_theta = jnp.log(jnp.stack([theta1, theta2]))  # row j: transitions out of state j
    emission = dist.Normal(mu[None, :], 1.0).log_prob(y[:, None])  # (N, K)

    def forward(gamma, emission_t):
        gamma = jax.nn.logsumexp(gamma[:, None] + log_theta, axis=0) + emission_t
        return gamma, None

    gamma, _ = jax.lax.scan(forward, emission[0], emission[1:])
    numpyro.factor("forward", jax.nn.logsumexp(gamma))


# Time series ------------------------------------------------------------------------------


def arK(K, y):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    T = y.shape[0]
    lags = jnp.stack([y[K - k : T - k] for k in range(1, K + 1)], axis=1)  # y[t - k]
    numpyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y[K:])


def arma11(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))

    def step(err, y_pair):
        y_prev, y_t = y_pair
        nu = mu + phi * y_prev + theta * err
        return y_t - nu, nu

    err_1 = y[0] - (mu + phi * mu)
    _, nu_rest = jax.lax.scan(step, err_1, (y[:-1], y[1:]))
    nu = jnp.concatenate([jnp.reshape(mu + phi * mu, (1,)), nu_rest])
    # Stan writes err ~ normal(0, sigma) with err = y - nu: the same density as y ~ normal(nu).
    numpyro.sample("y", dist.Normal(nu, sigma), obs=y)


def garch11(sigma1, y):
    mu = numpyro.sample("mu", flat(constraints.real))
    alpha0 = numpyro.sample("alpha0", flat(constraints.positive))
    alpha1 = numpyro.sample("alpha1", flat(constraints.unit_interval))
    # Stan's `<lower=0, upper=(1 - alpha1)>` as Stan applies it: a unit-interval parameter
    # scaled by 1 - alpha1, plus the log Jacobian of the scaling. NumPyro 0.22 gets a support
    # that depends on another site wrong: `flat(constraints.interval(0, 1 - alpha1))` returns
    # draws with alpha1 + beta1 > 1.
    beta1_unit = numpyro.sample("beta1_unit", flat(constraints.unit_interval))
    beta1 = numpyro.deterministic("beta1", (1.0 - alpha1) * beta1_unit)
    numpyro.factor("beta1_jacobian", jnp.log1p(-alpha1))

    def step(sigma_prev, y_prev):
        sigma_t = jnp.sqrt(alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * sigma_prev**2)
        return sigma_t, sigma_t

    _, sigma_rest = jax.lax.scan(step, jnp.asarray(sigma1, y.dtype), y[:-1])
    sigma = jnp.concatenate([jnp.full((1,), sigma1, y.dtype), sigma_rest])
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


# ODE --------------------------------------------------------------------------------------


def _dz_dt(z, theta):
    u, v = z[0], z[1]
    alpha, beta, gamma, delta = theta[0], theta[1], theta[2], theta[3]
    return jnp.stack([(alpha - beta * v) * u, (-gamma + delta * u) * v])


def _solve_lotka_volterra(z_init, theta, ts, substeps: int = 20):
    """The populations at unit-spaced times ts = 1, 2, ..., N by classical Runge-Kutta.

    Stan integrates with RK45 to a relative tolerance of 1e-5; fixed steps of 1/20 reach
    that accuracy here, and their gradient costs one pass back through the same steps.
    """
    h = 1.0 / substeps

    def rk4(z, _):
        k1 = _dz_dt(z, theta)
        k2 = _dz_dt(z + 0.5 * h * k1, theta)
        k3 = _dz_dt(z + 0.5 * h * k2, theta)
        k4 = _dz_dt(z + h * k3, theta)
        return z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    def one_unit(z, _):
        z, _ = jax.lax.scan(rk4, z, None, length=substeps)
        return z, z

    _, z = jax.lax.scan(one_unit, z_init, None, length=ts.shape[0])
    return z


def lotka_volterra(ts, y_init, y):
    # Stan's `<lower=0>` with a normal prior is a normal truncated at 0, up to a constant.
    loc, scale = jnp.array([1.0, 0.05, 1.0, 0.05]), jnp.array([0.5, 0.05, 0.5, 0.05])
    theta = numpyro.sample("theta", dist.TruncatedNormal(loc, scale, low=0.0))
    z_init = numpyro.sample("z_init", dist.LogNormal(jnp.log(10.0), 1.0).expand([2]))
    sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0).expand([2]))
    z = _solve_lotka_volterra(z_init, theta, ts)
    numpyro.sample("y_init", dist.LogNormal(jnp.log(z_init), sigma), obs=y_init)
    # A draw from the prior can make the solution blow up; Stan rejects such a point, and so
    # does NUTS on its nan density, but NumPyro's argument check would raise while tracing.
    with numpyro.validation_enabled(False):
        numpyro.sample("y", dist.LogNormal(jnp.log(z), sigma[None, :]), obs=y)


# Linear regressions -----------------------------------------------------------------------


def kidscore_momiq(mom_iq, kid_score=None):
    beta = numpyro.sample("beta", flat(constraints.real, 2))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    numpyro.sample("kid_score", dist.Normal(beta[0] + beta[1] * mom_iq, sigma), obs=kid_score)


def logearn_height(height, log_earn=None):
    beta = numpyro.sample("beta", flat(constraints.real, 2))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("log_earn", dist.Normal(beta[0] + beta[1] * height, sigma), obs=log_earn)


def logmesquite(X, log_weight=None):
    beta = numpyro.sample("beta", flat(constraints.real, 7))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("log_weight", dist.Normal(beta[0] + X @ beta[1:], sigma), obs=log_weight)


def kilpisjarvi(x, pmualpha, psalpha, pmubeta, psbeta, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def blr(X, y=None):
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([X.shape[1]]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(X @ beta, sigma), obs=y)


def nes(X, partyid7=None):
    beta = numpyro.sample("beta", flat(constraints.real, 9))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("partyid7", dist.Normal(beta[0] + X @ beta[1:], sigma), obs=partyid7)


def diamonds(Xc, Y=None):
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([Xc.shape[1]]))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", half_student_t(3.0, 10.0))
    numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=Y)


# GLMs and a correlation matrix, with long NumPyro runs as their reference -------------------


def wells_dist(dist_, switched=None):
    beta = numpyro.sample("beta", flat(constraints.real, 2))
    numpyro.sample("switched", dist.Bernoulli(logits=beta[0] + beta[1] * dist_), obs=switched)


def glm_poisson(year, C=None):
    alpha = numpyro.sample("alpha", flat(constraints.interval(-20.0, 20.0)))
    beta1 = numpyro.sample("beta1", flat(constraints.interval(-10.0, 10.0)))
    beta2 = numpyro.sample("beta2", flat(constraints.interval(-10.0, 10.0)))
    beta3 = numpyro.sample("beta3", flat(constraints.interval(-10.0, 10.0)))
    log_lambda = alpha + beta1 * year + beta2 * year**2 + beta3 * year**3
    numpyro.sample("C", dist.Poisson(jnp.exp(log_lambda)), obs=C)


def negbin_regression(X, y=None):
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.5).expand([X.shape[1]]))
    phi = numpyro.sample("phi", dist.Exponential(1.0))
    mean = jnp.exp(alpha + X @ beta)
    numpyro.sample("y", dist.NegativeBinomial2(mean, phi), obs=y)


def mvn_lkj(y):
    d = y.shape[1]
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0).expand([d]))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.5).expand([d]))
    L = numpyro.sample("L", dist.LKJCholesky(d, 2.0))
    numpyro.deterministic("Omega", L @ L.T)
    numpyro.sample("y", dist.MultivariateNormal(mu, scale_tril=sigma[:, None] * L), obs=y)


def make_synthetic_data() -> dict[str, dict]:
    """The data of the two synthetic posteriors, drawn with fixed numpy seeds."""
    rng = np.random.default_rng(20240501)
    n = 200
    X = rng.normal(size=(n, 2))
    mean = np.exp(1.0 + X @ np.array([0.5, -0.3]))
    phi = 3.0
    y = rng.negative_binomial(phi, phi / (phi + mean))
    negbin = {"N": n, "X": X.round(6).tolist(), "y": y.tolist()}
    rng = np.random.default_rng(20240502)
    omega = np.array([[1.0, 0.6, -0.3], [0.6, 1.0, 0.2], [-0.3, 0.2, 1.0]])
    scales = np.array([1.0, 2.0, 0.5])
    cov = omega * np.outer(scales, scales)
    draws = rng.multivariate_normal(np.array([0.0, 1.0, -1.0]), cov, size=60)
    mvn = {"N": 60, "D": 3, "y": draws.round(6).tolist()}
    return {"synthetic_negbin": negbin, "synthetic_mvn": mvn}


# Registry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Posterior:
    """A posterior: a NumPyro model, a loader of its (args, kwargs) and its reported elements.

    `reference` says where `reference.json`'s mean and sd for it come from: `"posteriordb"`
    (Stan's reference draws) or `"numpyro"` (a long NumPyro NUTS run, `--make-reference`).
    A `slow` posterior runs only when named: NUTS needs trees of ~1000 steps on it.
    """

    model: Callable
    load: Callable[[], tuple[tuple, dict]]
    params: tuple[str, ...]
    reference: str = "posteriordb"
    slow: bool = False


def _f(values) -> jnp.ndarray:
    return jnp.asarray(np.asarray(values, dtype=np.float64))


def _i(values) -> jnp.ndarray:
    return jnp.asarray(np.asarray(values, dtype=np.int32))


def _indexed(name: str, *sizes: int) -> tuple[str, ...]:
    if len(sizes) == 1:
        return tuple(f"{name}[{i}]" for i in range(1, sizes[0] + 1))
    return tuple(
        f"{name}[{i},{j}]" for i in range(1, sizes[0] + 1) for j in range(1, sizes[1] + 1)
    )


def _eight_schools():
    d = load_data("eight_schools")
    return (d["J"], _f(d["sigma"])), {"y": _f(d["y"])}


def _gp_pois_regr():
    d = load_data("gp_pois_regr")
    return (_f(d["x"]),), {"k": _i(d["k"])}


def _accel_gp():
    d = load_data("mcycle_gp")
    args = (
        _f(d["Xgp_1"]),
        _f(d["slambda_1"])[:, 0],
        _f(d["Xgp_sigma_1"]),
        _f(d["slambda_sigma_1"])[:, 0],
    )
    return args, {"Y": _f(d["Y"])}


def _low_dim_gauss_mix():
    return (), {"y": _f(load_data("low_dim_gauss_mix")["y"])}


def _hmm_example():
    d = load_data("hmm_example")
    return (d["K"], _f(d["y"])), {}


def _arK():
    d = load_data("arK")
    return (d["K"], _f(d["y"])), {}


def _arma():
    return (_f(load_data("arma")["y"]),), {}


def _garch():
    d = load_data("garch")
    return (d["sigma1"], _f(d["y"])), {}


def _lotka_volterra():
    d = load_data("hudson_lynx_hare")
    assert np.array_equal(d["ts"], np.arange(1, d["N"] + 1)), "the solver steps unit times"
    return (_f(d["ts"]), _f(d["y_init"]), _f(d["y"])), {}


def _kidiq():
    d = load_data("kidiq")
    return (_f(d["mom_iq"]),), {"kid_score": _f(d["kid_score"])}


def _earnings():
    d = load_data("earnings")
    return (_f(d["height"]),), {"log_earn": jnp.log(_f(d["earn"]))}


def _mesquite():
    d = load_data("mesquite")
    columns = ("diam1", "diam2", "canopy_height", "total_height", "density")
    X = np.column_stack([np.log(d[c]) for c in columns] + [np.asarray(d["group"], float)])
    return (_f(X),), {"log_weight": jnp.log(_f(d["weight"]))}


def _kilpisjarvi():
    d = load_data("kilpisjarvi_mod")
    args = (_f(d["x"]), d["pmualpha"], d["psalpha"], d["pmubeta"], d["psbeta"])
    return args, {"y": _f(d["y"])}


def _sblrc():
    d = load_data("sblrc")
    return (_f(d["X"]),), {"y": _f(d["y"])}


def _nes1972():
    d = load_data("nes1972")
    age = np.asarray(d["age_discrete"])
    X = np.column_stack(
        [d["real_ideo"], d["race_adj"], age == 2, age == 3, age == 4]
        + [d["educ1"], d["gender"], d["income"]]
    ).astype(np.float64)
    return (_f(X),), {"partyid7": _f(d["partyid7"])}


def _diamonds():
    d = load_data("diamonds")
    X = np.asarray(d["X"], dtype=np.float64)[:, 1:]
    return (_f(X - X.mean(axis=0)),), {"Y": _f(d["Y"])}


def _wells():
    d = load_data("wells_data")
    return (_f(d["dist"]),), {"switched": _i(d["switched"])}


def _glm_poisson():
    d = load_data("GLM_Poisson_Data")
    return (_f(d["year"]),), {"C": _i(d["C"])}


def _negbin():
    d = load_data("synthetic_negbin")
    return (_f(d["X"]),), {"y": _i(d["y"])}


def _mvn():
    return (_f(load_data("synthetic_mvn")["y"]),), {}


POSTERIORS: dict[str, Posterior] = {
    "eight_schools-eight_schools_noncentered": Posterior(
        eight_schools_noncentered, _eight_schools, _indexed("theta", 8) + ("mu", "tau")
    ),
    "gp_pois_regr-gp_pois_regr": Posterior(
        gp_pois_regr, _gp_pois_regr, ("rho", "alpha") + _indexed("f", 11)
    ),
    "mcycle_gp-accel_gp": Posterior(
        accel_gp,
        _accel_gp,
        ("Intercept", "sdgp_1", "lscale_1")
        + _indexed("zgp_1", 40)
        + ("Intercept_sigma", "sdgp_sigma_1", "lscale_sigma_1")
        + _indexed("zgp_sigma_1", 20),
    ),
    "low_dim_gauss_mix-low_dim_gauss_mix": Posterior(
        low_dim_gauss_mix,
        _low_dim_gauss_mix,
        _indexed("mu", 2) + _indexed("sigma", 2) + ("theta",),
    ),
    "hmm_example-hmm_example": Posterior(
        hmm_example,
        _hmm_example,
        _indexed("theta1", 2) + _indexed("theta2", 2) + _indexed("mu", 2),
    ),
    "arK-arK": Posterior(arK, _arK, ("alpha",) + _indexed("beta", 5) + ("sigma",)),
    "arma-arma11": Posterior(arma11, _arma, ("mu", "phi", "theta", "sigma")),
    "garch-garch11": Posterior(garch11, _garch, ("mu", "alpha0", "alpha1", "beta1")),
    "hudson_lynx_hare-lotka_volterra": Posterior(
        lotka_volterra,
        _lotka_volterra,
        _indexed("theta", 4) + _indexed("z_init", 2) + _indexed("sigma", 2),
    ),
    "kidiq-kidscore_momiq": Posterior(kidscore_momiq, _kidiq, _indexed("beta", 2) + ("sigma",)),
    "earnings-logearn_height": Posterior(
        logearn_height, _earnings, _indexed("beta", 2) + ("sigma",)
    ),
    "mesquite-logmesquite": Posterior(logmesquite, _mesquite, _indexed("beta", 7) + ("sigma",)),
    "kilpisjarvi_mod-kilpisjarvi": Posterior(
        kilpisjarvi, _kilpisjarvi, ("alpha", "beta", "sigma")
    ),
    "sblrc-blr": Posterior(blr, _sblrc, _indexed("beta", 5) + ("sigma",)),
    "nes1972-nes": Posterior(nes, _nes1972, _indexed("beta", 9) + ("sigma",)),
    "diamonds-diamonds": Posterior(
        diamonds, _diamonds, _indexed("b", 24) + ("Intercept", "sigma"), slow=True
    ),
    "wells_data-wells_dist": Posterior(wells_dist, _wells, _indexed("beta", 2), "numpyro"),
    "GLM_Poisson_Data-GLM_Poisson_model": Posterior(
        glm_poisson, _glm_poisson, ("alpha", "beta1", "beta2", "beta3"), "numpyro"
    ),
    "synthetic-negbin_regression": Posterior(
        negbin_regression, _negbin, ("alpha",) + _indexed("beta", 2) + ("phi",), "numpyro"
    ),
    "synthetic-mvn_lkj": Posterior(
        mvn_lkj,
        _mvn,
        _indexed("mu", 3) + _indexed("sigma", 3) + ("Omega[1,2]", "Omega[1,3]", "Omega[2,3]"),
        "numpyro",
    ),
}


def element(draws: dict, name: str) -> np.ndarray:
    """The (chain, draw) array of one reported element, `site` or `site[i]` or `site[i,j]`."""
    if "[" not in name:
        return np.asarray(draws[name], dtype=np.float64)
    site, index = name[:-1].split("[")
    idx = tuple(int(i) - 1 for i in index.split(","))
    return np.asarray(draws[site], dtype=np.float64)[(slice(None), slice(None)) + idx]
