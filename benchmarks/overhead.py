"""Cheap steps stay cheap: inferax's whole call against blackjax's kernel in a bare lax.scan.

Logistic regression, N = 20,000 data points, d = 10 features plus a bias, one chain, 50,000
steps, every position kept:
- ``samplers.sgld(batch_size=200)`` against ``blackjax.sgld`` in a ``lax.scan`` with
  ``jax.random.randint`` minibatch indices;
- ``samplers.mala`` with a fixed step against ``blackjax.mala``.
Both sides are compiled before they are timed (inferax by a first call with the same
settings, blackjax with ``jit(...).lower(...).compile()``), then timed three times in turn,
the fastest counting; the timed call is the whole call:
inferax's ``inferax.sample`` at its default settings (validation, chunks, draws and
statistics on the host as a ``Posterior``), blackjax's compiled scan and the copy of its
draws to NumPy. One line per figure:

    ./dev bench overhead
"""

from __future__ import annotations

import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import inferax
from inferax import samplers

NUM_DATA, NUM_FEATURES, NUM_STEPS, BATCH_SIZE = 20_000, 10, 50_000, 200
SGLD_STEP, MALA_STEP = 1e-5, 2e-5


def make_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(NUM_DATA, NUM_FEATURES)).astype(np.float32)
    w = rng.normal(size=NUM_FEATURES)
    y = (rng.uniform(size=NUM_DATA) < 1 / (1 + np.exp(-(X @ w + 0.5)))).astype(np.float32)
    return X, y


def log_prior(params):
    return -0.5 * jnp.sum(params**2)


def log_likelihood(params, batch):
    X, y = batch
    logits = X @ params[:-1] + params[-1]
    return jnp.sum(y * logits - jnp.logaddexp(0.0, logits))


REPEATS = 3
"""Timed calls per side, alternating; the fastest counts (the machine is shared)."""


def time_both(target, kernel, run, init) -> tuple[float, float, float]:
    """``(inferax total, inferax in chunks, blackjax total)``, the fastest of ``REPEATS``."""
    settings = dict(num_chains=1, num_warmup=0, num_samples=NUM_STEPS, progress=False)
    inferax.sample(target, kernel, jax.random.key(0), **settings)  # compiles
    program = jax.jit(run).lower(jax.random.key(0), init).compile()
    jax.block_until_ready(program(jax.random.key(0), init))
    best = [np.inf, np.inf, np.inf]
    for repeat in range(1, REPEATS + 1):
        start = time.perf_counter()
        post = inferax.sample(target, kernel, jax.random.key(repeat), **settings)
        total = time.perf_counter() - start
        assert post.timing["compile"] == 0.0
        if total < best[0]:
            best[:2] = total, post.timing["sampling"]
        start = time.perf_counter()
        draws = np.asarray(program(jax.random.key(repeat), init))
        best[2] = min(best[2], time.perf_counter() - start)
        assert draws.shape == (NUM_STEPS, NUM_FEATURES + 1)
    return best[0], best[1], best[2]


def blackjax_sgld(X, y):
    grad_estimator = blackjax.sgmcmc.grad_estimator(log_prior, log_likelihood, NUM_DATA)
    sgld = blackjax.sgld(grad_estimator)

    def run(rng_key, position):
        def one_step(position, key):
            index_key, step_key = jax.random.split(key)
            indices = jax.random.randint(index_key, (BATCH_SIZE,), 0, NUM_DATA)
            position = sgld.step(step_key, position, (X[indices], y[indices]), SGLD_STEP)
            return position, position

        return jax.lax.scan(one_step, position, jax.random.split(rng_key, NUM_STEPS))[1]

    return run


def blackjax_mala(X, y):
    def logdensity(params):
        return log_prior(params) + log_likelihood(params, (X, y))

    mala = blackjax.mala(logdensity, MALA_STEP)

    def run(rng_key, position):
        def one_step(state, key):
            state, _ = mala.step(key, state)
            return state, state.position

        state = mala.init(position)
        return jax.lax.scan(one_step, state, jax.random.split(rng_key, NUM_STEPS))[1]

    return run


def report(name: str, inferax_total: float, inferax_chunks: float, blackjax_total: float):
    us = 1e6 / NUM_STEPS
    print(
        f"{name:5s} blackjax total_s={blackjax_total:7.3f} us_per_step={blackjax_total * us:6.2f}",
        flush=True,
    )
    print(
        f"{name:5s} inferax  total_s={inferax_total:7.3f} us_per_step={inferax_total * us:6.2f} "
        f"in_chunks_us_per_step={inferax_chunks * us:6.2f}",
        flush=True,
    )
    print(
        f"{name:5s} ratio    total_inferax/blackjax={inferax_total / blackjax_total:.2f}",
        flush=True,
    )


def main():
    X, y = make_data()
    init = jnp.zeros(NUM_FEATURES + 1)
    target = inferax.Target(
        log_prior=log_prior, log_likelihood=log_likelihood, data=(X, y), init=init
    )
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {NUM_STEPS} steps, one chain")
    X, y = jnp.asarray(X), jnp.asarray(y)
    sgld = samplers.sgld(step_size=SGLD_STEP, batch_size=BATCH_SIZE)
    report("sgld", *time_both(target, sgld, blackjax_sgld(X, y), init))
    mala = samplers.mala(step_size=MALA_STEP)
    report("mala", *time_both(target, mala, blackjax_mala(X, y), init))


if __name__ == "__main__":
    main()
