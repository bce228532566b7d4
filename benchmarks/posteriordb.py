"""posteriordb conformance: inferax NUTS and NumPyro NUTS against reference posteriors.

Each posterior is a posteriordb Stan program translated to NumPyro (`posteriordb/models.py`).
Both tools run it in one process, in float64 as Stan does, with 4 chains of 1000 warmup and
1000 draws; NumPyro runs `MCMC(NUTS, chain_method="vectorized")`. For every reported scalar
element, z = (run mean - reference mean) / MCSE of the run mean (ArviZ), and the sd error is
|run sd - reference sd| / reference sd. A tool passes a posterior when max |z| < 4 and the sd
error is under 15% on every element. One line per posterior:

    name  dims  inferax: max|z| (element) max sd error (element) divergences seconds PASS/FAIL
                numpyro: the same

The reference (`posteriordb/reference.json`) is the mean and sd of posteriordb's reference
draws (Stan, 10 chains x 1000 thinned draws); for the posteriors posteriordb has no draws for
(GLMs and a correlation matrix), a long NumPyro NUTS run made by `--make-reference`.

    ./dev bench posteriordb                         # every posterior but the slow ones
    ./dev bench posteriordb --only diamonds-diamonds  # a slow one (trees of ~1000 steps)
    ./dev bench posteriordb --quick --only arK-arK  # fewer draws, while developing
    ./dev bench posteriordb --only arma-arma11 --seeds 4 [--restart]  # stuck chains by key
    ./dev bench posteriordb --make-reference        # redo the NumPyro references
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import arviz_stats  # noqa: E402
import numpy as np  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

import inferax  # noqa: E402
from inferax import samplers  # noqa: E402
from inferax.posterior import stuck_chains  # noqa: E402

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "posteriordb")
sys.path.insert(0, HERE)
import models  # noqa: E402

REFERENCE_PATH = os.path.join(HERE, "reference.json")
NUM_CHAINS = 4
MAX_Z, MAX_SD_ERROR = 4.0, 0.15
REFERENCE_CHAINS, REFERENCE_WARMUP, REFERENCE_DRAWS = 16, 2000, 5000
DEFAULT_SEEDS = (None,)


def load_reference() -> dict:
    with open(REFERENCE_PATH) as f:
        return json.load(f)


def run_inferax(
    posterior: models.Posterior, rng_key, num_warmup: int, num_samples: int, restart: bool
):
    args, kwargs = posterior.load()
    target = inferax.from_numpyro(posterior.model, *args, **kwargs)
    with warnings.catch_warnings():
        # Stuck chains are counted on the line; the warning would repeat it.
        warnings.filterwarnings("ignore", message=".*did not move after warmup")
        post = inferax.sample(
            target,
            samplers.nuts(),
            rng_key,
            num_chains=NUM_CHAINS,
            num_warmup=num_warmup,
            num_samples=num_samples,
            progress=False,
            restart_stuck_chains=restart,
        )
    return post.draws, int(np.sum(post.stats["diverging"])), len(post.stuck_chains())


def run_numpyro(
    posterior: models.Posterior, rng_key, num_warmup: int, num_samples: int, num_chains: int = 4
):
    args, kwargs = posterior.load()
    mcmc = MCMC(
        NUTS(posterior.model),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(rng_key, *args, extra_fields=("diverging", "accept_prob"), **kwargs)
    draws = {name: np.asarray(value) for name, value in mcmc.get_samples(True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {"diverging": extra["diverging"], "acceptance_rate": extra["accept_prob"]}
    stuck = stuck_chains(stats, draws)
    return draws, int(np.sum(extra["diverging"])), len(stuck)


def compare(draws: dict, params, reference: dict) -> dict:
    """Worst |z| of the mean and worst relative sd error over the reported elements."""
    worst_z, worst_sd = (0.0, ""), (0.0, "")
    for name in params:
        values = models.element(draws, name)
        expected = reference[name]
        mcse = float(arviz_stats.mcse(values, method="mean"))
        z = abs(values.mean() - expected["mean"]) / mcse
        sd_error = abs(values.std() - expected["sd"]) / expected["sd"]
        # A nan (a chain stuck at one point has no MCSE) counts as the worst.
        if not z <= worst_z[0]:
            worst_z = (float(z), name)
        if not sd_error <= worst_sd[0]:
            worst_sd = (float(sd_error), name)
    passed = worst_z[0] < MAX_Z and worst_sd[0] < MAX_SD_ERROR
    return {"z": worst_z, "sd": worst_sd, "passed": passed}


def unconstrained_dims(posterior: models.Posterior) -> int:
    args, kwargs = posterior.load()
    info = initialize_model(
        jax.random.key(0), posterior.model, model_args=args, model_kwargs=kwargs
    )
    return sum(int(np.size(v)) for v in jax.tree.leaves(info.param_info.z))


def describe(result) -> str:
    if isinstance(result, str):
        return result
    seconds, divergences, stuck, c = result
    return (
        f"max|z|={c['z'][0]:6.2f} ({c['z'][1]:>12s}) sd_err={100 * c['sd'][0]:5.1f}% "
        f"({c['sd'][1]:>12s}) div={divergences:4d} stuck={stuck} s={seconds:6.1f} "
        f"{'PASS' if c['passed'] else 'FAIL'}"
    )


def benchmark(names, num_warmup: int, num_samples: int, seeds, restart: bool) -> None:
    reference = load_reference()
    print(
        f"# {NUM_CHAINS} chains, {num_warmup} warmup + {num_samples} draws, float64; pass: "
        f"max|z| < {MAX_Z:g} and sd_err < {100 * MAX_SD_ERROR:g}% on every element; "
        f"stuck = chains that did not move after warmup; inferax "
        f"restart_stuck_chains={restart}; jax {jax.__version__}",
        flush=True,
    )
    runners = {
        "inferax": lambda *a: run_inferax(*a, restart=restart),
        "numpyro": run_numpyro,
    }
    for name in names:
        posterior = models.POSTERIORS[name]
        expected = reference[name]["params"]
        for seed in seeds:
            results = {}
            for i, (tool, runner) in enumerate(runners.items()):
                # The default run gives each tool its own key; a seed sweep gives both the same.
                key = jax.random.key(i if seeds == DEFAULT_SEEDS else seed)
                start = time.perf_counter()
                try:
                    draws, divergences, stuck = runner(posterior, key, num_warmup, num_samples)
                except Exception as error:  # noqa: BLE001 - a refused model is a result
                    message = str(error).splitlines()[0] if str(error) else ""
                    results[tool] = f"ERROR {type(error).__name__}: {message[:80]}"
                    if os.environ.get("POSTERIORDB_TRACEBACK"):
                        traceback.print_exc()
                    continue
                seconds = time.perf_counter() - start
                checked = compare(draws, posterior.params, expected)
                results[tool] = (seconds, divergences, stuck, checked)
            label = name if seeds == DEFAULT_SEEDS else f"{name} seed={seed}"
            print(
                f"{label:40s} dims={unconstrained_dims(posterior):3d} | inferax "
                f"{describe(results['inferax'])} | numpyro {describe(results['numpyro'])}",
                flush=True,
            )


def make_reference(names, posteriordb_dir: str | None) -> None:
    """Write reference.json: long NumPyro runs, and posteriordb's draws when given a checkout."""
    reference = load_reference() if os.path.exists(REFERENCE_PATH) else {}
    for name, data in models.make_synthetic_data().items():
        with open(os.path.join(models.DATA_DIR, f"{name}.json"), "w") as f:
            json.dump(data, f, separators=(",", ":"))
    for name in names:
        posterior = models.POSTERIORS[name]
        if posterior.reference == "numpyro":
            draws, divergences, _ = run_numpyro(
                posterior,
                jax.random.key(2024),
                REFERENCE_WARMUP,
                REFERENCE_DRAWS,
                REFERENCE_CHAINS,
            )
            values = {p: models.element(draws, p) for p in posterior.params}
            ess = min(float(arviz_stats.ess(v, method="bulk")) for v in values.values())
            rhat = max(float(arviz_stats.rhat(v)) for v in values.values())
            source = (
                f"NumPyro NUTS, {REFERENCE_CHAINS} chains x {REFERENCE_DRAWS} draws after "
                f"{REFERENCE_WARMUP} warmup, float64; min ess_bulk {ess:.0f}, max r_hat "
                f"{rhat:.4f}, {divergences} divergences"
            )
        elif posteriordb_dir is not None:
            values, source = posteriordb_draws(posteriordb_dir, name)
        else:
            continue
        reference[name] = {
            "source": source,
            "params": {
                p: {"mean": float(np.mean(v)), "sd": float(np.std(v))} for p, v in values.items()
            },
        }
        print(f"{name}: {source}", flush=True)
    with open(REFERENCE_PATH, "w") as f:
        json.dump(reference, f, indent=1)
        f.write("\n")


