"""ChEES-HMC and MEADS against NUTS, 128 chains each, on a 100-d correlated Gaussian and on
eight schools (non-centred).

Prints one line per kernel and problem: the largest error of the posterior means and
standard deviations in units of their Monte Carlo standard errors (against the exact
values for the Gaussian; against a long NUTS reference for eight schools, the two MCSEs
combined), the smallest bulk ESS over the coordinates, the gradient evaluations of the
sampling phase (NUTS and ChEES: their leapfrog steps; MEADS: one a step), the ESS per
gradient evaluation, and the ratio of that to NUTS's.

Run with ``./dev bench chees`` (``--warmup``, ``--samples`` to change the run length).
"""

from __future__ import annotations

import argparse
import time

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np

import inferax
from inferax import examples, samplers

NUM_CHAINS = 128
DIM = 100


def gaussian():
    """N(mean, Sigma), Sigma with scales from 0.1 to 1 along random orthogonal axes."""
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    scales = np.geomspace(0.1, 1.0, DIM)
    covariance = rotation @ np.diag(scales**2) @ rotation.T
    mean = rng.normal(size=DIM)
    precision = jnp.asarray(np.linalg.inv(covariance), jnp.float32)
    centre = jnp.asarray(mean, jnp.float32)
    target = inferax.Target.from_logdensity(
        lambda x: -0.5 * (x - centre) @ precision @ (x - centre), jnp.zeros(DIM)
    )
    return target, mean, np.sqrt(np.diag(covariance))


def eight_schools():
    data = examples.EIGHT_SCHOOLS
    return inferax.from_numpyro(
        examples.eight_schools_noncentered, data["J"], data["sigma"], y=data["y"]
    )


def flat(post) -> np.ndarray:
    """Draws as (chain, draw, coordinate), every site's coordinates side by side."""
    chains, draws = next(iter(post.draws.values())).shape[:2]
    return np.concatenate(
        [np.asarray(v, np.float64).reshape(chains, draws, -1) for v in post.draws.values()],
        axis=-1,
    )


def summary(draws):
    mean = draws.mean(axis=(0, 1))
    sd = draws.std(axis=(0, 1))
    mean_mcse = np.asarray(arviz_stats.mcse(draws, method="mean"))
    sd_mcse = np.asarray(arviz_stats.mcse(draws, method="sd"))
    ess = float(np.min(arviz_stats.ess(draws, method="bulk")))
    return mean, sd, mean_mcse, sd_mcse, ess


def gradients(kernel, post) -> float:
    if kernel.name == "meads":
        return float(np.size(post.stats["lp"]))
    return float(np.sum(post.stats["n_steps"]))


def main(args) -> None:
    key = jax.random.key(0)
    gauss_target, gauss_mean, gauss_sd = gaussian()
    schools = eight_schools()
    reference = inferax.sample(
        schools,
        samplers.nuts(),
        jax.random.key(99),
        num_chains=8,
        num_warmup=2000,
        num_samples=args.reference,
        progress=False,
    )
    ref_mean, ref_sd, ref_mean_mcse, ref_sd_mcse, _ = summary(flat(reference))
    problems = {
        "100-d Gaussian": (gauss_target, gauss_mean, gauss_sd, 0.0, 0.0),
        "eight schools": (schools, ref_mean, ref_sd, ref_mean_mcse, ref_sd_mcse),
    }
    kernels = [samplers.nuts(), samplers.chees(), samplers.meads()]
    for problem, (target, mean, sd, mean_mcse_ref, sd_mcse_ref) in problems.items():
        nuts_rate = None
        for kernel in kernels:
            started = time.perf_counter()
            post = inferax.sample(
                target,
                kernel,
                key,
                num_chains=NUM_CHAINS,
                num_warmup=args.warmup,
                num_samples=args.samples,
                progress=False,
            )
            seconds = time.perf_counter() - started
            est_mean, est_sd, mean_mcse, sd_mcse, ess = summary(flat(post))
            mean_z = np.max(np.abs(est_mean - mean) / np.hypot(mean_mcse, mean_mcse_ref))
            sd_z = np.max(np.abs(est_sd - sd) / np.hypot(sd_mcse, sd_mcse_ref))
            grads = gradients(kernel, post)
            rate = ess / grads
            nuts_rate = rate if kernel.name == "nuts" else nuts_rate
            print(
                f"chees bench {problem}, {kernel.name}, {NUM_CHAINS} chains, {args.warmup} + "
                f"{args.samples}: max |mean error| {mean_z:.2f} MCSE, max |sd error| "
                f"{sd_z:.2f} MCSE, min bulk ESS {ess:.0f}, {grads:.3g} gradients, ESS per "
                f"gradient {rate:.2e} ({rate / nuts_rate:.2f}x NUTS), "
                f"{int(np.sum(post.stats['diverging']))} divergent, {seconds:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--reference", type=int, default=20000)
    main(parser.parse_args())
