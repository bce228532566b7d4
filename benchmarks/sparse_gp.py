"""Sparse variational GPs at scale: SVGP, SWSGP and DKLGP against GPJax's SVGP.

Synthetic regression, ``y = sum_d sin(2 x_d + d) / sqrt(D) + 0.2 noise``, ``x ~ U(-3, 3)^D``
with ``n`` training and 10,000 test points (fixed seeds), ``D`` in 1, 2, 5. For each model
it prints one line: test RMSE, test NLPD (mean ``-log p(y* | data)`` with its
``1/2 log 2 pi``, in the units of ``y``), seconds per step (compiles excluded), and the wall
time to converge (compile plus the steps until the loss's running mean of 50 steps first
comes within 1% of its final value, plus the fixed costs: ordering, starting solve).

Models (issue 6): SVGP with M = 256 and 1024 (natural-gradient steps of 0.1 for q(u)), and
at M = 256 also with the optimizer on everything (``svgp256adam``, GPJax's algorithm);
SWSGP with M = 1024 and 4096, H = 32; DKLGP with rho = 1.5 (batches of 256 columns, two
stages, sets of at most 16 points); GPJax 1.0's SVGP (``WhitenedVariationalGaussian``,
everything by the optimizer, its ``fit``) with M = 256 and 1024, on the same standardised
data and the same Z. Every model gets the same optimizer: Adam with a cosine-decayed rate,
0.03 to 0.003 over the run, of ``--steps`` steps, or four times as many for SWSGP at
M = 4096 (``STEP_FACTORS``). Everything in float64 (GPJax's own default), minibatches of
256. After each D, ratio lines compare SVGP with GPJax at each M (time per step; NLPD),
SWSGP's time per step at M = 4096 with that at 1024, and SWSGP at M = 4096 with SVGP at
M = 1024 (NLPD; the time each took in all).

    python benchmarks/sparse_gp.py [--n 100000] [--steps 300] [--dims 1,2,5]
                                   [--models svgp256,svgp1024,...]

``--part swsgp-fixed`` runs only issue 30's check instead: a 2-D regression (the same
function, 2,000 training and 3,000 test points), the hyperparameters held at the exact GP's
(its log marginal likelihood maximised by L-BFGS) and the inducing inputs held too, so only
``q(u)`` is fitted: ``--fixed-steps`` steps on batches of 256, Adam with the rate decayed
from 0.03 to 0.003 by a cosine (SVGP's ``q(u)`` takes natural-gradient steps of 0.1), for
SVGP (M = 256) and SWSGP (M = 1,024, H = 32): the default (whitened ``q(u)``, the Vecchia
KL), ``parametrization="scaled"`` with the Vecchia KL, and with the paper's prior term
(``kl="neighbour_average"``); ``--fixed-models`` picks some. One line each (test NLPD, ms
per step, the mean loss over the last two tenths of the run) and a line comparing each
SWSGP with SVGP.

GPJax 1.0 declares ``jax<0.11``, so a plain ``pip install gpjax`` downgrades jax; it runs on
the jax inferax needs when installed without its pins:
``pip install --no-deps gpjax==1.0.0 && pip install beartype jaxtyping lineax paramax rich``.
"""

from __future__ import annotations

import argparse
import math
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from inferax.variational import gp  # noqa: E402

NUM_TEST = 10_000
BATCH = 256
MODELS = (
    "svgp256",
    "svgp256adam",
    "svgp1024",
    "gpjax256",
    "gpjax1024",
    "swsgp1024",
    "swsgp4096",
    "dklgp",
)
FIXED_MODELS = ("svgp256", "swsgp1024", "swsgp1024-scaled", "swsgp1024-paper")
"""The models of ``--part swsgp-fixed``; ``svgp256`` first (the others are compared with
it)."""
STEP_FACTORS = {"swsgp4096": 4}
"""Models run for a multiple of ``--steps``: SWSGP at M = 4096 gets the time SVGP at
M = 1024 spends, since more inducing points at the same cost are what it is for."""


