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
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# Only light modules at the top: `--help`, `--version` and argument errors answer without
# importing JAX; each command imports what it runs.
from inferax.model_file import ModelFileError, load_model_file

DEFAULT_KERNEL_ARGS: dict[str, dict[str, Any]] = {"hmc": {"num_integration_steps": 16}}
"""Settings the command line gives a sampler that has no default of its own."""

VI_FAMILIES = {"meanfield": "meanfield_gaussian", "fullrank": "fullrank_gaussian"}
"""Short names for ``inferax fit --family``; other names are looked up in ``inferax.flows``."""


DEMO_PLOTTED = 6
DEMO_PAIRED = 4
"""Scalar quantities per plot, and in the pair plot, in the demo's report."""


class CLIError(Exception):
    """Bad input, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return args.handler(args)
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


def _build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )
    parser = _Parser(prog="inferax", description="Bayesian inference in JAX.", parents=[common])
    parser.add_argument("--version", action="version", version=f"inferax {_version('inferax')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[common],
        help="sample a NumPyro model file; write posterior.nc, summary.csv and report.html",
        description="Sample MODEL.py, which defines a NumPyro `model` and `data` (a dict of "
        "the model's arguments; optionally `data_args`, the names of the arguments that hold "
        "data points, for stochastic-gradient samplers). MODEL.py is your own Python file "
        "and runs as Python does; --resume runs nothing from the run directory.",
    )
    run.add_argument("model_file", metavar="MODEL.py")
    run.add_argument(
        "--sampler",
        default="nuts",
        help="a sampler in inferax.samplers (nuts, hmc, mala, ula, ...; default: %(default)s)",
    )
    _sampling_options(run, default_out=None)
    run.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="the sampler's step_size (mala, ula and the SG samplers need one)",
    )
    run.add_argument(
        "--kernel-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another sampler setting, such as num_integration_steps=32; repeat for more",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue the run saved in OUT/checkpoint (after a crash or a kill); the model, "
        "data, sampler and settings must be the run's",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="replace the run saved in OUT/checkpoint (only the files that run wrote are "
        "deleted); without it, a previous run there is refused",
    )
    _plot_options(run)
    run.set_defaults(handler=_run)

    fit = commands.add_parser(
        "fit",
        parents=[common],
        help="fit a NumPyro model file with variational inference",
    )
    fit.add_argument("model_file", metavar="MODEL.py")
    fit.add_argument(
        "--family",
        default="meanfield",
        help="meanfield, fullrank, or a flow in inferax.flows (realnvp, ...)",
    )
    fit.add_argument("--steps", type=int, default=5000, help="optimisation steps")
    fit.add_argument("--learning-rate", type=float, default=1e-2)
    fit.add_argument("--draws", type=int, default=4000, help="draws from the fit")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", default=None, help="output folder (default: MODEL-inferax)")
    fit.add_argument("--family-arg", action="append", default=[], metavar="NAME=VALUE")
    _plot_options(fit)
    fit.set_defaults(handler=_fit)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write an HTML report on saved posteriors, side by side when several",
    )
    report.add_argument("files", nargs="+", metavar="posterior.nc")
    report.add_argument(
        "-o", "--output", default="report.html", help="the HTML file (default: %(default)s)"
    )
    report.add_argument("--title", default=None)
    _plot_options(report)
    report.set_defaults(handler=_report)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="sample the bundled eight-schools and logistic-regression models with NUTS and "
        "another sampler; write a report",
    )
    demo.add_argument(
        "--sampler", default="hmc", help="the sampler to compare with NUTS (default: %(default)s)"
    )
    demo.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="step size for a sampler that needs one, such as mala",
    )
    _sampling_options(demo, default_out="inferax-demo")
    demo.set_defaults(handler=_demo)
    return parser


def _plot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-plotted",
        type=int,
        default=None,
        metavar="N",
        help="scalar quantities in the report's trace, rank and autocorrelation plots "
        "(default: 10; the table lists all)",
    )
    parser.add_argument(
        "--max-paired",
        type=int,
        default=None,
        metavar="N",
        help="scalar quantities in the report's pair plot (default: 8)",
    )


def _sampling_options(parser: argparse.ArgumentParser, default_out: str | None) -> None:
    parser.add_argument("--chains", "--num-chains", dest="chains", type=int, default=4)
    parser.add_argument("--warmup", "--num-warmup", dest="warmup", type=int, default=1000)
    parser.add_argument("--samples", "--num-samples", dest="samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=default_out,
        help="output folder (default: %(default)s)"
        if default_out
        else "output folder (default: MODEL-inferax, in the working directory)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on an interactive terminal)",
    )


# --- run -------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    path = pathlib.Path(args.model_file)
    model, data, data_args = _load_model_file(path)
    kernel = _make_kernel(args.sampler, args.step_size, _parse_settings(args.kernel_arg))
    _check_counts(args)
    out = pathlib.Path(args.out or f"{path.stem}-inferax")

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


def _write_outputs(tree, out: pathlib.Path, args: argparse.Namespace, *, title: str) -> list:
    from inferax import diagnostics

    out.mkdir(parents=True, exist_ok=True)
    _write_tables(tree, out)
    findings = diagnostics.check(tree)
    diagnostics.report(tree, out / "report.html", title=title, **_plot_settings(args))
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


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _command_line() -> str:
    return " ".join(["inferax", *sys.argv[1:]])


def _record(tree, **attrs) -> None:
    """Adds the run's seed, command and library versions to the posterior's attributes."""
    extra = {f"{lib}_version": _version(lib) for lib in ("jax", "numpyro", "blackjax")}
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
    settings = _parse_settings(args.family_arg)
    name = VI_FAMILIES.get(args.family, args.family)
    maker = getattr(variational, name, None) or getattr(flows, name, None)
    if maker is None or not callable(maker):
        raise CLIError(f"unknown family '{args.family}'")
    _enable_compile_cache()
    target = inferax.from_numpyro(model, data=data_args, **data)
    fit_key, draw_key = jax.random.split(jax.random.key(args.seed))
    approx = variational.fit(
        target,
        maker(**settings),
        fit_key,
        optimizer=optax.adam(args.learning_rate),
        num_steps=args.steps,
    )
    tree = approx.to_datatree(draw_key, args.draws)
    _record(tree, seed=args.seed, model_file=str(path), command=_command_line())
    out = pathlib.Path(args.out or f"{path.stem}-inferax")
    _write_outputs(tree, out, args, title=f"inferax fit: {path.name}")
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

    print("\nfindings:")
    for name, tree in trees.items():
        findings = diagnostics.check(tree)
        sizes = tree["posterior"].dataset.sizes
        stats = tree["sample_stats"].dataset
        divergent = int(stats["diverging"].sum()) if "diverging" in stats else 0
        verdict = "ok" if not findings else f"{len(findings)} finding(s)"
        print(
            f"  {name}: {sizes['chain']} chains x {sizes['draw']} draws, "
            f"{divergent} divergent: {verdict}"
        )
        if findings:
            _print_findings(findings, indent="    ")
    # Fewer quantities per plot than the default keep the demo's four runs quick.
    report = diagnostics.report(
        trees,
        out / "report.html",
        title="inferax demo: eight schools and logistic regression",
        max_plotted=DEMO_PLOTTED,
        max_paired=DEMO_PAIRED,
    )
    seconds = time.perf_counter() - started
    print(f"\nwrote posteriors and summaries under {out}/ in {seconds:.0f} s")
    print(f"report: {report.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
