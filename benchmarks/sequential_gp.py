"""Sequential learning: the memory-based dual GP against the one-shot SVGP and streaming
without memory, in the setting of the paper's UCI streaming regression.

The paper (Chang et al., ICML 2023; the authors' ``sequential-gp`` code, ``experiments/uci``)
streams Bike (N = 17,379, D = 17) and Elevators (N = 16,599, D = 18), inputs and targets
standardised, a fold of 10-fold cross-validation held out, the training part cut into 50
batches; ``M = 100`` inducing points (the first 100 training points, then moved by the
optimizer only), a Matérn-5/2 kernel with one lengthscale (1.0, variance 1.0, noise 0.1 to
start), per batch two dual steps at 0.8 and 100 Adam steps at 0.01 on the hyperparameters
and ``Z`` (Adam's state reset each batch), a memory growing by 10 points per batch; the
offline ceiling is t-SVGP with 2,000 Adam steps on batches of 200. (The authors' loader sorts
the data with ``np.sort(XY, axis=0)`` but drops the result, so their batches are random; so
are these.)

The UCI files cannot be downloaded here, so the data are synthetic stand-ins with the same
``N``, ``D``, split and batches, drawn with fixed seeds: ``x ~ N(0, I_D)``, ``f`` a sum of
four ridge functions ``sin(w_k . x + c_k)`` on random directions (three of them on the first
six inputs, one on all), ``y = f + 0.3 noise``.

Models, as the paper's: the one-shot SVGP on all the training data (the ceiling: 2,000
steps on batches of 200, natural gradients for ``q(u)`` at 0.1, Adam at 0.01), and
``gp.sequential`` with a memory chosen by the paper's rule (``lambda``) or at random, and
without memory (the streaming baseline; the paper's other baseline, Bui et al.'s online
sparse GP, is not in inferax). Choices where ours differ: the dual step for a Gaussian
likelihood is one exact step (the paper's two steps at 0.8 leave 4% of the update undone);
the memory has a fixed size, ``--memory`` (default 500, the size the authors' reaches after
50 batches), re-chosen from the old memory and each batch. One line per model: test NLPD
(mean ``-log p(y* | data)``, standardised ``y``), RMSE, and seconds per batch (the first,
which compiles, excluded) or for the whole fit.

    python benchmarks/sequential_gp.py [--datasets bike,elevators] [--batches 50]
                                       [--hyper-steps 100] [--memory 500]
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from inferax.variational import gp  # noqa: E402

DATASETS = {"bike": (17_379, 17), "elevators": (16_599, 18)}
"""The paper's UCI regression sets: (N, D)."""
M = 100
FOLDS = 10


def stand_in(name):
    """A synthetic set with the UCI set's ``N`` and ``D``, standardised, split 9:1 as one
    fold of 10-fold cross-validation."""
    n, dim = DATASETS[name]
    rng = np.random.default_rng(sorted(DATASETS).index(name))
    X = rng.normal(size=(n, dim))
    f = np.zeros(n)
    for k in range(4):
        w = np.zeros(dim)
        used = dim if k == 3 else 6
        w[:used] = rng.normal(size=used) / np.sqrt(used)
        f += np.sin(1.5 * X @ w + rng.uniform(0, 2 * np.pi))
    y = f + 0.3 * rng.normal(size=n)
    X = (X - X.mean(0)) / X.std(0)
    y = (y - y.mean()) / y.std()
    order = rng.permutation(n)
    test, train = order[: n // FOLDS], order[n // FOLDS :]
    return X[train], y[train], X[test], y[test]


def score(model, Xt, yt):
    nlpd = -float(np.mean(model.log_predictive_density(Xt, yt)))
    mean, _ = model.predict_y(Xt)
    return nlpd, float(np.sqrt(np.mean((np.asarray(mean) - yt) ** 2)))


def parts():
    return gp.matern52(1.0, 1.0), gp.gaussian(0.1)


def run(name, X, y, Xt, yt, args):
    Z = X[:M]
    start = time.perf_counter()
    offline = gp.fit(
        gp.svgp(Z, *parts()),
        jax.random.key(0),
        X,
        y,
        num_steps=args.offline_steps,
        batch_size=200,
        learning_rate=0.01,
        progress=False,
    )
    wall = time.perf_counter() - start
    nlpd, rmse = score(offline.model, Xt, yt)
    print(
        f"{name:9s} one-shot SVGP   NLPD {nlpd:.4f}  RMSE {rmse:.4f}  "
        f"{wall:.1f} s for {args.offline_steps} steps of 200",
        flush=True,
    )
    results = {"offline": nlpd}
    batches = np.array_split(np.arange(X.shape[0]), args.batches)
    for label, size, rule in (
        ("memory lambda", args.memory, "lambda"),
        ("memory random", args.memory, "random"),
        ("no memory", 0, "random"),
    ):
        model = gp.sequential(
            gp.svgp(Z, *parts(), parametrization="dual"),
            memory_size=size,
            memory_rule=rule,
            inducing_rule="gradient",
            num_hyper_steps=args.hyper_steps,
            learning_rate=0.01,
            dual_steps=1,
        )
        times = []
        for t, index in enumerate(batches):
            start = time.perf_counter()
            model = model.update(jax.random.key(t), X[index], y[index])
            jax.block_until_ready(model.model.lambda_2)
            times.append(time.perf_counter() - start)
        nlpd, rmse = score(model, Xt, yt)
        results[label] = nlpd
        print(
            f"{name:9s} {label:15s} NLPD {nlpd:.4f}  RMSE {rmse:.4f}  "
            f"{np.mean(times[1:]):.2f} s per batch (first, compiling: {times[0]:.1f} s)",
            flush=True,
        )
    print(
        f"{name:9s} NLPD above the one-shot fit: "
        + ", ".join(
            f"{k} {v - results['offline']:+.4f}" for k, v in results.items() if k != "offline"
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="bike,elevators")
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--hyper-steps", type=int, default=100)
    parser.add_argument("--memory", type=int, default=500)
    parser.add_argument("--offline-steps", type=int, default=2_000)
    args = parser.parse_args()
    names = args.datasets.split(",")
    unknown = set(names) - set(DATASETS)
    if unknown:
        parser.error(f"unknown data set(s) {sorted(unknown)}; choose from {sorted(DATASETS)}")
    print(
        f"synthetic stand-ins, {args.batches} random batches, M = {M}, memory "
        f"{args.memory}, {args.hyper_steps} Adam steps at 0.01 per batch, float64"
    )
    total = time.perf_counter()
    for name in names:
        run(name, *stand_in(name), args)
    print(f"total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
