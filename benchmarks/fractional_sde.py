"""Variational inference for SDEs driven by fractional noise: the bridge and Hurst recovery.

Prints one line per figure:
- the time per ELBO step (value and gradient) at 32 paths x 200 steps;
- the bridge (X0 = 0, s = 1, b = 0, type I weights fitted on T = 6 with K = 5 and
  gamma_max = 20, one observation X(2) = 0 with noise sd 0.1, H fixed; 3000 Adam steps,
  rate 1e-2 cosine-decayed to 1e-3, 64 paths): the posterior
  variance of X(1) from the trained control against the exact variance under the
  Markov-approximate prior (issue 7's table), for H = 0.2, 0.3, 0.5, 0.7, 0.9;
- Hurst recovery: fractional Ornstein-Uhlenbeck series ``dX = -theta X dt + dB_H``
  (theta = 1, 8 series of 200 steps of 0.02, exact fBM by Cholesky, observed with noise sd
  0.05), fitted with H and theta learned together on a grid of 9 solver steps between
  observations, finer towards each (``SUBSTEPS``; K = 8, gamma_max = 100; 3000 Adam
  steps, rate 1e-2 cosine-decayed to 1e-3, 8 paths per series; H starts at 0.5, or 0.6
  when the truth is 0.5, and theta at 0.5): the learned H against the truth, for H = 0.7
  and 0.5, and against the exact maximum likelihood under the same discretised
  approximate model (Kalman filter), which is the most the ELBO can recover.

Run with ``./dev bench fractional_sde [time] [bridge] [hurst]`` (all three by default).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from inferax.variational import sde

BRIDGE = {0.2: 1.181, 0.3: 0.836, 0.5: 0.482, 0.7: 0.298, 0.9: 0.174}
BRIDGE_TIMES = np.linspace(0.0, 2.0, 101)
SERIES, STEPS, DT, NOISE = 8, 200, 0.02, 0.05
HURST_TRUTHS, HURST_STEPS, HURST_K, HURST_GAMMA_MAX = (0.7, 0.5), 3000, 8, 100.0
SUBSTEPS = np.array([0.2, 0.2, 0.2, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.0125])
"""Solver steps between two observations, in fractions of their spacing: finer towards the
observation, where the posterior narrows (the drift-only control needs steps to narrow it
in: the ELBO's gap is ``1/2 (r - 1 - log r)`` per observation for a last step whose prior
variance is ``r`` times the posterior's)."""


def time_per_step() -> None:
    times = np.linspace(0.0, STEPS * DT, STEPS + 1)
    model = sde.fractional_sde(jax.random.key(0), hurst=0.6, learn_hurst=True)
    index = np.arange(1, STEPS + 1)
    values = np.zeros(STEPS)
    num_steps = 200
    # One optimizer object: it is part of the compiled step, so a new one would compile the
    # loop again. The fit's timing keeps compiling apart from optimising.
    optimizer = optax.adam(1e-3)
    result = sde.fit(
        model,
        jax.random.key(1),
        times,
        index,
        values,
        NOISE,
        optimizer=optimizer,
        num_steps=num_steps,
        num_paths=32,
        progress=False,
    )
    per_step = result.timing["optimization"] / num_steps
    print(
        f"time per ELBO step (32 paths x {STEPS} steps, value and gradient): "
        f"{1e3 * per_step:.2f} ms",
        flush=True,
    )


def bridge() -> None:
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, 3000, alpha=0.1))
    for hurst, want in BRIDGE.items():
        model = sde.fractional_sde(jax.random.key(0), hurst=hurst, kind="I", horizon=6.0)
        fitted = sde.fit(
            model,
            jax.random.key(1),
            BRIDGE_TIMES,
            [100],
            [0.0],
            0.1,
            optimizer=optimizer,
            num_steps=3000,
            num_paths=64,
            progress=False,
        ).sde
        paths = fitted.sample_paths(
            jax.random.key(2), BRIDGE_TIMES, 4000, observed_index=[100], observed_values=[0.0]
        )
        variance = float(np.var(np.asarray(paths[:, 50]), ddof=1))
        print(
            f"bridge H={hurst}: posterior variance of X(1) {variance:.3f}, exact under the "
            f"approximate prior {want:.3f} (ratio {variance / want:.3f})",
            flush=True,
        )


def fou_series(hurst: float, seed: int) -> np.ndarray:
    times = DT * np.arange(1, STEPS + 1)
    with jax.enable_x64(True):
        noise = np.asarray(sde.sample_fbm(jax.random.key(seed), hurst, times, SERIES))
    increments = np.diff(np.concatenate([np.zeros((SERIES, 1)), noise], axis=1), axis=1)
    x = np.zeros((SERIES, STEPS + 1))
    for i in range(STEPS):
        x[:, i + 1] = x[:, i] - 1.0 * x[:, i] * DT + increments[:, i]
    rng = np.random.default_rng(seed)
    return x[:, 1:] + NOISE * rng.normal(size=(SERIES, STEPS))


def linear_drift(params, t, x):
    del t
    return -jax.nn.softplus(params) * x


