"""Variational inference for SDEs driven by fractional noise: the bridge and Hurst recovery.

Prints one line per figure:
- the time per ELBO step (value and gradient) at 32 paths x 200 steps;
- the bridge (X0 = 0, s = 1, b = 0, type I weights fitted on T = 6 with K = 5 and
  gamma_max = 20, one observation X(2) = 0 with noise sd 0.1, H fixed): the posterior
  variance of X(1) from the trained control against the exact variance under the
  Markov-approximate prior (issue 7's table), for H = 0.2, 0.3, 0.5, 0.7, 0.9;
- Hurst recovery: fractional Ornstein-Uhlenbeck series ``dX = -theta X dt + dB_H``
  (theta = 1, 8 series of 200 steps of 0.02, exact fBM by Cholesky, observed with noise sd
  0.05), fitted with H and theta learned together (3000 Adam steps at 1e-2, 8 paths per
  series; H starts at 0.5, or 0.6 when the truth is 0.5, and theta at 0.5); the learned H
  against the truth, for H = 0.7 and 0.5.

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
HURST_STEPS = 3000


def time_per_step() -> None:
    times = np.linspace(0.0, STEPS * DT, STEPS + 1)
    model = sde.fractional_sde(jax.random.key(0), hurst=0.6, learn_hurst=True)
    index = np.arange(1, STEPS + 1)
    values = np.zeros(STEPS)
    num_steps = 50
    model.fit(jax.random.key(1), times, index, values, NOISE, optimizer=optax.adam(1e-3),
              num_steps=num_steps, num_paths=32)  # compile  # fmt: skip
    start = time.perf_counter()
    model.fit(jax.random.key(2), times, index, values, NOISE, optimizer=optax.adam(1e-3),
              num_steps=num_steps, num_paths=32)  # fmt: skip
    per_step = (time.perf_counter() - start) / num_steps
    print(f"time per ELBO step (32 paths x {STEPS} steps, value and gradient): "
          f"{1e3 * per_step:.2f} ms", flush=True)  # fmt: skip


def bridge() -> None:
    for hurst, want in BRIDGE.items():
        model = sde.fractional_sde(jax.random.key(0), hurst=hurst, kind="I", horizon=6.0)
        fitted, _ = model.fit(jax.random.key(1), BRIDGE_TIMES, [100], [0.0], 0.1,
                              optimizer=optax.adam(1e-2), num_steps=3000,
                              num_paths=64)  # fmt: skip
        paths = fitted.sample_paths(jax.random.key(2), BRIDGE_TIMES, 4000,
                                    observed_index=[100], observed_values=[0.0])  # fmt: skip
        variance = float(np.var(np.asarray(paths[:, 50]), ddof=1))
        print(f"bridge H={hurst}: posterior variance of X(1) {variance:.3f}, exact under the "
              f"approximate prior {want:.3f} (ratio {variance / want:.3f})", flush=True)


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


def hurst_recovery() -> None:
    times = np.linspace(0.0, STEPS * DT, STEPS + 1)
    index = np.arange(1, STEPS + 1)
    for truth in (0.7, 0.5):
        observed = fou_series(truth, seed=int(truth * 10))
        model = sde.fractional_sde(
            jax.random.key(0), hurst=0.5 if truth != 0.5 else 0.6, learn_hurst=True,
            kind="I", horizon=STEPS * DT, drift=linear_drift,
            drift_params=jnp.asarray(np.log(np.expm1(0.5))),
        )  # fmt: skip
        start = time.perf_counter()
        fitted, trace = model.fit(jax.random.key(1), times, index, observed, NOISE,
                                  optimizer=optax.adam(1e-2), num_steps=HURST_STEPS,
                                  num_paths=8)  # fmt: skip
        theta = float(jax.nn.softplus(fitted.drift_params))
        print(f"Hurst recovery: truth {truth}, learned H {float(fitted.hurst):.3f}, theta "
              f"{theta:.3f} (truth 1), ELBO {trace[-100:].mean():.1f}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)  # fmt: skip


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
