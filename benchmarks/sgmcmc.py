"""Stochastic-gradient kernels on logistic regression: N=100,000, d=50, batch 256, 4 chains.

Prints one line per figure:
- steps per second (chain-steps: chains x steps / sampling seconds) of ``inferax.sample``
  with ``samplers.sgld``, and of ``blackjax.sgld`` in a hand-written ``lax.scan`` over
  ``vmap``-ed chains on the same data, batch size and gradient function, with minibatches
  drawn by ``jax.random.randint`` (with replacement: the cheapest draw there is), keeping
  every draw (inferax also keeps its per-step statistics);
- the overhead ratio: inferax's time per step over the time of the minibatch gradient
  alone, both for 4 chains; the gradient is timed inside a ``lax.scan`` of gradient
  evaluations on pre-drawn indices, so that no dispatch cost hides in either figure. It is
  printed twice: against the gradient with its batch read from the full data by index
  (what every minibatch step must do), and against the gradient on a batch already in
  cache (the arithmetic alone);
- for each kernel, the error of the posterior mean against a NUTS reference (root mean
  square over the 50 coefficients, in units of the reference's posterior sd), with the
  sampling seconds it took.

The speed figures are the fastest of 5 runs of 5,000 steps, inferax and the peer taking
turns so that both see the same load. Run with ``./dev bench sgmcmc`` (``--speed-only``
stops after the speed figures, before the 10-minute NUTS reference).
"""

from __future__ import annotations

import sys
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import inferax
from inferax import samplers

NUM_DATA, DIM, BATCH, CHAINS = 100_000, 50, 256, 4
NUM_WARMUP, NUM_SAMPLES = 2000, 5000


def make_target() -> inferax.Target:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=DIM)
    x = (rng.normal(size=(NUM_DATA, DIM)) / np.sqrt(DIM)).astype(np.float32)
    y = (rng.uniform(size=NUM_DATA) < 1.0 / (1.0 + np.exp(-x @ weights))).astype(np.float32)

    def log_likelihood(w, batch):
        logits = batch["x"] @ w
        return jnp.sum(batch["y"] * logits - jax.nn.softplus(logits))

    return inferax.Target(
        log_prior=lambda w: -0.5 * jnp.sum(w**2),
        init=jnp.zeros(DIM),
        log_likelihood=log_likelihood,
        data={"x": x, "y": y},
    )


