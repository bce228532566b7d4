"""inferax NUTS against NumPyro's own NUTS, in one process, on the same NumPyro models.

For each model and tool it prints one line: first-call seconds (compile + run), second-call
seconds (same model, new key), and min ESS_bulk over all scalar sites per sampling second.
NumPyro runs `MCMC(NUTS, chain_method="vectorized")`; both use 4 chains, 1000 warmup and
1000 draws, diagonal mass matrix adaptation and target acceptance 0.8.

    ./dev bench nuts_vs_numpyro
"""

from __future__ import annotations

import time

import arviz_stats
import jax
import numpy as np
from numpyro.infer import MCMC, NUTS

import inferax
from inferax import examples, samplers

NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 1000, 1000


def min_ess(draws: dict[str, np.ndarray]) -> float:
    return min(
        float(np.min(arviz_stats.ess(np.asarray(value, dtype=np.float64), method="bulk")))
        for value in draws.values()
    )


def run_inferax(model, args, kwargs):
    target = inferax.from_numpyro(model, *args, **kwargs)
    seconds, sampling_seconds, ess = [], None, None
    for seed in (0, 1):
        start = time.perf_counter()
        post = inferax.sample(
            target,
            samplers.nuts(),
            jax.random.key(seed),
            num_chains=NUM_CHAINS,
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            progress=False,
        )
        seconds.append(time.perf_counter() - start)
        sampling_seconds = post.timing["sampling"]
        ess = min_ess(post.draws)
    return seconds, ess / sampling_seconds, sampling_seconds


class CompileTimer:
    """Sums JAX's tracing, lowering and compiling seconds, as reported by jax.monitoring."""

    EVENTS = (
        "/jax/core/compile/jaxpr_trace_duration",
        "/jax/core/compile/jaxpr_to_mlir_module_duration",
        "/jax/core/compile/backend_compile_duration",
    )

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if event in self.EVENTS:
            self.seconds += duration


COMPILE_TIMER = CompileTimer()


def run_numpyro(model, args, kwargs):
    mcmc = MCMC(
        NUTS(model),
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        num_chains=NUM_CHAINS,
        chain_method="vectorized",
        progress_bar=False,
    )
    seconds = []
    for seed in (0, 1):
        start = time.perf_counter()
        mcmc.run(jax.random.key(seed), *args, **kwargs)
        jax.block_until_ready(mcmc.get_samples())
        seconds.append(time.perf_counter() - start)
    # NumPyro reports no split of warmup and sampling time, and compiles on every run. Time
    # the sampling phase alone: run it again from the adapted state, and take away the
    # seconds JAX reports spending on tracing and compiling during that run.
    mcmc.post_warmup_state = mcmc.last_state
    compile_before = COMPILE_TIMER.seconds
    start = time.perf_counter()
    mcmc.run(jax.random.key(2), *args, **kwargs)
    samples = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(samples)
    sampling_seconds = time.perf_counter() - start - (COMPILE_TIMER.seconds - compile_before)
    ess = min_ess({name: np.asarray(value) for name, value in samples.items()})
    return seconds, ess / sampling_seconds, sampling_seconds


def main() -> None:
    data = examples.EIGHT_SCHOOLS
    X, y, _ = examples.synthetic_logistic_data(jax.random.key(0), 5000, 20)
    problems = {
        "eight_schools_noncentered": (
            examples.eight_schools_noncentered,
            (data["J"], data["sigma"]),
            {"y": data["y"]},
        ),
        "logistic_regression_n5000_d20": (examples.logistic_regression, (X,), {"y": y}),
    }
    print(
        f"# {NUM_CHAINS} chains, {NUM_WARMUP} warmup + {NUM_SAMPLES} draws; jax {jax.__version__}"
    )
    for name, (model, args, kwargs) in problems.items():
        results = {
            "numpyro": run_numpyro(model, args, kwargs),
            "inferax": run_inferax(model, args, kwargs),
        }
        for tool, (seconds, ess_per_second, sampling_seconds) in results.items():
            print(
                f"{name:32s} {tool:8s} first_call_s={seconds[0]:7.2f} "
                f"second_call_s={seconds[1]:7.2f} sampling_s={sampling_seconds:6.2f} "
                f"min_ess_bulk_per_s={ess_per_second:9.1f}"
            )
        ratio = results["inferax"][0][1] / results["numpyro"][0][1]
        ess_ratio = results["inferax"][1] / results["numpyro"][1]
        print(
            f"{name:32s} ratio    second_call_inferax/numpyro={ratio:.3f} "
            f"ess_per_s_inferax/numpyro={ess_ratio:.2f}"
        )


if __name__ == "__main__":
    main()
