"""The ``inferax`` command line: ``run`` a model file, ``fit`` it with VI, ``report`` on saved
posteriors, and ``demo`` the bundled examples.

Bad input (a missing or broken model file, a corrupt .nc file, an unknown sampler) gets one
line on stderr and exit status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import math
import pathlib
import sys
import time
from typing import Any

# Only light modules at the top: `--help`, `--version` and argument errors answer without
# importing JAX; each command imports what it runs.
from inferax.cli_parser import build_parser, installed_version
from inferax.model_file import ModelFileError, load_model_file

DEFAULT_KERNEL_ARGS: dict[str, dict[str, Any]] = {"hmc": {"num_integration_steps": 16}}
"""Settings the command line gives a sampler that has no default of its own (the parser's
help for --kernel-arg says so)."""

VI_FAMILIES = {"meanfield": "meanfield_gaussian", "fullrank": "fullrank_gaussian"}
"""Short names for ``inferax fit --family``; other names are looked up in ``inferax.flows``."""


DEMO_SCHOOLS_RATE = 0.95
"""The demo's target acceptance rate on eight schools, whose posterior has a funnel's neck."""

DEMO_PLOTTED = 6
DEMO_PAIRED = 4
"""Scalar quantities per plot, and in the pair plot, in the demo's report."""


class CLIError(Exception):
    """Bad input, reported as one line."""


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    handlers = {"run": _run, "fit": _fit, "report": _report, "demo": _demo}
    args = build_parser(handlers).parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("inferax: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        hint = "" if isinstance(error, CLIError) else f"{type(error).__name__}: "
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"inferax: error: {hint}{message} (--debug shows the traceback)", file=sys.stderr)
        return 1


# --- run -------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    path = pathlib.Path(args.model_file)
    model, data, data_args = _load_model_file(path)
    kernel = _make_kernel(args.sampler, args.step_size, _parse_settings(args.kernel_arg))
    _check_counts(args)
    out = pathlib.Path(args.out or f"{path.stem}-run")

    import jax

    import inferax

    _enable_compile_cache()
    try:
        target = inferax.from_numpyro(model, data=data_args, **data)
    except TypeError as error:
        raise CLIError(
            f"{path}: the model does not take the arguments in `data`: {error}"
        ) from error
    # Every run checkpoints after each chunk, so that `--resume` can finish a killed one.
    checkpoint = out / "checkpoint"
    settings = dict(num_chains=args.chains, num_warmup=args.warmup, num_samples=args.samples)
    if args.resume:
        if not (checkpoint / "manifest.json").exists():
            raise CLIError(f"--resume: {checkpoint} holds no saved run to continue")
        print(f"inferax run: resuming {path.name} from {checkpoint}", flush=True)
        try:
            post = inferax.resume(
                checkpoint,
                target,
                kernel,
                rng_key=jax.random.key(args.seed),
                progress=args.progress,
                **settings,
            )
        except ValueError as error:
            raise CLIError(str(error)) from error
    else:
        from inferax.checkpoint import CheckpointError, clear_for_new_run

        try:
            clear_for_new_run(checkpoint, force=args.force)
        except CheckpointError as error:
            raise CLIError(str(error)) from error
        _claim_folder(out, args.force)
        print(f"inferax run: {path.name} with {kernel!r}", flush=True)
        post = inferax.sample(
            target,
            kernel,
            jax.random.key(args.seed),
            progress=args.progress,
            checkpoint=checkpoint,
            **settings,
        )
    tree = post.to_datatree()
    _record(tree, seed=args.seed, model_file=str(path), command=_command_line())
    _write_outputs(tree, out, args, title=f"inferax run: {path.name}")
    return 0


def _write_tables(tree, folder: pathlib.Path) -> None:
    """``posterior.nc`` and ``summary.csv``, each written to a temporary file and renamed, so
    a reader never sees half a file."""
    from inferax import diagnostics
    from inferax.checkpoint import write_atomically

    write_atomically(folder / "posterior.nc", lambda path: tree.to_netcdf(path, engine="h5netcdf"))
    table = diagnostics.summary(tree)
    write_atomically(folder / "summary.csv", lambda path: table.to_csv(path, float_format="%.6g"))