def best_of(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def inferax_runner(target, kernel, num_samples):
    """A function that runs ``inferax.sample`` (warm compile cache after its first call) and
    returns the sampling seconds per step of all chains, and the posterior."""

    def run():
        post = inferax.sample(
            target,
            kernel,
            jax.random.key(1),
            num_chains=CHAINS,
            num_warmup=NUM_WARMUP,
            num_samples=num_samples,
            chunk_size=num_samples,
            progress=False,
        )
        return post.timing["sampling"] / num_samples, post

    run()  # compile
    return run


def inferax_seconds_per_step(target, kernel, num_samples) -> tuple[float, inferax.Posterior]:
    """Sampling seconds per step (all chains), the best of 3 on a warm compile cache."""
    run = inferax_runner(target, kernel, num_samples)
    return min((run() for _ in range(3)), key=lambda result: result[0])


def best_in_turn(runners: dict, repeats: int = 5) -> dict[str, float]:
    """The fastest of ``repeats`` calls of each runner (each returns its own seconds per
    step), the runners taking turns so that a change in load falls on all of them alike."""
    best = dict.fromkeys(runners, float("inf"))
    for _ in range(repeats):
        for name, run in runners.items():
            best[name] = min(best[name], run())
    return best


def blackjax_runner(target, step_size, num_steps):
    """A function that runs ``blackjax.sgld`` in a compiled ``lax.scan`` and returns its
    seconds per step of all chains."""
    grad_fn = jax.grad(target.minibatch_logdensity)
    sgld = blackjax.sgld(grad_fn)
    data = jax.tree.map(jnp.asarray, target.data)

    @jax.jit
    def run(rng_key, positions):
        def one_step(positions, key):
            keys = jax.random.split(key, CHAINS)

            def chain_step(k, position):
                batch_key, step_key = jax.random.split(k)
                idx = jax.random.randint(batch_key, (BATCH,), 0, NUM_DATA)
                batch = jax.tree.map(lambda leaf: leaf[idx], data)
                return sgld.step(step_key, position, batch, step_size)

            positions = jax.vmap(chain_step)(keys, positions)
            return positions, positions  # keep every draw, as a sampler must

        return jax.lax.scan(one_step, positions, jax.random.split(rng_key, num_steps))

    positions = jnp.zeros((CHAINS, DIM))
    jax.block_until_ready(run(jax.random.key(0), positions))
    return lambda: best_of(lambda: run(jax.random.key(1), positions), repeats=1) / num_steps


def gradient_seconds(target, num_steps, gather: bool) -> float:
    """One minibatch gradient for every chain inside a scan, on pre-drawn indices: with
    ``gather``, the batch is read from the full data each step (as any minibatch step must);
    without, it is one of 16 batches read once, which stay in cache."""
    data = jax.tree.map(jnp.asarray, target.data)
    idx = jax.random.randint(jax.random.key(2), (16, CHAINS, BATCH), 0, NUM_DATA)
    batches = jax.tree.map(lambda leaf: leaf[idx], data)
    grad_fn = jax.vmap(jax.grad(target.minibatch_logdensity))

    @jax.jit
    def run(positions):
        def one_step(positions, i):
            if gather:
                batch = jax.tree.map(lambda leaf: leaf[idx[i % 16]], data)
            else:
                batch = jax.tree.map(lambda leaf: leaf[i % 16], batches)
            return positions - 1e-9 * grad_fn(positions, batch), None

        return jax.lax.scan(one_step, positions, jnp.arange(num_steps))[0]

    positions = jnp.zeros((CHAINS, DIM))
    run(positions).block_until_ready()
    return best_of(lambda: run(positions)) / num_steps


def nuts_reference(target) -> tuple[np.ndarray, np.ndarray, float]:
    start = time.perf_counter()
    post = inferax.sample(
        target,
        samplers.nuts(),
        jax.random.key(3),
        num_chains=CHAINS,
        num_warmup=500,
        num_samples=1000,
        progress=False,
    )
    draws = post.draws["x"].reshape(-1, DIM)
    return draws.mean(axis=0), draws.std(axis=0), time.perf_counter() - start


def main() -> None:
    target = make_target()
    device = jax.devices()[0].device_kind
    print(
        f"setup: logistic regression N={NUM_DATA} d={DIM} batch={BATCH} chains={CHAINS} "
        f"on {device}, jax {jax.__version__}, blackjax {blackjax.__version__}"
    )

    sgld = samplers.sgld(step_size=1e-5, batch_size=BATCH)
    inferax_run = inferax_runner(target, sgld, NUM_SAMPLES)
    speeds = best_in_turn(
        {
            "inferax": lambda: inferax_run()[0],
            "blackjax": blackjax_runner(target, 1e-5, NUM_SAMPLES),
        }
    )
    per_step, peer = speeds["inferax"], speeds["blackjax"]
    grad = gradient_seconds(target, NUM_SAMPLES, gather=True)
    cached = gradient_seconds(target, NUM_SAMPLES, gather=False)
    print(
        f"steps/s inferax sgld: {CHAINS / per_step:,.0f} chain-steps/s "
        f"({per_step * 1e6:.1f} us per step of {CHAINS} chains)"
    )
    print(
        f"steps/s blackjax.sgld in lax.scan: {CHAINS / peer:,.0f} chain-steps/s "
        f"({peer * 1e6:.1f} us per step of {CHAINS} chains); inferax / blackjax "
        f"{peer / per_step:.2f}"
    )
    print(
        f"overhead ratio inferax sgld step / minibatch gradient (batch read from the data "
        f"by index): {per_step / grad:.2f} ({per_step * 1e6:.1f} us / {grad * 1e6:.1f} us)"
    )
    print(
        f"overhead ratio inferax sgld step / minibatch gradient on a batch already in "
        f"cache: {per_step / cached:.2f} ({per_step * 1e6:.1f} us / {cached * 1e6:.1f} us)"
    )
    if "--speed-only" in sys.argv:
        return

    ref_mean, ref_sd, ref_seconds = nuts_reference(target)
    print(f"reference: NUTS 4 x 1000 draws after 500 warmup, {ref_seconds:.0f} s in all")
    kernels = {
        "sgld": sgld,
        "sghmc": samplers.sghmc(step_size=1e-6, batch_size=BATCH, friction=50.0),
        "psgld": samplers.psgld(step_size=2e-7, batch_size=BATCH),
        "sgld_cv": samplers.sgld_cv(step_size=2e-4, batch_size=BATCH),
        "structured_sgld": samplers.structured_sgld(
            step_size=1e-5,
            batch_size=BATCH,
            groups=(tuple(range(25)), tuple(range(25, 50))),
            buffer_size=200,
        ),
    }
    for name, kernel in kernels.items():
        per_step, post = inferax_seconds_per_step(target, kernel, NUM_SAMPLES)
        mean = post.draws["x"].reshape(-1, DIM).mean(axis=0)
        error = float(np.sqrt(np.mean(((mean - ref_mean) / ref_sd) ** 2)))
        seconds = per_step * NUM_SAMPLES
        print(
            f"posterior-mean error {name}: {error:.3f} reference sd after {seconds:.2f} s "
            f"of sampling ({CHAINS} x {NUM_SAMPLES} steps; {error * seconds:.3f} sd x s)"
        )


if __name__ == "__main__":
    main()