def exact_log_likelihood(hurst, theta, observed, speeds, horizon):
    """``log p(observed | H, theta)`` under the same discretised model the SDE is fitted
    with (Euler-Maruyama on ``(X, Y)`` with ``SUBSTEPS`` between observations, type I
    start), by a Kalman filter: the likelihood that the ELBO bounds."""
    k = speeds.shape[0]
    weights = sde.fbm.omega(hurst, speeds, horizon, "I")
    loading = jnp.concatenate([weights.sum()[None], jnp.ones(k)])
    transition, noise = jnp.eye(k + 1), jnp.zeros((k + 1, k + 1))
    for h in DT * SUBSTEPS:
        step = jnp.zeros((k + 1, k + 1))
        step = step.at[0, 0].set(1.0 - theta * h).at[0, 1:].set(-weights * speeds * h)
        step = step.at[1:, 1:].set(jnp.diag(1.0 - speeds * h))
        transition = step @ transition
        noise = step @ noise @ step.T + h * jnp.outer(loading, loading)
    start_cov = jnp.zeros((k + 1, k + 1)).at[1:, 1:].set(sde.fbm.stationary_covariance(speeds))

    def filter_one(series):
        def update(carry, value):
            mean, cov, total = carry
            mean, cov = transition @ mean, transition @ cov @ transition.T + noise
            variance = cov[0, 0] + NOISE**2
            residual = value - mean[0]
            total = total - 0.5 * (jnp.log(2 * jnp.pi * variance) + residual**2 / variance)
            gain = cov[:, 0] / variance
            return (mean + gain * residual, cov - jnp.outer(gain, cov[0]), total), None

        (_, _, total), _ = jax.lax.scan(update, (jnp.zeros(k + 1), start_cov, 0.0), series)
        return total

    return jnp.sum(jax.vmap(filter_one)(observed))


def exact_maximum_likelihood(observed, speeds, horizon):
    """``(H, theta)`` maximising ``exact_log_likelihood``, by L-BFGS in float64."""
    import scipy.optimize

    with jax.enable_x64(True):
        speeds = jnp.asarray(speeds, jnp.float64)
        loss = jax.jit(
            jax.value_and_grad(
                lambda p: (
                    -exact_log_likelihood(
                        jax.nn.sigmoid(p[0]),
                        jax.nn.softplus(p[1]),
                        jnp.asarray(observed),
                        speeds,
                        horizon,
                    )
                )
            )
        )
        result = scipy.optimize.minimize(
            lambda p: tuple(np.asarray(v, dtype=float) for v in loss(jnp.asarray(p))),
            np.array([0.0, 0.5]),
            jac=True,
            method="L-BFGS-B",
        )
        return float(jax.nn.sigmoid(result.x[0])), float(jax.nn.softplus(result.x[1]))


def hurst_recovery() -> None:
    within = np.cumsum(SUBSTEPS)
    within[-1] = 1.0
    times = np.concatenate([[0.0], DT * (np.arange(STEPS)[:, None] + within).ravel()])
    index = SUBSTEPS.size * np.arange(1, STEPS + 1)
    optimizer = optax.adam(optax.cosine_decay_schedule(1e-2, HURST_STEPS, alpha=0.1))
    for truth in HURST_TRUTHS:
        observed = fou_series(truth, seed=int(truth * 10))
        model = sde.fractional_sde(
            jax.random.key(0),
            hurst=0.5 if truth != 0.5 else 0.6,
            learn_hurst=True,
            kind="I",
            horizon=STEPS * DT,
            num_processes=HURST_K,
            gamma_max=HURST_GAMMA_MAX,
            drift=linear_drift,
            drift_params=jnp.asarray(np.log(np.expm1(0.5))),
        )
        start = time.perf_counter()
        result = sde.fit(
            model,
            jax.random.key(1),
            times,
            index,
            observed,
            NOISE,
            optimizer=optimizer,
            num_steps=HURST_STEPS,
            num_paths=8,
            progress=False,
        )
        fitted, trace = result.sde, result.elbo
        seconds = time.perf_counter() - start
        theta = float(jax.nn.softplus(fitted.drift_params))
        speeds = sde.fbm.gammas(HURST_K, HURST_GAMMA_MAX)
        exact_hurst, exact_theta = exact_maximum_likelihood(observed, speeds, STEPS * DT)
        print(
            f"Hurst recovery: truth {truth}, learned H {float(fitted.hurst):.3f}, theta "
            f"{theta:.3f} (truth 1), ELBO {trace[-100:].mean():.1f}, {seconds:.0f} s; exact "
            f"maximum likelihood under the same approximate model H {exact_hurst:.3f}, "
            f"theta {exact_theta:.3f}",
            flush=True,
        )


def main() -> None:
    import sys

    print(f"# fractional SDEs on {jax.devices()[0].device_kind}, jax {jax.__version__}")
    parts = sys.argv[1:] or ["time", "bridge", "hurst"]
    if "time" in parts:
        time_per_step()
    if "bridge" in parts:
        bridge()
    if "hurst" in parts:
        hurst_recovery()


if __name__ == "__main__":
    main()
