"""Proximal, mirror and Bregman-Moreau Langevin samplers on two problems; one line per figure.

1. A non-negative Bayesian lasso, d = 100, N = 200 synthetic:
   ``pi(b) ∝ exp(-|y - X b|^2 / (2 sigma^2) - alpha sum b)`` on ``b >= 0``.
2. 1-D total-variation denoising of a piecewise-constant signal of length 500:
   ``pi(x) ∝ exp(-|y - x|^2 / (2 sigma^2) - tau TV(x))``.

For each sampler it prints the relative error of the posterior mean against a long
reference run, at a quarter, a half and all of the run, with the sampling seconds spent
(the compiled program is reused, so compile time is not counted), and the fraction of
draws outside the support. The TV reference is MYMALA; the lasso's is NUTS on a softplus
reparametrisation, because MYMALA does not mix there (see ``lasso_reference``).
Run: ``./dev bench proximal`` (``--quick`` for a short run).
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import inferax
from inferax import samplers as S

QUICK = "--quick" in sys.argv
NUM_CHAINS = 4


def lasso_problem():
    rng = np.random.default_rng(0)
    d, n, sigma, alpha = 100, 200, 1.0, 5.0
    X = rng.normal(size=(n, d)) / np.sqrt(n) * 3.0
    beta = np.zeros(d)
    beta[:10] = rng.uniform(1.0, 3.0, 10)
    y = X @ beta + sigma * rng.normal(size=n)
    X, y = jnp.asarray(X, jnp.float32), jnp.asarray(y, jnp.float32)

    def loglik(b):
        return -0.5 * jnp.sum((y - X @ b) ** 2) / sigma**2

    init = jnp.full(d, 0.5)
    coefficients = jnp.full(d, alpha)
    proximal = inferax.Target(
        log_prior=loglik, init=init, nonsmooth=S.NonNegative() + S.Linear(coefficients)
    )
    smooth = inferax.Target.from_logdensity(lambda b: loglik(b) - alpha * jnp.sum(b), init)
    lipschitz = float(jnp.linalg.norm(X, 2) ** 2 / sigma**2)
    return proximal, smooth, lipschitz


def tv_problem():
    rng = np.random.default_rng(1)
    n, sigma, tau = 500, 0.5, 4.0
    truth = np.repeat(rng.uniform(-2, 2, 10), n // 10)
    y = jnp.asarray(truth + sigma * rng.normal(size=n), jnp.float32)
    target = inferax.Target(
        log_prior=lambda x: -0.5 * jnp.sum((y - x) ** 2) / sigma**2,
        init=y,
        nonsmooth=S.TotalVariation1D(tau),
    )
    return target, 1.0 / sigma**2


def run(target, kernel, num_warmup, num_samples, key, chunk_size):
    """Draws and the seconds of sampling alone: a first short call compiles."""
    init = jnp.tile(target.init, (NUM_CHAINS, 1))
    common = dict(num_chains=NUM_CHAINS, init=init, progress=False, chunk_size=chunk_size)
    inferax.sample(target, kernel, key, num_warmup=0, num_samples=chunk_size, **common)
    start = time.perf_counter()
    post = inferax.sample(
        target, kernel, key, num_warmup=num_warmup, num_samples=num_samples, **common
    )
    return post, time.perf_counter() - start


def report(problem, name, post, seconds, reference, outside):
    draws = np.asarray(post.draws["x"], dtype=np.float64)
    total = draws.shape[1]
    parts = []
    for fraction in (0.25, 0.5, 1.0):
        upto = max(1, int(total * fraction))
        mean = draws[:, :upto].mean(axis=(0, 1))
        error = np.linalg.norm(mean - reference) / np.linalg.norm(reference)
        parts.append(f"{error:.4f} at {seconds * fraction:.1f}s")
    diverging = int(post.stats["diverging"].sum())
    extra = ""
    if "acceptance_rate" in post.stats:
        extra = f"; acceptance {float(post.stats['acceptance_rate'].mean()):.3f}"
    print(
        f"{problem} {name}: posterior-mean error {', '.join(parts)}; "
        f"outside support {outside:.4f}; diverging {diverging}{extra}",
        flush=True,
    )


def lasso_reference(smooth):
    """NUTS on ``b = softplus(z)``: exact, and it mixes here, where MYMALA does not (its
    proposals leave the orthant in some coordinate almost every step, and are rejected)."""

    def logdensity(z):
        b = jax.nn.softplus(z)
        return smooth.logdensity(b) + jnp.sum(jax.nn.log_sigmoid(z))

    init = jnp.log(jnp.expm1(smooth.init))
    target = inferax.Target.from_logdensity(logdensity, init)
    num_samples = 500 if QUICK else 4000
    start = time.perf_counter()
    post = inferax.sample(
        target,
        S.nuts(),
        jax.random.key(100),
        num_chains=NUM_CHAINS,
        num_warmup=1000,
        num_samples=num_samples,
        progress=False,
    )
    seconds = time.perf_counter() - start
    draws = jax.nn.softplus(np.asarray(post.draws["x"], np.float64))
    print(
        f"lasso reference: nuts on softplus(z), {NUM_CHAINS} x {num_samples} draws, "
        f"{seconds:.1f}s with compile, divergences {int(post.stats['diverging'].sum())}",
        flush=True,
    )
    return np.asarray(draws).mean(axis=(0, 1))


def lasso():
    proximal, smooth, lipschitz = lasso_problem()
    reference = lasso_reference(smooth)
    h = 0.2 / lipschitz
    num_samples = 1000 if QUICK else 10_000
    kernels = {
        "myula": (proximal, S.myula(step_size=h, smoothing=h)),
        "mymala": (proximal, S.mymala(step_size=h, smoothing=h)),
        "mirror_langevin(Burg)": (smooth, S.mirror_langevin(S.Burg(), step_size=h)),
        # The entropy's dual noise, sqrt(2h / x), is unbounded near 0, where the null
        # coefficients put their mass: these chains blow up at the shared step, and still
        # at a tenth of it (shown). Burg's, sqrt(2h) / x, is a relative step and stays stable.
        "mirror_langevin(Entropy, step/10)": (
            smooth,
            S.mirror_langevin(S.Entropy(), step_size=h / 10),
        ),
        "bregman_moreau_langevin(Entropy, left, step/10)": (
            proximal,
            S.bregman_moreau_langevin(S.Entropy(), step_size=h / 10, smoothing=h),
        ),
        "bregman_moreau_langevin(Burg, left)": (
            proximal,
            S.bregman_moreau_langevin(S.Burg(), step_size=h, smoothing=h),
        ),
    }
    for name, (target, kernel) in kernels.items():
        post, seconds = run(target, kernel, 1000, num_samples, jax.random.key(1), 1000)
        outside = float(np.mean(np.any(np.asarray(post.draws["x"]) < 0.0, axis=-1)))
        report("lasso", name, post, seconds, reference, outside)


def tv():
    target, _ = tv_problem()
    small, large = 0.002, 0.02
    num_reference = 1000 if QUICK else 8000
    reference_post, reference_seconds = run(
        target,
        S.mymala(step_size=small, smoothing=small),
        1000,
        num_reference,
        jax.random.key(200),
        500,
    )
    reference = np.asarray(reference_post.draws["x"], np.float64).mean(axis=(0, 1))
    print(
        f"tv reference: mymala at step 0.002, {NUM_CHAINS} x {num_reference} draws, "
        f"{reference_seconds:.1f}s, acceptance "
        f"{float(reference_post.stats['acceptance_rate'].mean()):.3f}",
        flush=True,
    )
    num_samples = 500 if QUICK else 2000
    for name, kernel in {
        "myula(step 0.02)": S.myula(step_size=large, smoothing=large),
        "myula(step 0.002)": S.myula(step_size=small, smoothing=small),
        "mymala(step 0.002)": S.mymala(step_size=small, smoothing=small),
    }.items():
        post, seconds = run(target, kernel, 500, num_samples, jax.random.key(2), 500)
        report("tv", name, post, seconds, reference, 0.0)


if __name__ == "__main__":
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {NUM_CHAINS} chains", flush=True)
    lasso()
    tv()
