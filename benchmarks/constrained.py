"""Constrained supports with mass at the walls: the Metropolis-adjusted mirror kernels against
what a user would pick instead; one line per figure.

1. Smooth targets, each with exact moments: Beta(0.5, 0.5) on [0, 1]; Gamma(0.5, 1) on
   x > 0; Dirichlet(0.8, 1.5, 4) and Dirichlet(0.3 x 4) on the simplex; a correlated
   Gaussian truncated to [0, 1]^2 with its mean near two walls; and
   ``pi(x) ∝ exp(-(x - 0.3)^2 / (2 0.25^2) - 1.5 x)`` on [0, 1]. ``mamla`` with the
   mirror that fits the support, against NUTS on the unconstrained reparametrisation that
   NumPyro's transforms give (logit, log, stick-breaking), through ``inferax.from_numpyro``.
2. A nonsmooth term on a constrained set, where NUTS has no gradient to follow:
   ``pi(x) ∝ exp(-|x - m|^2 / (2 s^2) - lam |x|_1)`` on the box [-1, 1]^8, with the kink of
   the L1 term inside the box. ``bregman_moreau_mamla`` (the box's log barrier) against
   ``mymala`` (whose exact acceptance test rejects the points off the box), at three step
   sizes, since ``mymala`` does not tune its step; the adjusted kernel at two smoothings.

Each line: the largest error of the posterior means and of the standard deviations over the
coordinates, in units of the exact standard deviation; the smallest bulk ESS over the
coordinates per second of warmup and sampling (the compile is not counted); and the
fraction of divergent transitions. Every run uses inferax's default starts.
Run: ``./dev bench constrained`` (``--quick`` for a short run).
"""

from __future__ import annotations

import sys
import warnings

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import inferax
from inferax import samplers as S

QUICK = "--quick" in sys.argv
NUM_CHAINS = 16
NUM_WARMUP = 500 if QUICK else 1000
NUM_SAMPLES = 1000 if QUICK else 4000
GRID = np.linspace(0.0, 1.0, 4001)


def dirichlet_moments(alpha):
    alpha = np.asarray(alpha)
    total = alpha.sum()
    return alpha / total, np.sqrt(alpha * (total - alpha) / (total**2 * (total + 1)))


def grid_moments(log_density):
    """Mean and sd on [0, 1] by quadrature of ``exp(log_density(GRID))``."""
    density = np.exp(log_density(GRID))
    density /= np.trapezoid(density, GRID)
    mean = np.trapezoid(GRID * density, GRID)
    return np.array([mean]), np.array([np.sqrt(np.trapezoid((GRID - mean) ** 2 * density, GRID))])


TRUNCATED_MEAN = np.array([0.1, 0.85])
TRUNCATED_PRECISION = np.linalg.inv(np.array([[0.09, 0.054], [0.054, 0.0625]]))


def truncated_moments():
    g1, g2 = np.meshgrid(GRID[::4], GRID[::4], indexing="ij")
    r = np.stack([g1, g2], -1) - TRUNCATED_MEAN
    density = np.exp(-0.5 * np.einsum("...i,ij,...j->...", r, TRUNCATED_PRECISION, r))
    grid = GRID[::4]

    def expect(f):
        return np.trapezoid(np.trapezoid(f * density, grid), grid)

    mass = expect(1.0)
    means = np.array([expect(g1), expect(g2)]) / mass
    second = np.array([expect(g1**2), expect(g2**2)]) / mass
    return means, np.sqrt(second - means**2)


def simplex_logdensity(alpha):
    alpha = jnp.asarray(alpha)

    def logdensity(x):
        full = jnp.concatenate([x, 1.0 - jnp.sum(x, keepdims=True)])
        return jnp.sum((alpha - 1.0) * jnp.log(full))

    return logdensity


def truncated_logdensity(x):
    r = x - TRUNCATED_MEAN
    return -0.5 * r @ jnp.asarray(TRUNCATED_PRECISION, x.dtype) @ r


def box_l1_logdensity(x):
    return jnp.sum(-((x - 0.3) ** 2) / (2 * 0.25**2) - 1.5 * x)


def numpyro_model(name):
    """The same target as a NumPyro model, which ``from_numpyro`` maps to unconstrained
    space with NumPyro's transforms."""

    def model():
        if name == "Beta(0.5, 0.5)":
            numpyro.sample("x", dist.Beta(0.5, 0.5).expand([1]))
        elif name == "Gamma(0.5, 1)":
            numpyro.sample("x", dist.Gamma(0.5, 1.0).expand([1]))
        elif name.startswith("Dirichlet"):
            numpyro.sample("x", dist.Dirichlet(jnp.asarray(SMOOTH[name]["alpha"])))
        elif name == "truncated Gaussian":
            x = numpyro.sample("x", dist.Uniform(0.0, 1.0).expand([2]))
            numpyro.factor("gaussian", truncated_logdensity(x))
        else:
            x = numpyro.sample("x", dist.Uniform(0.0, 1.0).expand([1]))
            numpyro.factor("l1", box_l1_logdensity(x))

    return model


