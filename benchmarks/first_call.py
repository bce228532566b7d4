"""The first call a user makes: a fresh process's first ``inferax.sample`` against a fresh
process's first NumPyro ``MCMC.run``, and the command line's start-up.

For each model, three fresh processes: NumPyro's ``MCMC(NUTS, chain_method="vectorized")``
(no persistent cache); inferax with an empty persistent compilation cache (a new folder);
inferax again with that folder, now warm. Each times the first call from the model and its
data to draws on the host: ``MCMC(...)`` and ``run`` for NumPyro, ``inferax.from_numpyro``
and ``inferax.sample`` (its pointwise log likelihood included) for inferax. Both use NUTS, 4
chains, 500 warmup and 500 draws. ``compile_s`` is the tracing, lowering and compiling
seconds JAX reports (summed over threads); ``compile_wait_s`` is how long inferax's call
waited for its programs; ``cpu_s`` is the CPU seconds of the call, all threads together,
which a machine shared with other work inflates less than the wall-clock seconds. Then
``inferax --help``, ``--version`` and an argument error, each in a fresh process.

The three processes run ``--repeats`` times (3 by default), one after another, and each
figure is the median over the repeats: on a shared machine a process's speed drifts by a
quarter within minutes, so a ratio of single runs moves with whichever process met a slow
spell. The ratio line gives the median ratio and, in brackets, the ratios of the repeats.
One line per figure:

    ./dev bench first_call                          # every model, then the command line
    ./dev bench first_call baseball                 # the models named
    ./dev bench first_call --repeats 5 baseball     # five repeats
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_CHAINS, NUM_WARMUP, NUM_SAMPLES = 4, 500, 500
MODELS = ("eight_schools", "kidiq", "baseball", "logistic_regression_n5000_d20")
COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)

# Efron and Morris's 18 players of 1970: hits in their first 45 at bats (NumPyro's baseball
# example fits the same data).
BASEBALL_HITS = (18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7)
BASEBALL_AT_BATS = 45


def load_model(name: str):
    """``(model, args, kwargs)`` for one of ``MODELS``."""
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    if name in ("eight_schools", "kidiq"):
        sys.path.insert(0, os.path.join(HERE, "posteriordb"))
        import models

        if name == "eight_schools":
            args, kwargs = models._eight_schools()
            return models.eight_schools_noncentered, args, kwargs
        args, kwargs = models._kidiq()
        return models.kidscore_momiq, args, kwargs
    if name == "baseball":

        def partially_pooled(at_bats, hits=None):
            # NumPyro's baseball example, partially pooled: a Beta population of abilities.
            m = numpyro.sample("m", dist.Uniform(0.0, 1.0))
            kappa = numpyro.sample("kappa", dist.Pareto(1.0, 1.5))
            with numpyro.plate("num_players", at_bats.shape[0]):
                phi = numpyro.sample("phi", dist.Beta(m * kappa, (1.0 - m) * kappa))
                numpyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)

        hits = np.asarray(BASEBALL_HITS, dtype=np.float32)
        at_bats = np.full(hits.shape, BASEBALL_AT_BATS, dtype=np.float32)
        return partially_pooled, (at_bats,), {"hits": hits}
    import jax

    from inferax import examples

    X, y, _ = examples.synthetic_logistic_data(jax.random.key(0), 5000, 20)
    return examples.logistic_regression, (X,), {"y": y}


def worker(tool: str, name: str) -> dict:
    """One fresh process's first call; returns its figures."""
    import jax

    seconds = {"compile": 0.0}

    def listen(event, duration, **kwargs):
        if event in COMPILE_EVENTS:
            seconds["compile"] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    model, args, kwargs = load_model(name)
    key = jax.random.key(0)
    if tool == "numpyro":
        from numpyro.infer import MCMC, NUTS

        start, cpu = time.perf_counter(), time.process_time()
        mcmc = MCMC(
            NUTS(model),
            num_warmup=NUM_WARMUP,
            num_samples=NUM_SAMPLES,
            num_chains=NUM_CHAINS,
            chain_method="vectorized",
            progress_bar=False,
        )
        mcmc.run(key, *args, **kwargs)
        jax.block_until_ready(mcmc.get_samples())
        return {
            "first_call_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "compile_s": seconds["compile"],
        }
    import inferax
    from inferax import samplers

    start, cpu = time.perf_counter(), time.process_time()
    target = inferax.from_numpyro(model, *args, **kwargs)
    post = inferax.sample(
        target,
        samplers.nuts(),
        key,
        num_chains=NUM_CHAINS,
        num_warmup=NUM_WARMUP,
        num_samples=NUM_SAMPLES,
        progress=False,
    )
    return {
        "first_call_s": time.perf_counter() - start,
        "cpu_s": time.process_time() - cpu,
        "compile_s": seconds["compile"],
        "compile_wait_s": post.timing["compile"],
    }


