"""Tempered SMC's log evidence against exact values, and against blackjax's own SMC.

Targets: a conjugate Gaussian linear regression (closed-form marginal likelihood), a 2-D
mixture of two well-separated Gaussians with known log Z and unequal weights, and the four
2-D test energies U1-U4 of ``inferax.examples`` (log Z by quadrature). Each tool runs
NUM_RUNS independent runs of NUM_PARTICLES particles, vmapped in one program, from the same
prior. inferax: ``samplers.tempered_smc`` (HMC move, tuned between stages from the cloud).
blackjax: ``blackjax.adaptive_tempered_smc`` with the same HMC move at a fixed step size
and unit mass matrix (blackjax tunes nothing by itself), run to temperature 1 in a
``lax.while_loop``. Each line prints the error of the mean log Z, its standard error over
runs, the error in standard errors, and the seconds of a second call (compile excluded).
For the mixture it also prints the first mode's weight, from SMC and from NUTS started at
one point.

    ./dev bench smc
"""

from __future__ import annotations

import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import inferax
from inferax import examples
from inferax.samplers import hmc, tempered_smc
from inferax.samplers.smc import tempering_split

NUM_RUNS, NUM_PARTICLES, NUM_MCMC_STEPS = 20, 1000, 10
TARGET_ESS = 0.5
LEAPFROG_STEPS = 10
PRIOR_SCALE = 5.0

WEIGHT, LOG_Z_MIXTURE = 0.3, 1.5
MEANS = np.array([[-4.0, -4.0], [4.0, 4.0]])


def mixture_logdensity(x):
    components = jnp.sum(jax.scipy.stats.norm.logpdf(x[None], jnp.asarray(MEANS), 0.5), axis=1)
    return LOG_Z_MIXTURE + jax.scipy.special.logsumexp(
        components + jnp.log(jnp.array([WEIGHT, 1 - WEIGHT]))
    )


def linear_regression(X, y=None):
    w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
    with numpyro.plate("data", X.shape[0]):
        numpyro.sample("y", dist.Normal(X @ w, 0.5), obs=y)


def regression_problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5, 0.25]) + 0.5 * rng.normal(size=50)).astype(np.float32)
    covariance = 0.25 * np.eye(50) + X.astype(np.float64) @ X.T.astype(np.float64)
    _, logdet = np.linalg.slogdet(covariance)
    quad = y.astype(np.float64) @ np.linalg.solve(covariance, y.astype(np.float64))
    exact = -0.5 * (50 * np.log(2 * np.pi) + logdet + quad)
    return inferax.from_numpyro(linear_regression, X, y, data=("X", "y")), None, exact


def problems():
    prior = dist.Normal(jnp.zeros(2), PRIOR_SCALE)
    yield "regression", *regression_problem()
    mixture = inferax.Target.from_logdensity(mixture_logdensity, jnp.zeros(2))
    yield "mixture", mixture, prior, LOG_Z_MIXTURE
    for name in ("u1", "u2", "u3", "u4"):
        yield name, examples.ENERGIES[name](), prior, examples.ENERGY_LOG_Z[name]


def run_inferax(target, prior, seed):
    posterior = tempered_smc(
        target,
        jax.random.key(seed),
        num_particles=NUM_PARTICLES,
        num_runs=NUM_RUNS,
        num_mcmc_steps=NUM_MCMC_STEPS,
        target_ess=TARGET_ESS,
        move=hmc(num_integration_steps=LEAPFROG_STEPS),
        prior=prior,
    )
    return posterior.evidence_stats["log_evidence"], posterior.timing["sampling"], posterior


def blackjax_program(target, prior):
    split = tempering_split(target, prior)
    dim = jax.flatten_util.ravel_pytree(target.init)[0].size
    hmc_kernel = blackjax.hmc.build_kernel()

    def step_fn(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
        return hmc_kernel(
            rng_key, state, logdensity_fn, step_size, inverse_mass_matrix, LEAPFROG_STEPS
        )

    algorithm = blackjax.adaptive_tempered_smc(
        split.logprior_fn,
        split.loglikelihood_fn,
        step_fn,
        blackjax.hmc.init,
        {"step_size": jnp.full((1,), 0.1), "inverse_mass_matrix": jnp.ones((1, dim))},
        blackjax.smc.resampling.systematic,
        TARGET_ESS,
        num_mcmc_steps=NUM_MCMC_STEPS,
    )

    def one_run(rng_key):
        prior_key, loop_key = jax.random.split(rng_key)
        state = algorithm.init(split.sample_prior(prior_key, NUM_PARTICLES))

        def body(carry):
            i, state, log_z = carry
            state, info = algorithm.step(jax.random.fold_in(loop_key, i), state)
            return i + 1, state, log_z + info.log_likelihood_increment

        _, _, log_z = jax.lax.while_loop(
            lambda carry: carry[1].tempering_param < 1.0, body, (0, state, 0.0)
        )
        return log_z

    return jax.jit(jax.vmap(one_run))


def run_blackjax(program, seed):
    keys = jax.random.split(jax.random.key(seed), NUM_RUNS)
    jax.block_until_ready(program(keys))  # compile
    start = time.perf_counter()
    log_z = jax.block_until_ready(program(jax.random.split(jax.random.key(seed + 1), NUM_RUNS)))
    return np.asarray(log_z), time.perf_counter() - start


def line(name, tool, log_z, exact, seconds):
    log_z = np.asarray(log_z, dtype=np.float64)
    se = log_z.std(ddof=1) / np.sqrt(log_z.size)
    error = log_z.mean() - exact
    print(
        f"smc {name:10s} {tool:9s} log Z error {error:+.4f}  SE {se:.4f}  "
        f"|error|/SE {abs(error) / se:5.2f}  ({NUM_RUNS} runs x {NUM_PARTICLES} particles)  "
        f"{seconds:.2f} s",
        flush=True,
    )


def mixture_weights(target, posterior):
    shares = (posterior.draws["x"][..., 0] < 0).mean(axis=1)
    se = shares.std(ddof=1) / np.sqrt(shares.size)
    print(
        f"smc mixture    inferax   first-mode weight {shares.mean():.4f}  SE {se:.4f}  "
        f"(true {WEIGHT})",
        flush=True,
    )
    nuts = inferax.sample(
        target,
        inferax.samplers.nuts(),
        jax.random.key(0),
        num_chains=1,
        num_warmup=1000,
        num_samples=4000,
        init=jnp.full((1, 2), 0.5),
        progress=False,
    )
    share = float((nuts.draws["x"][..., 0] < 0).mean())
    print(
        f"smc mixture    nuts      first-mode weight {share:.4f}  (one chain from (0.5, 0.5), "
        f"4000 draws; true {WEIGHT})",
        flush=True,
    )


def main():
    for name, target, prior, exact in problems():
        log_z, seconds, posterior = run_inferax(target, prior, 1)
        line(name, "inferax", log_z, exact, seconds)
        log_z, seconds = run_blackjax(blackjax_program(target, prior), 2)
        line(name, "blackjax", log_z, exact, seconds)
        if name == "mixture":
            mixture_weights(target, posterior)


if __name__ == "__main__":
    main()