OUTPUTS = ("posterior.nc", "summary.csv", "report.html")
"""What ``run`` and ``fit`` write into their folder."""


def _claim_folder(out: pathlib.Path, force: bool) -> None:
    """Refuses a folder that holds a previous run's or fit's outputs, unless ``force``, when
    those files (and nothing else) are deleted."""
    found = [out / name for name in OUTPUTS if (out / name).exists()]
    if found and not force:
        raise CLIError(
            f"{out} holds the outputs of a previous run or fit ({found[0].name}): replace "
            "them with --force, or choose another --out"
        )
    for path in found:
        path.unlink()


def _write_outputs(tree, out: pathlib.Path, args: argparse.Namespace, *, title: str) -> list:
    import pandas as pd

    from inferax import diagnostics

    out.mkdir(parents=True, exist_ok=True)
    _write_tables(tree, out)
    findings = diagnostics.check(tree)
    diagnostics.report(tree, out / "report.html", title=title, **_plot_settings(args))
    with pd.option_context("display.width", 120):
        print(diagnostics.summary(tree).to_string(float_format="{:.3g}".format, max_rows=40))
    _print_findings(findings)
    print(f"wrote {out / 'posterior.nc'}, {out / 'summary.csv'} and {out / 'report.html'}")
    return findings


