"""Sequential learning: the memory-based dual GP against the one-shot SVGP and streaming
without memory.

The paper (Chang et al., ICML 2023) streams UCI data sets sorted along their first input
in batches; those cannot be downloaded here, so this uses synthetic stand-ins generated
with fixed seeds, streamed the same way (sorted along ``x_1``, so each batch comes from a
region the model has not seen):

- regression: ``y = sin(2 x_1) cos(x_2) + 0.5 sin(x_3 + x_4) + 0.2 noise``, ``x ~ U(-3, 3)^4``,
  ``n`` training and 2,000 test points, Matérn-5/2 kernel;
- classification: two interleaved half-moons in 2-D (a banana-like set), Bernoulli-probit.

Models, all with ``M = 50`` inducing points: the one-shot SVGP on all the data (the
ceiling; natural gradients with step 1 and Adam, ``--offline-steps`` full-data steps), and
``gp.sequential`` with a memory of 100 points chosen by the paper's rule (``lambda``) or at
random, and without memory (0), each with ``--hyper-steps`` Adam steps at 0.01 per batch.
One line per model: test NLPD (mean ``-log p(y* | data)``), RMSE or accuracy, and seconds
per batch (the first batch, which compiles, excluded) or for the whole fit.

    python benchmarks/sequential_gp.py [--n 2000] [--batches 10] [--hyper-steps 50]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from inferax.variational import gp  # noqa: E402

NUM_TEST = 2_000
M = 50
MEMORY = 100


def regression(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n + NUM_TEST, 4))
    f = np.sin(2 * X[:, 0]) * np.cos(X[:, 1]) + 0.5 * np.sin(X[:, 2] + X[:, 3])
    y = f + 0.2 * rng.normal(size=n + NUM_TEST)
    return X[:n], y[:n], X[n:], y[n:]


def moons(n, seed=1):
    rng = np.random.default_rng(seed)
    total = n + NUM_TEST
    label = rng.integers(0, 2, total)
    angle = rng.uniform(0, np.pi, total)
    X = np.where(
        label[:, None] == 0,
        np.stack([np.cos(angle), np.sin(angle)], 1),
        np.stack([1 - np.cos(angle), 0.5 - np.sin(angle)], 1),
    )
    X = X + 0.2 * rng.normal(size=X.shape)
    return X[:n], label[:n] * 1.0, X[n:], label[n:] * 1.0


def score(model, Xt, yt, classify):
    nlpd = -float(np.mean(model.log_predictive_density(Xt, yt)))
    mean, _ = model.predict_y(Xt)
    if classify:
        return nlpd, f"accuracy {float(np.mean((np.asarray(mean) > 0.5) == yt)):.4f}"
    return nlpd, f"RMSE {float(np.sqrt(np.mean((np.asarray(mean) - yt) ** 2))):.4f}"


def run(task, X, y, Xt, yt, args):
    classify = task == "classification"
    dim = X.shape[1]

    def parts():
        likelihood = gp.bernoulli() if classify else gp.gaussian()
        return gp.matern52(np.ones(dim)), likelihood

    start = time.perf_counter()
    offline = gp.fit(
        gp.svgp(M, *parts()),
        jax.random.key(0),
        X,
        y,
        num_steps=args.offline_steps,
        learning_rate=0.01,
        natgrad_step_size=1.0 if not classify else 0.5,
        progress=False,
    )
    wall = time.perf_counter() - start
    nlpd, other = score(offline.model, Xt, yt, classify)
    print(
        f"{task:14s} one-shot SVGP    NLPD {nlpd:.4f}  {other}  "
        f"{wall:.1f} s for {args.offline_steps} full-data steps",
        flush=True,
    )
    results = {"offline": nlpd}
    order = np.argsort(X[:, 0])
    for name, size, rule in (
        ("memory lambda", MEMORY, "lambda"),
        ("memory random", MEMORY, "random"),
        ("no memory", 0, "random"),
    ):
        model = gp.sequential(
            gp.svgp(M, *parts(), parametrization="dual"),
            memory_size=size,
            memory_rule=rule,
            num_hyper_steps=args.hyper_steps,
            learning_rate=0.01,
            dual_steps=4 if classify else 1,
            dual_step_size=0.5 if classify else 1.0,
        )
        times = []
        for t, index in enumerate(np.array_split(order, args.batches)):
            start = time.perf_counter()
            model = model.update(jax.random.key(t), X[index], y[index])
            jax.block_until_ready(model.model.lambda_2)
            times.append(time.perf_counter() - start)
        nlpd, other = score(model, Xt, yt, classify)
        results[name] = nlpd
        print(
            f"{task:14s} {name:16s} NLPD {nlpd:.4f}  {other}  "
            f"{np.mean(times[1:]):.2f} s per batch (first, compiling: {times[0]:.1f} s)",
            flush=True,
        )
    print(
        f"{task:14s} NLPD above the one-shot fit: "
        + ", ".join(
            f"{k} {v - results['offline']:+.4f}" for k, v in results.items() if k != "offline"
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--hyper-steps", type=int, default=50)
    parser.add_argument("--offline-steps", type=int, default=500)
    parser.add_argument("--tasks", default="regression,classification")
    args = parser.parse_args()
    print(
        f"n = {args.n} in {args.batches} batches sorted by x_1, {NUM_TEST} test points, "
        f"M = {M}, memory {MEMORY}, {args.hyper_steps} Adam steps per batch, float64"
    )
    total = time.perf_counter()
    for task in args.tasks.split(","):
        data = regression(args.n) if task == "regression" else moons(args.n)
        run(task, *data, args)
    print(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