def fresh_process(argv: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    return done, time.perf_counter() - start


def run_worker(tool: str, name: str, env: dict) -> dict:
    done, _ = fresh_process([sys.executable, __file__, "--worker", tool, name], env)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} on {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(models: list[str], repeats: int) -> None:
    unknown = set(models) - set(MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; pick from {MODELS}")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "INFERAX_"))}
    for name in models or MODELS:
        runs = {"numpyro": [], "inferax": [], "inferax_warm": []}
        for _ in range(repeats):
            with tempfile.TemporaryDirectory(prefix="inferax-first-call-") as cache:
                env = base_env | {"XDG_CACHE_HOME": cache}
                runs["numpyro"].append(run_worker("numpyro", name, base_env))
                runs["inferax"].append(run_worker("inferax", name, env))
                runs["inferax_warm"].append(run_worker("inferax", name, env))
        for tool, figures in runs.items():
            medians = {key: median([run[key] for run in figures]) for key in figures[0]}
            extra = (
                f" compile_wait_s={medians['compile_wait_s']:6.2f}"
                if "compile_wait_s" in medians
                else ""
            )
            print(
                f"{name:30s} {tool:13s} first_call_s={medians['first_call_s']:6.2f} "
                f"cpu_s={medians['cpu_s']:6.2f} compile_s={medians['compile_s']:6.2f}{extra}",
                flush=True,
            )
        ratios = {
            f"{label}_inferax/numpyro": [
                ours[key] / theirs[key]
                for ours, theirs in zip(runs[tool], runs["numpyro"], strict=True)
            ]
            for label, tool, key in (
                ("first_call", "inferax", "first_call_s"),
                ("warm_cache", "inferax_warm", "first_call_s"),
                ("cpu", "inferax", "cpu_s"),
                ("cpu_warm_cache", "inferax_warm", "cpu_s"),
            )
        }
        print(
            f"{name:30s} ratio         "
            + " ".join(
                f"{label}={median(values):.2f} ({' '.join(f'{v:.2f}' for v in values)})"
                for label, values in ratios.items()
            ),
            flush=True,
        )
    if models:
        return
    cli = [sys.executable, "-m", "inferax"]
    for what, argv in (("--help", ["--help"]), ("--version", ["--version"]), ("error", ["run"])):
        done, seconds = fresh_process(cli + argv, base_env)
        print(
            f"inferax {what:9s} seconds={seconds:5.2f} exit_status={done.returncode}", flush=True
        )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3])))
    else:
        parser = argparse.ArgumentParser(description="First-call time against NumPyro's.")
        parser.add_argument("models", nargs="*", help=f"any of {', '.join(MODELS)}")
        parser.add_argument("--repeats", type=int, default=3, help="fresh-process repeats")
        options = parser.parse_args()
        if options.repeats < 1:
            parser.error(f"--repeats must be at least 1, got {options.repeats}")
        main(options.models, options.repeats)