def _plot_settings(args: argparse.Namespace) -> dict[str, int]:
    settings = {}
    for flag in ("max_plotted", "max_paired"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise CLIError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
        if value is not None:
            settings[flag] = value
    return settings


def _print_findings(findings: list, indent: str = "") -> None:
    if not findings:
        print(f"{indent}all checks passed")
    for finding in findings:
        print(f"{indent}{finding}")


def _load_model_file(path: pathlib.Path):
    """``(model, data, data_args)`` from a model file, or a one-line CLIError."""
    try:
        return load_model_file(path)
    except ModelFileError as error:
        raise CLIError(str(error)) from error


def sampler_names() -> dict[str, type]:
    """The samplers in ``inferax.samplers`` that the command line can build, by name."""
    from inferax import samplers
    from inferax.kernel import AbstractKernel

    found = {}
    for attr in getattr(samplers, "__all__", dir(samplers)):
        obj = getattr(samplers, attr, None)
        if (
            isinstance(obj, type)
            and issubclass(obj, AbstractKernel)
            and not inspect.isabstract(obj)
            and dataclasses.is_dataclass(obj)
        ):
            name = getattr(obj, "name", attr)
            found[name if isinstance(name, str) else attr] = obj
    return dict(sorted(found.items()))


def _make_kernel(name: str, step_size: float | None, settings: dict[str, Any]):
    kernels = sampler_names()
    if name not in kernels:
        raise CLIError(f"unknown sampler '{name}'; choose from {', '.join(kernels)}")
    cls = kernels[name]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    settings = {**DEFAULT_KERNEL_ARGS.get(name, {}), **settings}
    if step_size is not None:
        settings["step_size"] = step_size
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise CLIError(
            f"{name} has no setting {', '.join(unknown)}; its settings: {', '.join(fields)}"
        )
    missing = [
        n
        for n, f in fields.items()
        if n not in settings
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        flags = " ".join(
            "--step-size X" if n == "step_size" else f"--kernel-arg {n}=X" for n in missing
        )
        raise CLIError(f"{name} needs {', '.join(missing)}: pass {flags}")
    try:
        return cls(**settings)
    except (TypeError, ValueError) as error:
        raise CLIError(f"{name}: {error}") from error


def _parse_settings(items: list[str]) -> dict[str, Any]:
    settings = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"expected NAME=VALUE, got '{item}'")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        settings[key.strip()] = value
    return settings


def _check_counts(args: argparse.Namespace) -> None:
    for name, minimum in (("chains", 1), ("warmup", 0), ("samples", 1)):
        value = getattr(args, name)
        if value < minimum:
            raise CLIError(f"--{name} must be >= {minimum}, got {value}")


def _enable_compile_cache() -> None:
    """Keeps compiled programs on disk between runs (JAX's persistent compilation cache), so
    a second run of the same model starts in seconds; see ``inferax.enable_compilation_cache``
    for the folder and the switch that turns it off."""
    from inferax.compile_cache import enable_compilation_cache

    enable_compilation_cache()


def _command_line() -> str:
    return " ".join(["inferax", *sys.argv[1:]])


def _record(tree, **attrs) -> None:
    """Adds the run's seed, command and library versions to the posterior's attributes."""
    extra = {f"{lib}_version": installed_version(lib) for lib in ("jax", "numpyro", "blackjax")}
    for group in ("posterior", "sample_stats"):
        if group in tree.children:
            tree[group].attrs.update({**attrs, **extra})


# --- fit -------------------------------------------------------------------------------------


def _fit(args: argparse.Namespace) -> int:
    path = pathlib.Path(args.model_file)
    model, data, data_args = _load_model_file(path)
    import jax
    import optax

    import inferax
    from inferax import flows, variational

    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise CLIError(f"--learning-rate must be finite and > 0, got {args.learning_rate}")
    if args.draws < 2:
        raise CLIError(f"--draws must be at least 2, got {args.draws}")
    if args.steps < 1:
        raise CLIError(f"--steps must be at least 1, got {args.steps}")
    if args.particles < 1 or (args.objective != "elbo" and args.particles < 2):
        least = 1 if args.objective == "elbo" else 2
        raise CLIError(f"--particles must be at least {least} for {args.objective}")
    out = pathlib.Path(args.out or f"{path.stem}-fit")
    _claim_folder(out, args.force)
    settings = _parse_settings(args.family_arg)
    name = VI_FAMILIES.get(args.family, args.family)
    maker = getattr(variational, name, None) or getattr(flows, name, None)
    if maker is None or not callable(maker):
        raise CLIError(f"unknown family '{args.family}'")
    _enable_compile_cache()
    try:
        family = maker(**settings)
    except (TypeError, ValueError) as error:
        raise CLIError(f"--family {args.family}: {error}") from error
    target = inferax.from_numpyro(model, data=data_args, **data)
    fit_key, draw_key = jax.random.split(jax.random.key(args.seed))
    print(f"inferax fit: {path.name} with {args.family}, {args.objective}", flush=True)
    approx = variational.fit(
        target,
        family,
        fit_key,
        optimizer=optax.adam(args.learning_rate),
        num_steps=args.steps,
        objective=args.objective,
        num_particles=args.particles,
        estimator=args.estimator,
        progress=args.progress,
    )
    tree = approx.to_datatree(draw_key, args.draws)
    _record(tree, seed=args.seed, model_file=str(path), command=_command_line())
    _write_outputs(tree, out, args, title=f"inferax fit: {path.name}")
    elbo = tree["optimization"]["elbo"].values
    print(
        f"{args.objective} over the last {max(1, elbo.size // 10)} steps: "
        f"{elbo[-max(1, elbo.size // 10) :].mean():.4g}; PSIS k-hat "
        f"{tree['posterior'].attrs['khat']:.2f} on the {args.draws} draws saved"
    )
    return 0


# --- report ----------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from inferax import diagnostics

    paths = [pathlib.Path(f) for f in args.files]
    trees = {}
    for path, name in zip(paths, _run_names(paths), strict=True):
        trees[name] = _read_posterior(path)
    data = trees if len(trees) > 1 else next(iter(trees.values()))
    out = diagnostics.report(data, args.output, title=args.title, **_plot_settings(args))
    for name, tree in trees.items():
        if len(trees) > 1:
            print(f"{name}:")
        _print_findings(diagnostics.check(tree), indent="  " if len(trees) > 1 else "")
    print(f"wrote {out}")
    return 0


def _run_names(paths: list[pathlib.Path]) -> list[str]:
    stems = [p.stem for p in paths]
    names = []
    for path, stem in zip(paths, stems, strict=True):
        if stems.count(stem) > 1:
            names.append(str(path.parent / stem) if str(path.parent) != "." else str(path))
        else:
            names.append(stem)
    # Still equal (the same file twice): number them.
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _read_posterior(path: pathlib.Path):
    import xarray as xr

    if not path.exists():
        raise CLIError(f"{path} does not exist")
    try:
        tree = xr.open_datatree(path, engine="h5netcdf").load()
    except Exception as error:
        raise CLIError(
            f"cannot read {path}: not a netCDF4 file from inferax ({type(error).__name__})"
        ) from error
    if "posterior" not in tree.children:
        raise CLIError(f"{path} has no posterior group")
    return tree


# --- demo ------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    _check_counts(args)
    other = _make_kernel(args.sampler, args.step_size, {})
    nuts = _make_kernel("nuts", None, {})
    kernels = [nuts] if other.name == "nuts" else [nuts, other]
    out = pathlib.Path(args.out)
    started = time.perf_counter()

    import jax

    import inferax
    from inferax import diagnostics, examples

    _enable_compile_cache()
    schools = examples.EIGHT_SCHOOLS
    X, y, _ = examples.synthetic_logistic_data(jax.random.key(0), num_data=200, num_features=4)
    targets = {
        "eight_schools": inferax.from_numpyro(
            examples.eight_schools_noncentered, schools["J"], schools["sigma"], y=schools["y"]
        ),
        "logistic_regression": inferax.from_numpyro(examples.logistic_regression, X, y=y),
    }
    trees = {}
    for model_name, target in targets.items():
        for kernel in kernels:
            name = f"{model_name}/{kernel.name}"
            if model_name == "eight_schools" and hasattr(kernel, "target_acceptance_rate"):
                # What check advises for its rare divergences (Betancourt 2017, section 6).
                kernel = dataclasses.replace(kernel, target_acceptance_rate=DEMO_SCHOOLS_RATE)
            print(f"sampling {name} ...", flush=True)
            post = inferax.sample(
                target,
                kernel,
                jax.random.key(args.seed),
                num_chains=args.chains,
                num_warmup=args.warmup,
                num_samples=args.samples,
                progress=args.progress,
            )
            tree = post.to_datatree()
            _record(tree, seed=args.seed, model=model_name, command=_command_line())
            folder = out / f"{model_name}-{kernel.name}"
            folder.mkdir(parents=True, exist_ok=True)
            _write_tables(tree, folder)
            trees[name] = tree

    # Fewer quantities per plot than the default keep the demo's four runs quick.
    report = diagnostics.report(
        trees,
        out / "report.html",
        title="inferax demo: eight schools and logistic regression",
        max_plotted=DEMO_PLOTTED,
        max_paired=DEMO_PAIRED,
    )
    verdicts = {name: diagnostics.check(tree) for name, tree in trees.items()}
    for name, findings in verdicts.items():
        if findings:
            print(f"\n{name}:")
            _print_findings(findings, indent="  ")
    seconds = time.perf_counter() - started
    print(f"\nwrote posteriors and summaries under {out}/ in {seconds:.0f} s")
    print(f"report: {report.resolve()}")
    print("\nverdicts (inferax.diagnostics.check):")
    for name, findings in verdicts.items():
        print(f"  {_verdict(name, trees[name], findings)}")
    return 0


def _verdict(name: str, tree, findings: list) -> str:
    """One line on a run: its size, divergences, and whether it passes ``check``."""
    sizes = tree["posterior"].dataset.sizes
    stats = tree["sample_stats"].dataset
    divergent = int(stats["diverging"].sum()) if "diverging" in stats else 0
    errors = sorted({f.check for f in findings if f.severity == "error"})
    warnings = sorted({f.check for f in findings if f.severity != "error"})
    verdict = f"FAIL ({', '.join(errors)})" if errors else "PASS"
    if warnings:
        verdict += f", warnings: {', '.join(warnings)}"
    return (
        f"{name}: {verdict}: {sizes['chain']} chains x {sizes['draw']} draws, "
        f"{divergent} divergent"
    )


if __name__ == "__main__":
    sys.exit(main())