def make_data(n, dim, seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n + NUM_TEST, dim))
    f = np.sum(np.sin(2 * X + np.arange(dim)[None, :]), axis=1) / math.sqrt(dim)
    y = f + 0.2 * rng.normal(size=n + NUM_TEST)
    return X[:n], y[:n], X[n:], y[n:]


def steps_to_converge(losses):
    window = 50
    if losses.size < 2 * window:
        return losses.size
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    final = smooth[-1]
    reached = np.nonzero(smooth <= final + 0.01 * abs(final))[0]
    return int(reached[0]) + window if reached.size else losses.size


def run_inferax(name, X, y, Xt, yt, steps, key, optimizer):
    """``(RMSE, NLPD, seconds per step, seconds to converge, seconds for the fit)``."""
    dim = X.shape[1]
    kernel = gp.rbf(np.ones(dim))
    Z = X[np.random.default_rng(1).choice(X.shape[0], 4096, replace=False)]
    if name.startswith("svgp"):
        M = int(name[4:].removesuffix("adam"))
        model = gp.svgp(Z[:M], kernel)
        if name.endswith("adam"):
            options = {"natural_gradient": False}
        else:
            options = {"natgrad_step_size": 0.1}
    elif name.startswith("swsgp"):
        M = int(name[5:])
        model, options = gp.swsgp(Z[:M], kernel, num_neighbours=32), {}
    else:
        model, options = gp.dklgp(kernel, rho=1.5, max_set_size=16), {"num_stages": 2}
    start = time.perf_counter()
    fit = gp.fit(
        model,
        key,
        X,
        y,
        num_steps=steps,
        batch_size=BATCH,
        optimizer=optimizer,
        progress=False,
        **options,
    )
    wall = time.perf_counter() - start
    per_step = fit.timing["optimization"] / steps
    fixed = wall - fit.timing["optimization"]
    converge = fixed + per_step * steps_to_converge(fit.losses)
    mean, _ = fit.model.predict_y(Xt)
    rmse = float(jnp.sqrt(jnp.mean((mean - yt) ** 2)))
    nlpd = -float(jnp.mean(fit.model.log_predictive_density(Xt, yt)))
    return rmse, nlpd, per_step, converge, wall


def run_gpjax(M, X, y, Xt, yt, steps, key, optimizer):
    """As ``run_inferax``, for GPJax's SVGP at ``M`` inducing points."""
    import gpjax as gpx

    x_shift, x_scale = X.mean(0), X.std(0)
    y_shift, y_scale = y.mean(), y.std()
    Xs, ys = (X - x_shift) / x_scale, (y - y_shift) / y_scale
    Z = Xs[np.random.default_rng(1).choice(X.shape[0], 4096, replace=False)][:M]
    data = gpx.Dataset(X=jnp.asarray(Xs), y=jnp.asarray(ys)[:, None])
    kernel = gpx.kernels.RBF(lengthscale=jnp.ones(X.shape[1]))
    prior = gpx.gps.Prior(mean_function=gpx.mean_functions.Zero(), kernel=kernel)
    posterior = prior * gpx.likelihoods.Gaussian(obs_stddev=1.0)
    family = gpx.variational_families.WhitenedVariationalGaussian(posterior, inducing_inputs=Z)

    def loss(model, batch):
        return -gpx.objectives.elbo(model, batch)

    def train(num):
        start = time.perf_counter()
        fitted, history = gpx.fit(
            model=family,
            objective=loss,
            train_data=data,
            optim=optimizer,
            key=key,
            num_iters=num,
            batch_size=BATCH,
            verbose=False,
        )
        jax.block_until_ready(history)
        return fitted, np.asarray(history), time.perf_counter() - start

    short = 20
    _, _, short_wall = train(short)
    fitted, losses, wall = train(steps)
    per_step = (wall - short_wall) / (steps - short)
    converge = (wall - per_step * steps) + per_step * steps_to_converge(losses)
    latent = fitted.predict(jnp.asarray((Xt - x_shift) / x_scale))  # q(f*), unwrapped inside
    noise = float(fitted.model.likelihood.obs_stddev.unwrap()) ** 2
    mean = np.asarray(latent.mean).reshape(-1)
    var = np.asarray(latent.variance).reshape(-1) + noise
    yts = (yt - y_shift) / y_scale
    rmse = float(np.sqrt(np.mean((mean * y_scale + y_shift - yt) ** 2)))
    log_density = -0.5 * (np.log(2 * np.pi * var) + (yts - mean) ** 2 / var) - np.log(y_scale)
    return rmse, -float(np.mean(log_density)), per_step, converge, wall


