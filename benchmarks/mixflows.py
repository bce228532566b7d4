"""MixFlows on the cross, a banana and Neal's funnel: ELBO against N, kernelized Stein
discrepancy against NUTS and a RealNVP flow, and seconds per i.i.d. draw.

The logistic regression has 100 points and 4 features (prior N(0, I)). Prints one line
per figure:
- the cross target's augmented ELBO at N = 100, 200, 500 and 1000 (1000 draws; the
  paper's settings: L = 60, epsilon = 0.0035, reference mean (0.0144, -0.0323) and scale
  (0.1611, 1.9906)), next to the paper's -0.507, -0.414, -0.278 and -0.194, and the
  reference alone (N = 1; the paper's mean-field Gaussian gives -0.850);
- for each target, the kernelized Stein discrepancy (IMQ kernel ``(1 + |x - y|^2)^(-1/2)``,
  V-statistic, the square root of the mean Stein kernel over all pairs of 5000 draws) of the
  reference q0, the MixFlow (reference fitted by the VI engine, epsilon tuned by ELBO over
  a grid), inferax NUTS (4 chains x 1250 draws after 1000 warmup) and a RealNVP flow
  (8 layers, (64, 64), 2000 Adam steps of 256 draws);
- the MixFlow's seconds per i.i.d. draw, 5000 draws vectorised with ``vmap``.

The paper's banana and funnel are not ours (``inferax.examples``: a banana with
``z1 ~ N(0, 2^2)`` and a 2-D funnel with ``v ~ N(0, 3^2)``), so its KSD figures (MixFlow
0.045-0.058 on its banana and 0.035-0.040 on its funnel, NUTS 0.114 and 0.235) are context,
not a like-for-like target.

Run with ``./dev bench mixflows``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import inferax
from inferax import examples, flows, samplers, variational

NUM_DRAWS = 5000
CROSS_REFERENCE = ((0.0144, -0.0323), (0.1611, 1.9906))
PAPER_CROSS = {100: -0.507, 200: -0.414, 500: -0.278, 1000: -0.194}
MIXFLOW_SETTINGS = {
    "banana": (200, 30),
    "funnel": (200, 30),
    "cross": (200, 60),
    "logistic": (200, 30),
}
"""(N, L) per target; epsilon is tuned over ``STEP_GRID``."""
STEP_GRID = (0.0035, 0.01, 0.03, 0.1)


def imq_ksd(draws: np.ndarray, scores: np.ndarray, chunk: int = 500) -> float:
    """The V-statistic KSD with the IMQ kernel ``(1 + r^2)^(-1/2)``, in chunks of rows."""
    x, s = jnp.asarray(draws, jnp.float32), jnp.asarray(scores, jnp.float32)
    dim = x.shape[1]

    @jax.jit
    def block(xi, si):
        d = xi[:, None, :] - x[None, :, :]
        r2 = jnp.sum(d**2, axis=-1)
        base = 1.0 + r2
        k = base**-0.5
        grad_coef = -1.0 * base**-1.5  # 2 beta (1 + r^2)^(beta - 1), beta = -1/2
        term_ss = (si @ s.T) * k
        term_cross = grad_coef * (jnp.sum(s[None, :, :] * d, -1) - jnp.sum(si[:, None, :] * d, -1))
        term_trace = dim * base**-1.5 - 3.0 * r2 * base**-2.5
        return jnp.sum(term_ss + term_cross + term_trace)

    total = sum(
        float(block(x[i : i + chunk], s[i : i + chunk])) for i in range(0, x.shape[0], chunk)
    )
    return float(np.sqrt(max(total, 0.0) / x.shape[0] ** 2))


def logistic_target() -> inferax.Target:
    """Bayesian logistic regression: 100 points, 4 features, prior N(0, I) on the weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    y = (rng.uniform(size=100) < 1 / (1 + np.exp(-x @ np.array([1.0, -0.5, 0.8, 0.0])))).astype(
        np.float32
    )

    def logdensity(w):
        logits = x @ w
        return -0.5 * jnp.sum(w**2) + jnp.sum(y * logits - jax.nn.softplus(logits))

    return inferax.Target.from_logdensity(logdensity, jnp.zeros(4))


