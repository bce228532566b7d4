"""The ``inferax`` command line's parser: its commands, their options, and help that shows
every option's default. ``inferax.cli`` runs what it parses."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line and every option's default in its help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsShown)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _DefaultsShown(argparse.HelpFormatter):
    """Appends ``(default: ...)`` to an option's help unless it says its default itself: a
    ``None`` default's help says what happens instead."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or not action.option_strings or action.default is None:
            return text
        if action.default is argparse.SUPPRESS:
            return text
        shown = action.default
        if isinstance(shown, bool):
            shown = "on" if shown else "off"
        elif isinstance(shown, list) and not shown:
            shown = "none"
        return f"{text} (default: {shown})"


def installed_version(package: str) -> str:
    """The installed version of ``package``, or ``"not installed"``."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def build_parser(handlers: dict[str, Callable]) -> argparse.ArgumentParser:
    """The parser of ``inferax`` and its commands; ``handlers`` are the commands' functions
    by name (``run``, ``fit``, ``report``, ``demo``), which only ``set_defaults`` them."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )
    parser = _Parser(prog="inferax", description="Bayesian inference in JAX.", parents=[common])
    parser.add_argument(
        "--version", action="version", version=f"inferax {installed_version('inferax')}"
    )
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
        help="a sampler in inferax.samplers (nuts, hmc, mala, ula, ...)",
    )
    _sampling_options(run, default_out=None, command="run")
    run.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="the sampler's step_size (mala, ula and the SG samplers need one; "
        "default: the sampler's own, tuned in warmup for nuts and hmc)",
    )
    run.add_argument(
        "--kernel-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another sampler setting, such as num_integration_steps=32; repeat for more "
        "(default: none, except num_integration_steps=16 for hmc, which has no default)",
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
        help="replace the run or fit saved in OUT (only the files it wrote are deleted); "
        "without it, a previous one there is refused",
    )
    _plot_options(run)
    run.set_defaults(handler=handlers["run"])

    fit = commands.add_parser(
        "fit",
        parents=[common],
        help="fit a NumPyro model file with variational inference",
        description="Fit a variational family to MODEL.py (as for `run`) with Adam; write "
        "draws from the fit, its ELBO trace and k-hat to posterior.nc, summary.csv and "
        "report.html.",
    )
    fit.add_argument("model_file", metavar="MODEL.py")
    fit.add_argument(
        "--family",
        default="meanfield",
        help="meanfield, fullrank, or a flow in inferax.flows (realnvp, ...)",
    )
    fit.add_argument(
        "--family-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the family, such as init_scale=0.05, or a flow's (num_layers=8); "
        "repeat for more",
    )
    fit.add_argument("--steps", type=int, default=5000, help="optimisation steps")
    fit.add_argument("--learning-rate", type=float, default=1e-2, help="Adam's learning rate")
    fit.add_argument(
        "--objective",
        default="elbo",
        choices=("elbo", "iwae", "miwae", "ciwae", "piwae"),
        help="the bound to maximise",
    )
    fit.add_argument(
        "--particles", type=int, default=1, help="draws per step (K of the IWAE bounds)"
    )
    fit.add_argument(
        "--estimator",
        default="reparam",
        choices=("reparam", "stl"),
        help="the gradient estimator: reparameterisation or sticking the landing",
    )
    fit.add_argument("--draws", type=int, default=4000, help="draws from the fit to save")
    fit.add_argument("--seed", type=int, default=0, help="the random seed")
    fit.add_argument(
        "--out", default=None, help="output folder (default: MODEL-fit, in the working directory)"
    )
    fit.add_argument(
        "--force", action="store_true", help="replace a previous fit or run saved in OUT"
    )
    _progress_option(fit)
    _plot_options(fit)
    fit.set_defaults(handler=handlers["fit"])

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write an HTML report on saved posteriors, side by side when several",
    )
    report.add_argument("files", nargs="+", metavar="posterior.nc")
    report.add_argument(
        "-o", "--output", default="report.html", help="the HTML file (default: %(default)s)"
    )
    report.add_argument("--title", default=None, help="the page's title (default: none)")
    _plot_options(report)
    report.set_defaults(handler=handlers["report"])

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="sample the bundled eight-schools and logistic-regression models with NUTS and "
        "another sampler; write a report",
    )
    demo.add_argument("--sampler", default="hmc", help="the sampler to compare with NUTS")
    demo.add_argument(
        "--step-size",
        type=float,
        default=None,
        help="step size for a sampler that needs one, such as mala (default: tuned in warmup)",
    )
    _sampling_options(demo, default_out="inferax-demo", command="demo")
    demo.set_defaults(handler=handlers["demo"])
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


def _sampling_options(parser: argparse.ArgumentParser, default_out: str | None, command: str):
    parser.add_argument(
        "--chains", "--num-chains", dest="chains", type=int, default=4, help="chains"
    )
    parser.add_argument(
        "--warmup", "--num-warmup", dest="warmup", type=int, default=1000, help="warmup steps"
    )
    parser.add_argument(
        "--samples", "--num-samples", dest="samples", type=int, default=1000, help="draws kept"
    )
    parser.add_argument("--seed", type=int, default=0, help="the random seed")
    parser.add_argument(
        "--out",
        default=default_out,
        help="output folder"
        if default_out
        else f"output folder (default: MODEL-{command}, in the working directory)",
    )
    _progress_option(parser)


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on an interactive terminal)",
    )


__all__ = ["build_parser"]