def posteriordb_draws(posteriordb_dir: str, name: str) -> tuple[dict, str]:
    """All of posteriordb's reference draws of a posterior, from a checkout's unzipped files."""
    path = os.path.join(
        posteriordb_dir, "reference_posteriors", "draws", "draws", f"{name}.json.zip"
    )
    import zipfile

    with zipfile.ZipFile(path) as archive:
        chains = json.loads(archive.read(archive.namelist()[0]))
    values = {p: np.array([chain[p] for chain in chains]) for p in chains[0]}
    return values, f"posteriordb reference draws ({len(chains)} chains x 1000)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated posterior names")
    parser.add_argument("--quick", action="store_true", help="500 warmup + 500 draws")
    parser.add_argument(
        "--seeds",
        type=int,
        metavar="K",
        help="run keys 0..K-1, the same key for both tools, one line per key",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="inferax with restart_stuck_chains=True (the remedy its warning names)",
    )
    parser.add_argument(
        "--make-reference",
        action="store_true",
        help="recompute the NumPyro references (and posteriordb's, with --posteriordb)",
    )
    parser.add_argument(
        "--posteriordb",
        metavar="DIR",
        help="a posteriordb checkout's posterior_database folder, for --make-reference",
    )
    options = parser.parse_args()
    names = [name for name, posterior in models.POSTERIORS.items() if not posterior.slow]
    if options.only:
        names = options.only.split(",")
        unknown = [n for n in names if n not in models.POSTERIORS]
        if unknown:
            parser.error(f"unknown posterior(s) {unknown}; known: {list(models.POSTERIORS)}")
    if options.seeds is not None and options.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {options.seeds}")
    seeds = DEFAULT_SEEDS if options.seeds is None else tuple(range(options.seeds))
    if options.make_reference:
        make_reference(names, options.posteriordb)
    elif options.quick:
        benchmark(names, 500, 500, seeds, options.restart)
    else:
        benchmark(names, 1000, 1000, seeds, options.restart)


if __name__ == "__main__":
    main()