def scores_of(target, draws):
    return np.asarray(jax.vmap(jax.grad(target.logdensity))(jnp.asarray(draws, jnp.float32)))


def cross_elbo_table() -> None:
    target = examples.cross()
    for num_flows in (1, *PAPER_CROSS):
        flow = variational.mixflow(target, num_flows, 60, 0.0035, CROSS_REFERENCE)
        start = time.perf_counter()
        elbo, se = flow.elbo(jax.random.key(0), 1000)
        seconds = time.perf_counter() - start
        paper = PAPER_CROSS.get(num_flows, -0.850)
        print(
            f"cross ELBO N={num_flows}: {elbo:.3f} +- {se:.3f} (paper {paper:.3f}; "
            f"{seconds:.1f} s for 1000 orbit estimates)",
            flush=True,
        )


def ksd_lines(name: str) -> None:
    target = logistic_target() if name == "logistic" else examples.ENERGIES[name]()
    num_flows, leapfrog_steps = MIXFLOW_SETTINGS[name]
    dim = target.init.shape[0]
    key = jax.random.key(1)
    approx = variational.fit(
        target,
        variational.mixflow(target, num_flows, leapfrog_steps),
        key,
        optimizer=optax.adam(1e-2),
        num_steps=2000,
        num_particles=16,
        num_khat_draws=100,
        progress=False,
    )
    flow = approx.family.tune(jax.random.key(2), STEP_GRID, num_draws=100)

    reference = flow.mean + flow.scale * np.random.default_rng(0).normal(size=(NUM_DRAWS, dim))
    flow.sample_augmented(jax.random.key(3), NUM_DRAWS)  # compile
    start = time.perf_counter()
    mixflow_draws = np.asarray(flow.sample_augmented(jax.random.key(4), NUM_DRAWS).x)
    per_draw = (time.perf_counter() - start) / NUM_DRAWS

    post = inferax.sample(
        target,
        samplers.nuts(),
        jax.random.key(5),
        num_chains=4,
        num_warmup=1000,
        num_samples=NUM_DRAWS // 4,
        progress=False,
    )
    nuts_draws = np.asarray(post.draws["x"]).reshape(-1, dim)

    approx = variational.fit(
        target,
        # The targets spread over a box several units wide around the origin (see flows.py).
        flows.realnvp(8, (64, 64), base_scale=2.0),
        jax.random.key(6),
        optimizer=optax.adam(1e-3),
        num_steps=2000,
        num_particles=256,
        progress=False,
    )
    realnvp_draws = np.asarray(approx.sample(jax.random.key(7), NUM_DRAWS))

    ksd = {
        label: imq_ksd(d, scores_of(target, d))
        for label, d in (
            ("q0", reference),
            ("MixFlow", mixflow_draws),
            ("NUTS", nuts_draws),
            ("RealNVP", realnvp_draws),
        )
    }
    print(
        f"{name} KSD ({NUM_DRAWS} draws): "
        + ", ".join(f"{k} {v:.3f}" for k, v in ksd.items())
        + f" (MixFlow N={num_flows}, L={leapfrog_steps}, epsilon={flow.step_size})",
        flush=True,
    )
    print(
        f"{name} MixFlow seconds per i.i.d. draw ({NUM_DRAWS} draws vectorised): {per_draw:.2e}",
        flush=True,
    )


def main() -> None:
    print(f"# MixFlows on {jax.devices()[0].device_kind}, jax {jax.__version__}")
    cross_elbo_table()
    for name in ("banana", "funnel", "cross", "logistic"):
        ksd_lines(name)


if __name__ == "__main__":
    main()
