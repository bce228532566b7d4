"""Federated SGLD on a non-IID classification problem: FSGLD against DSGLD.

Logistic regression (5 features and an intercept, prior N(0, I)) on synthetic data split
over 10 clients of 500 points. Client ``s`` draws its labels with positive share
``pi_s ~ Beta(0.5, 0.5)`` (non-IID: most clients hold mostly one class) or
``Beta(100, 100)`` (IID), and features ``x | y ~ N((2y - 1) mu, I)``, so the model is well
specified. The test set (2,000 points) has balanced classes.

Prints one line per figure:
- test log-likelihood (mean over test points of the log posterior predictive) of FSGLD
  with Gaussian surrogates fitted by local SGLD (``"gaussian"``), of FSGLD with each
  client's likelihood expanded at the global mode (``"global_laplace"``), and of DSGLD,
  non-IID and IID, at 40 local steps;
  the paper reports, non-IID, DSGLD -1.11 against FSGLD -0.67 (on its own data);
- the bias of each: the distance of its posterior mean from that of NUTS on the pooled data,
  root mean square over the 6 coefficients in units of NUTS's posterior sd, with the same
  figure for NUTS's own Monte Carlo error (the sd of the mean over its chains) as the floor;
- wall time per communication round (the fastest of 5 runs of 100 rounds, the two kernels
  run in turn so that both see the same load; 40 local steps, 8 chains; 12 clients, a
  multiple of 4) on 1 device and on 4 (CPU devices of this machine,
  ``--xla_force_host_platform_device_count=4``, in a subprocess), and the ratio FSGLD / DSGLD.

Run with ``./dev bench federated``.
"""

from __future__ import annotations

import os
import subprocess
import sys

NUM_CLIENTS, PER_CLIENT, DIM, NUM_TEST = 10, 500, 5, 2000
STEP, BATCH, LOCAL_STEPS, CHAINS = 5e-5, 50, 40, 8
NUM_WARMUP, NUM_SAMPLES = 2000, 4000


def make_data(concentration: float, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=DIM) * 0.5

    def draw(labels):
        x = (2 * labels[:, None] - 1) * mu + rng.normal(size=(labels.size, DIM))
        return np.concatenate([x, np.ones((labels.size, 1))], axis=1).astype(np.float32)

    shares = rng.beta(concentration, concentration, size=NUM_CLIENTS)
    labels = np.concatenate(
        [(rng.uniform(size=PER_CLIENT) < p).astype(np.float32) for p in shares]
    )
    test_labels = (np.arange(NUM_TEST) % 2).astype(np.float32)
    return (draw(labels), labels), (draw(test_labels), test_labels)


def make_target(train):
    """The federated target: the pooled target split over ``NUM_CLIENTS`` clients."""
    from inferax.samplers import federated

    return federated.split(pooled_target(train), NUM_CLIENTS)


def with_surrogates(fed, kind: str):
    """``fed`` carrying surrogates of ``kind``: ``"gaussian"`` by local SGLD with ``S`` times
    the sampler's step, or ``"global_laplace"``."""
    import jax

    from inferax.samplers import federated

    settings = {"step_size": STEP * NUM_CLIENTS} if kind == "gaussian" else {}
    surrogates = federated.fit_surrogates(fed, jax.random.key(3), kind, **settings)
    return federated.with_surrogates(fed, surrogates)


def pooled_target(train):
    import jax
    import jax.numpy as jnp

    import inferax

    def log_likelihood(w, batch):
        x, y = batch
        logits = x @ w
        return jnp.sum(y * jax.nn.log_sigmoid(logits) + (1 - y) * jax.nn.log_sigmoid(-logits))

    return inferax.Target(
        log_prior=lambda w: -0.5 * jnp.sum(w**2),
        init=jnp.zeros(DIM + 1),
        log_likelihood=log_likelihood,
        data=train,
    )


def kernels(fed):
    """Each compared kernel with the target it samples (FSGLD's carries its surrogates)."""
    from inferax.samplers import federated

    fsgld = federated.fsgld(STEP, BATCH, LOCAL_STEPS)
    return {
        "FSGLD": (fsgld, with_surrogates(fed, "gaussian")),
        "FSGLD global-Laplace": (fsgld, with_surrogates(fed, "global_laplace")),
        "DSGLD": (federated.dsgld(STEP, BATCH, LOCAL_STEPS), fed),
    }


def figures(values: dict[str, float], digits: int) -> str:
    return ", ".join(f"{name} {value:.{digits}f}" for name, value in values.items())