def exact_hyperparameters(X, y):
    """The exact GP's RBF lengthscale, variance and noise, by L-BFGS on its log marginal
    likelihood, in the standardised units the models' hyperparameters live in."""
    import scipy.optimize

    Xs, ys = (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std()

    def negative_evidence(raw):
        lengthscale, variance, noise = jax.nn.softplus(raw)
        sq = jnp.sum((Xs[:, None] - Xs[None]) ** 2, -1) / lengthscale**2
        factor = jnp.linalg.cholesky(variance * jnp.exp(-0.5 * sq) + noise * jnp.eye(len(ys)))
        alpha = jax.scipy.linalg.cho_solve((factor, True), ys)
        return 0.5 * ys @ alpha + jnp.sum(jnp.log(jnp.diag(factor)))

    value_and_grad = jax.jit(jax.value_and_grad(negative_evidence))
    result = scipy.optimize.minimize(
        lambda raw: tuple(np.asarray(v, float) for v in value_and_grad(jnp.asarray(raw))),
        np.array([0.5, 0.5, -2.0]),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 30},
    )
    lengthscale, variance, noise = (float(v) for v in jax.nn.softplus(jnp.asarray(result.x)))
    return lengthscale, variance, noise


def swsgp_fixed(steps, models):
    """Issue 30's check: SWSGP (1,024, H = 32) against SVGP (256) with the exact GP's
    hyperparameters and the inducing inputs held (the module docstring)."""
    X, y, Xt, yt = make_data(2_000, 2, seed=2)
    Xt, yt = Xt[:3_000], yt[:3_000]
    lengthscale, variance, noise = exact_hyperparameters(X, y)
    Z = X[np.random.default_rng(1).choice(X.shape[0], 1_024, replace=False)]

    def parts():
        return gp.rbf(lengthscale, variance), gp.gaussian(noise)

    builders = {
        "svgp256": lambda: gp.svgp(Z[:256], *parts()),
        "swsgp1024": lambda: gp.swsgp(Z, *parts(), num_neighbours=32),
        "swsgp1024-scaled": lambda: gp.swsgp(
            Z, *parts(), num_neighbours=32, parametrization="scaled"
        ),
        "swsgp1024-paper": lambda: gp.swsgp(
            Z, *parts(), num_neighbours=32, kl="neighbour_average", parametrization="scaled"
        ),
    }
    # The main part's schedule; SVGP's q(u) takes natural-gradient steps, so with everything
    # else held the schedule only moves SWSGP.
    optimizer = optax.adam(optax.cosine_decay_schedule(0.03, steps, alpha=0.1))
    results = {}
    for name in models:
        fit = gp.fit(
            builders[name](),
            jax.random.key(0),
            X,
            y,
            num_steps=steps,
            batch_size=BATCH,
            optimizer=optimizer,
            fixed=("kernel", "likelihood", "inducing"),
            progress=False,
        )
        nlpd = -float(jnp.mean(fit.model.log_predictive_density(Xt, yt)))
        per_step = fit.timing["optimization"] / steps
        results[name] = (nlpd, per_step)
        tenth = max(1, steps // 10)
        early, late = np.mean(fit.losses[-2 * tenth : -tenth]), np.mean(fit.losses[-tenth:])
        print(
            f"D=2 n=2000 fixed hyperparameters {name:15s} NLPD {nlpd:.4f}  "
            f"{per_step * 1e3:.1f} ms/step ({steps} steps; mean loss over the last two tenths "
            f"{early:.1f}, {late:.1f})",
            flush=True,
        )
    svgp, svgp_time = results["svgp256"]
    for name in models[1:]:
        wide, wide_time = results[name]
        print(
            f"D=2 {name} vs svgp256, hyperparameters fixed: NLPD {wide:.4f} vs {svgp:.4f} "
            f"({(wide - svgp) / abs(svgp) * 100:+.1f}% of |svgp|), time per step "
            f"{wide_time / svgp_time:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--dims", default="1,2,5")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--part", choices=("all", "swsgp-fixed"), default="all")
    parser.add_argument("--fixed-steps", type=int, default=1_500)
    parser.add_argument("--fixed-models", default=",".join(FIXED_MODELS))
    args = parser.parse_args()
    if args.part == "swsgp-fixed":
        swsgp_fixed(args.fixed_steps, args.fixed_models.split(","))
        return
    models = args.models.split(",")
    unknown = set(models) - set(MODELS)
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from {MODELS}")
    print(
        f"n = {args.n}, {NUM_TEST} test points, {args.steps} steps of batch {BATCH} "
        f"(x{STEP_FACTORS['swsgp4096']} for swsgp4096), float64"
    )
    # One optimizer object per run length: the compiled loops are keyed on it.
    optimizers = {
        factor: optax.adam(optax.cosine_decay_schedule(0.03, factor * args.steps, alpha=0.1))
        for factor in {1, *STEP_FACTORS.values()}
    }
    total = time.perf_counter()
    for dim in (int(d) for d in args.dims.split(",")):
        X, y, Xt, yt = make_data(args.n, dim, seed=dim)
        results = {}
        for name in models:
            key = jax.random.key(0)
            if name.startswith("gpjax"):
                try:
                    figures = run_gpjax(
                        int(name[5:]), X, y, Xt, yt, args.steps, key, optimizers[1]
                    )
                except ImportError:
                    print(f"D={dim} {name}: skipped (GPJax not installed; see the docstring)")
                    continue
            else:
                factor = STEP_FACTORS.get(name, 1)
                figures = run_inferax(
                    name, X, y, Xt, yt, factor * args.steps, key, optimizers[factor]
                )
            results[name] = figures
            rmse, nlpd, per_step, converge, _ = figures
            print(
                f"D={dim} {name:10s} RMSE {rmse:.4f}  NLPD {nlpd:.4f}  "
                f"{per_step * 1e3:.1f} ms/step  converged in {converge:.1f} s",
                flush=True,
            )
        for ours_name, M in (("svgp256", 256), ("svgp256adam", 256), ("svgp1024", 1024)):
            ours, peer = results.get(ours_name), results.get(f"gpjax{M}")
            if ours and peer:
                print(
                    f"D={dim} {ours_name} / gpjax{M}: time per step {ours[2] / peer[2]:.2f}, "
                    f"NLPD {ours[1]:.4f} vs {peer[1]:.4f} "
                    f"({(ours[1] - peer[1]) / abs(peer[1]) * 100:+.1f}% of |gpjax|)"
                )
        if "swsgp1024" in results and "swsgp4096" in results:
            print(
                f"D={dim} swsgp time per step M=4096 / M=1024: "
                f"{results['swsgp4096'][2] / results['swsgp1024'][2]:.2f}"
            )
        if "swsgp4096" in results and "svgp1024" in results:
            wide, svgp = results["swsgp4096"], results["svgp1024"]
            steps = STEP_FACTORS["swsgp4096"] * args.steps
            print(
                f"D={dim} swsgp4096 ({steps} steps) vs svgp1024 ({args.steps} steps): NLPD "
                f"{wide[1]:.4f} vs {svgp[1]:.4f}, {wide[4]:.0f} s vs {svgp[4]:.0f} s in all"
            )
    print(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