SMOOTH = {
    "Beta(0.5, 0.5)": {
        "mirror": S.LogBarrierBox(0.0, 1.0),
        "logdensity": lambda x: jnp.sum(-0.5 * jnp.log(x) - 0.5 * jnp.log1p(-x)),
        "init": jnp.full(1, 0.5),
        "moments": (np.array([0.5]), np.array([np.sqrt(1 / 8)])),
    },
    "Gamma(0.5, 1)": {
        "mirror": S.Burg(),
        "logdensity": lambda x: jnp.sum(-0.5 * jnp.log(x) - x),
        "init": jnp.ones(1),
        "moments": (np.array([0.5]), np.array([np.sqrt(0.5)])),
    },
    "Dirichlet(0.8, 1.5, 4)": {
        "alpha": [0.8, 1.5, 4.0],
        "mirror": S.SimplexEntropy(),
        "logdensity": simplex_logdensity([0.8, 1.5, 4.0]),
        "init": jnp.full(2, 1 / 3),
        "moments": dirichlet_moments([0.8, 1.5, 4.0]),
    },
    "Dirichlet(0.3 x 4)": {
        "alpha": [0.3] * 4,
        "mirror": S.SimplexLogBarrier(),
        "logdensity": simplex_logdensity([0.3] * 4),
        "init": jnp.full(3, 0.25),
        "moments": dirichlet_moments([0.3] * 4),
    },
    "truncated Gaussian": {
        "mirror": S.LogBarrierBox(0.0, 1.0),
        "logdensity": truncated_logdensity,
        "init": jnp.full(2, 0.5),
        "moments": truncated_moments(),
    },
    "L1 on [0, 1]": {
        "mirror": S.FermiDirac(0.0, 1.0),
        "logdensity": box_l1_logdensity,
        "init": jnp.full(1, 0.5),
        "moments": grid_moments(lambda x: -((x - 0.3) ** 2) / (2 * 0.25**2) - 1.5 * x),
    },
}


def summary(post, draws, moments):
    """(mean error, sd error) in exact sds, min bulk ESS per second, divergent fraction."""
    mean, sd = moments
    draws = np.asarray(draws, np.float64)
    mean_error = np.max(np.abs(draws.mean(axis=(0, 1)) - mean) / sd)
    sd_error = np.max(np.abs(draws.std(axis=(0, 1)) - sd) / sd)
    ess = float(np.min(arviz_stats.ess(draws, method="bulk")))
    seconds = post.timing["warmup"] + post.timing["sampling"]
    return mean_error, sd_error, ess / seconds, float(np.mean(post.stats["diverging"]))


def report(problem, kernel, figures):
    mean_error, sd_error, ess_per_second, divergent = figures
    print(
        f"{problem:24s} {kernel:52s} mean err {mean_error:6.3f} sd   sd err {sd_error:6.3f} sd   "
        f"min ESS/s {ess_per_second:9.0f}   divergent {divergent:.4f}",
        flush=True,
    )


def run(target, kernel, key):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return inferax.sample(
            target,
            kernel,
            key,
            num_chains=NUM_CHAINS,
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            progress=False,
        )


def smooth_comparison():
    for index, (name, problem) in enumerate(SMOOTH.items()):
        key = jax.random.key(index)
        target = inferax.Target.from_logdensity(problem["logdensity"], problem["init"])
        post = run(target, S.mamla(problem["mirror"]), key)
        draws = post.draws["x"]
        if name.startswith("Dirichlet"):
            draws = np.concatenate([draws, 1.0 - draws.sum(-1, keepdims=True)], axis=-1)
        mirror = type(problem["mirror"]).__name__
        report(name, f"mamla({mirror})", summary(post, draws, problem["moments"]))
        post = run(inferax.from_numpyro(numpyro_model(name)), S.nuts(), key)
        report(
            name, "nuts (NumPyro transform)", summary(post, post.draws["x"], problem["moments"])
        )


BOX_DIM = 8
BOX_CENTRE = np.linspace(-0.9, 0.9, BOX_DIM)
BOX_SCALE, BOX_L1 = 0.7, 2.0


def box_moments():
    grid = np.linspace(-1.0, 1.0, 8001)
    means, sds = [], []
    for centre in BOX_CENTRE:
        density = np.exp(-((grid - centre) ** 2) / (2 * BOX_SCALE**2) - BOX_L1 * np.abs(grid))
        density /= np.trapezoid(density, grid)
        mean = np.trapezoid(grid * density, grid)
        means.append(mean)
        sds.append(np.sqrt(np.trapezoid((grid - mean) ** 2 * density, grid)))
    return np.array(means), np.array(sds)


def nonsmooth_comparison():
    centre = jnp.asarray(BOX_CENTRE, jnp.float32)

    def log_prior(x):
        inside = jnp.all((x > -1.0) & (x < 1.0))
        gaussian = -jnp.sum((x - centre) ** 2) / (2 * BOX_SCALE**2)
        return jnp.where(inside, gaussian, -jnp.inf)

    target = inferax.Target(log_prior=log_prior, init=jnp.zeros(BOX_DIM), nonsmooth=S.L1(BOX_L1))
    moments = box_moments()
    problem = f"L1 on [-1, 1]^{BOX_DIM}"
    for smoothing in (1e-3, 1e-2):
        kernel = S.bregman_moreau_mamla(S.LogBarrierBox(-1.0, 1.0), smoothing=smoothing)
        post = run(target, kernel, jax.random.key(10))
        name = f"bregman_moreau_mamla(LogBarrierBox, smoothing = {smoothing})"
        report(problem, name, summary(post, post.draws["x"], moments))
    for step in (0.003, 0.01, 0.03):
        post = run(target, S.mymala(step, smoothing=step), jax.random.key(11))
        report(
            problem, f"mymala(step = smoothing = {step})", summary(post, post.draws["x"], moments)
        )


if __name__ == "__main__":
    print(
        f"{NUM_CHAINS} chains x ({NUM_WARMUP} warmup + {NUM_SAMPLES} draws), default starts, "
        f"{jax.devices()[0].platform}",
        flush=True,
    )
    smooth_comparison()
    nonsmooth_comparison()