def test_log_likelihood(draws, test):
    import numpy as np
    from scipy.special import expit, logsumexp

    x, y = test
    w = draws.reshape(-1, DIM + 1)
    logits = x @ w.T  # (test points, draws)
    log_p = np.where(y[:, None] == 1, np.log(expit(logits)), np.log(expit(-logits)))
    return float(np.mean(logsumexp(log_p, axis=1) - np.log(w.shape[0])))


def time_per_round(kernels_by_name, key, repeats: int = 5) -> dict[str, float]:
    """Seconds per round of each kernel: the fastest of ``repeats`` runs of 100 rounds,
    after one that compiles; the kernels take turns, so a change in the machine's load
    falls on all of them alike."""
    import inferax

    num_samples = 100 * LOCAL_STEPS
    best = dict.fromkeys(kernels_by_name, float("inf"))
    for repeat in range(repeats + 1):
        for name, (kernel, fed) in kernels_by_name.items():
            post = inferax.sample(
                fed,
                kernel,
                key,
                num_chains=CHAINS,
                num_warmup=0,
                num_samples=num_samples,
                chunk_size=num_samples,
                progress=False,
            )
            if repeat > 0:
                best[name] = min(best[name], post.timing["sampling"])
    return {name: seconds / (num_samples / LOCAL_STEPS) for name, seconds in best.items()}


def timings(devices: int) -> None:
    import jax

    global NUM_CLIENTS
    NUM_CLIENTS = 12  # a multiple of 4, the same on 1 device and on 4
    fed = make_target(make_data(0.5)[0])
    # Both FSGLD variants run the same step; only their surrogates' values differ.
    timed = {name: pair for name, pair in kernels(fed).items() if name in ("FSGLD", "DSGLD")}
    seconds = time_per_round(timed, jax.random.key(1))
    print(
        f"federated time per round ({LOCAL_STEPS} local steps, {CHAINS} chains), {devices} "
        f"device(s): FSGLD {1e3 * seconds['FSGLD']:.1f} ms, DSGLD {1e3 * seconds['DSGLD']:.1f} "
        f"ms, ratio {seconds['FSGLD'] / seconds['DSGLD']:.2f}",
        flush=True,
    )


def nuts_reference(train):
    """NUTS on the pooled data: the posterior mean and sd of the coefficients, and the
    Monte Carlo error of that mean in sd units (root mean square over coefficients)."""
    import jax
    import numpy as np

    import inferax
    from inferax import samplers

    post = inferax.sample(
        pooled_target(train),
        samplers.nuts(),
        jax.random.key(2),
        num_chains=CHAINS,
        num_warmup=1000,
        num_samples=2000,
        progress=False,
    )
    draws = np.asarray(post.draws["x"])
    mean, sd = draws.reshape(-1, DIM + 1).mean(0), draws.reshape(-1, DIM + 1).std(0)
    chain_means = draws.mean(axis=1)
    mcse = chain_means.std(axis=0, ddof=1) / np.sqrt(CHAINS)
    return mean, sd, float(np.sqrt(np.mean((mcse / sd) ** 2)))


def accuracy() -> None:
    import jax
    import numpy as np

    import inferax

    for label, concentration in (("non-IID", 0.5), ("IID", 100.0)):
        train, test = make_data(concentration)
        fed = make_target(train)
        mean, sd, floor = nuts_reference(train)
        scores, biases = {}, {}
        for name, (kernel, target) in kernels(fed).items():
            post = inferax.sample(
                target,
                kernel,
                jax.random.key(0),
                num_chains=CHAINS,
                num_warmup=NUM_WARMUP,
                num_samples=NUM_SAMPLES,
                thinning=1,
                progress=False,
            )
            draws = np.asarray(post.draws["x"]).reshape(-1, DIM + 1)
            scores[name] = test_log_likelihood(post.draws["x"][:, ::10], test)
            biases[name] = float(np.sqrt(np.mean(((draws.mean(0) - mean) / sd) ** 2)))
        print(
            f"federated {label} test log-likelihood ({LOCAL_STEPS} local steps): "
            f"{figures(scores, 3)}",
            flush=True,
        )
        print(
            f"federated {label} posterior-mean error vs NUTS, in posterior sd ({LOCAL_STEPS} "
            f"local steps): {figures(biases, 2)}, NUTS Monte Carlo error {floor:.2f}",
            flush=True,
        )


def main() -> None:
    if "--timings" in sys.argv:
        timings(int(os.environ.get("FEDERATED_DEVICES", "1")))
        return
    accuracy()
    timings(1)
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", FEDERATED_DEVICES="4"
    )
    subprocess.run([sys.executable, __file__, "--timings"], env=env, check=True)


if __name__ == "__main__":
    main()
