"""The HTML report: findings first, then tables and arviz-plots figures, in one file.

Figures are drawn by arviz-plots with the matplotlib backend and inlined as base64 PNG, so the
file needs no network and no other file. Nothing in it runs JavaScript.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
import pathlib
import platform
import warnings
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import xarray as xr

from inferax.checkpoint import write_atomically
from inferax.diagnostics.checks import (
    DEFAULT_THRESHOLDS,
    Finding,
    as_datatree,
    check,
    checks_applied,
    khat,
    loo,
)
from inferax.diagnostics.evidence_sections import evidence_part, has_evidence, sbc_part
from inferax.diagnostics.summary_table import flat_elements, num_elements, summary

MAX_PLOTTED = 10
"""Scalar quantities drawn in the trace, rank and autocorrelation plots; the table lists all."""

MAX_PAIRED = 8
"""Scalar quantities in the pair plot."""

_VERSIONS = (
    "inferax",
    "jax",
    "jaxlib",
    "numpyro",
    "blackjax",
    "arviz-base",
    "arviz-stats",
    "arviz-plots",
    "xarray",
    "matplotlib",
    "numpy",
)

_CHECK_NAMES = {
    "diverging": "divergences",
    "khat": "PSIS k-hat",
    "r_hat": "R-hat",
    "ess_bulk": "bulk ESS",
    "ess_tail": "tail ESS",
    "tree_depth": "tree depth",
    "e_bfmi": "E-BFMI",
    "stuck_chain": "stuck chains",
    "loo": "PSIS-LOO Pareto k",
}


def report(
    data,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    thresholds: Mapping[str, Any] | None = None,
    max_plotted: int = MAX_PLOTTED,
    max_paired: int = MAX_PAIRED,
    sbc=None,
) -> pathlib.Path:
    """Writes one self-contained HTML report on one run, or several runs side by side.

    The page opens with the findings of ``check``, coloured by severity, then for several
    runs a comparison of means and HDIs per quantity, then for each run: its metadata
    (sampler, settings, timing, seed, library versions), the summary table, and trace,
    rank, pair (divergences marked), energy (with E-BFMI) and autocorrelation plots. A
    variational run shows its k-hat and the trace of its bound (``optimization/elbo``, dim
    ``step``, or ``-loss``, where present). Plots draw the first ``max_plotted`` scalar
    quantities (the pair plot the first ``max_paired``); the table holds every one, so a
    posterior with thousands of quantities still reports in seconds.

    Args:
      data: a DataTree (or ``Posterior``), or a mapping of run name to DataTree to compare.
      path: the HTML file to write.
      title: the page title; by default "inferax report".
      thresholds: keyword arguments for ``check`` (``rhat_max``, ``ess_min_per_chain``,
        ...), also used to highlight the table.
      max_plotted: scalar quantities in the trace, rank and autocorrelation plots.
      max_paired: scalar quantities in the pair plot.
      sbc: a simulation-based calibration (``diagnostics.sbc``'s result, or its DataTree)
        to report in its own section: rank tests and the ECDF-difference plot.

    Returns:
      The path written.

    Examples:
      >>> import tempfile, pathlib, numpy as np, arviz_base
      >>> from inferax.diagnostics import report
      >>> rng = np.random.default_rng(0)
      >>> dt = arviz_base.from_dict({"posterior": {"mu": rng.normal(size=(2, 100))}})
      >>> out = report(dt, pathlib.Path(tempfile.mkdtemp()) / "report.html")
      >>> "mu" in out.read_text()
      True
    """
    thresholds = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown = set(thresholds) - set(DEFAULT_THRESHOLDS)
    if unknown:
        raise TypeError(f"unknown thresholds {sorted(unknown)}; known: {list(DEFAULT_THRESHOLDS)}")
    if isinstance(data, Mapping) and not isinstance(data, xr.DataTree):
        if not data:
            raise ValueError("report: no runs given")
        runs = {str(name): as_datatree(tree) for name, tree in data.items()}
    else:
        tree = as_datatree(data)
        runs = {_default_name(tree): tree}
    title = title or "inferax report"
    parts = [_Run(name, tree, thresholds, max_plotted, max_paired) for name, tree in runs.items()]

    body = [f"<header><h1>{_e(title)}</h1><p class='meta'>{_e(_generated())}</p>"]
    body.append(_contents(parts))
    body.append("</header>")
    body.append(_findings_section(parts, thresholds))
    if len(parts) > 1:
        body.append(_comparison_section(parts, max_plotted))
    for index, part in enumerate(parts):
        body.append(part.section(index))
    if sbc is not None:
        sbc_tree = sbc if isinstance(sbc, xr.DataTree) else sbc.to_datatree()
        body.append(_with_figures("SBC", *sbc_part(sbc_tree)) + "</section>")
    body.append(_environment_section())
    page = _PAGE.format(title=_e(title), style=_STYLE, body="\n".join(body))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temporary: temporary.write_text(page, encoding="utf-8"))
    return path


class _Run:
    """One run's computed pieces: findings, summary table, plot data."""

    def __init__(
        self, name: str, tree: xr.DataTree, thresholds: dict, max_plotted: int, max_paired: int
    ):
        self.name = name
        self.tree = tree
        self.thresholds = thresholds
        self.posterior = tree["posterior"].dataset
        self.stats = (
            tree["sample_stats"].dataset if "sample_stats" in tree.children else xr.Dataset()
        )
        self.findings = check(tree, **thresholds)
        self.applied = checks_applied(tree)
        self.table = summary(tree, ess_tail_prob=thresholds["ess_tail_prob"])
        self.num_quantities = num_elements(self.posterior)
        self.max_paired = max_paired
        self.plotted = dict(flat_elements(self.posterior, limit=max_plotted))
        self.khat = khat(tree)
        self.loo = loo(tree)

    def plot_tree(self, limit: int | None = None) -> xr.DataTree:
        """The first quantities, one variable each, with the sample stats for divergences."""
        names = list(self.plotted)[:limit]
        groups = {"posterior": xr.Dataset({n: self.plotted[n] for n in names})}
        if self.stats.data_vars:
            groups["sample_stats"] = self.stats
        return xr.DataTree.from_dict(groups)

    def section(self, index: int) -> str:
        import arviz_plots

        out = [f"<section class='run' id='run-{index}'><h2>{_e(self.name)}</h2>"]
        out.append(_metadata_table(self))
        out.append("<h3>Summary</h3>")
        out.append(_summary_table(self))
        shown = len(self.plotted)
        if shown < self.num_quantities:
            out.append(
                f"<p class='note'>Plots show the first {shown} of {self.num_quantities} "
                "scalar quantities; the table lists all.</p>"
            )
        if self.khat is not None or "optimization" in self.tree.children:
            out.append(_variational_part(self))
        if self.loo:
            out.append(_loo_part(self))
        if has_evidence(self.tree):
            out.append(_with_figures(self.name, *evidence_part(self.tree)))
        tree = self.plot_tree()
        has_chains = self.posterior.sizes.get("chain", 1) > 1
        plots: list[tuple[str, Callable]] = [
            ("Trace", lambda: arviz_plots.plot_trace_dist(tree, backend="matplotlib")),
        ]
        if has_chains:
            plots.append(("Rank", lambda: arviz_plots.plot_rank(tree, backend="matplotlib")))
        if shown >= 2 and self.max_paired >= 2:
            paired = self.plot_tree(self.max_paired)
            plots.append(
                (
                    "Pairs (divergences in red)" if "diverging" in self.stats else "Pairs",
                    lambda: arviz_plots.plot_pair(
                        paired,
                        backend="matplotlib",
                        marginal=True,
                        visuals={"divergence": {"color": "red", "alpha": 0.8}},
                    ),
                )
            )
        if "energy" in self.stats:
            plots.append(
                ("Energy and E-BFMI", lambda: arviz_plots.plot_energy(tree, backend="matplotlib"))
            )
        plots.append(
            ("Autocorrelation", lambda: arviz_plots.plot_autocorr(tree, backend="matplotlib"))
        )
        if "posterior_predictive" in self.tree.children and "observed_data" in self.tree.children:
            plots.append(
                (
                    "Posterior predictive check",
                    lambda: arviz_plots.plot_ppc_dist(self.tree, backend="matplotlib"),
                )
            )
        for caption, draw in plots:
            out.append(_figure(caption, f"{self.name}: {caption}", draw))
        out.append("</section>")
        return "\n".join(out)


def _default_name(tree: xr.DataTree) -> str:
    sampler = str(tree["posterior"].attrs.get("sampler", "")).split("(")[0]
    return sampler or "run"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _generated() -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"Written {now} by inferax {_version('inferax')}"


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _contents(parts: list[_Run]) -> str:
    links = ["<a href='#findings'>Findings</a>"]
    if len(parts) > 1:
        links.append("<a href='#comparison'>Comparison</a>")
    links += [f"<a href='#run-{i}'>{_e(p.name)}</a>" for i, p in enumerate(parts)]
    links.append("<a href='#environment'>Environment</a>")
    return "<nav>" + " · ".join(links) + "</nav>"


def _finding_item(finding: Finding) -> str:
    return (
        f"<li class='finding {finding.severity}' data-check='{_e(finding.check)}'>"
        f"<span class='badge'>{_e(finding.severity)}</span> "
        f"<strong>{_e(finding.message)}</strong><br><span class='advice'>"
        f"{_e(finding.advice)}</span></li>"
    )


def _findings_section(parts: list[_Run], thresholds: dict) -> str:
    out = ["<section id='findings'><h2>Findings</h2>"]
    for part in parts:
        if len(parts) > 1:
            out.append(f"<h3>{_e(part.name)}</h3>")
        failed = {f.check for f in part.findings}
        passed = [_CHECK_NAMES[c] for c in part.applied if c not in failed]
        if part.findings:
            out.append("<ul class='findings'>")
            out += [_finding_item(f) for f in part.findings]
            out.append("</ul>")
        if passed:
            verdict = "All checks passed" if not part.findings else "Passed"
            out.append(f"<p class='finding ok'>{verdict}: {_e(', '.join(passed))}.</p>")
    ess = thresholds["ess_min_per_chain"]
    lo, hi = thresholds["ess_tail_prob"]
    out.append(
        "<p class='note'>Thresholds: R-hat &le; "
        f"{thresholds['rhat_max']}; bulk and tail ESS &ge; {ess:g} per chain (tail at the "
        f"{100 * lo:g}%/{100 * hi:g}% quantiles); divergences &le; "
        f"{thresholds['max_divergences']}; maximum tree depth on &le; "
        f"{100 * thresholds['max_treedepth_fraction']:g}% of draws; E-BFMI &ge; "
        f"{thresholds['bfmi_min']}; k-hat &le; {thresholds['khat_warn']} (warning above), "
        f"&le; {thresholds['khat_bad']} (error above).</p></section>"
    )
    return "\n".join(out)


def _fmt(value: float, column: str = "") -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if column.startswith("ess"):
        return f"{value:.0f}"
    if column == "r_hat":
        return f"{value:.3f}"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"


def _summary_table(part: _Run) -> str:
    table = part.table
    rhat_max = part.thresholds["rhat_max"]
    ess_min = part.thresholds["ess_min_per_chain"] * part.posterior.sizes.get("chain", 1)
    columns = list(table.columns)
    head = "".join(f"<th>{_e(c)}</th>" for c in ["", *columns])
    rows = []
    for label, row in table.iterrows():
        cells = []
        for column in columns:
            value = float(row[column])
            css = ""
            if column == "r_hat" and np.isfinite(value) and value > rhat_max:
                css = " class='bad'"
            elif column.startswith("ess_") and np.isfinite(value) and value < ess_min:
                css = " class='warn'"
            cells.append(f"<td{css}>{_fmt(value, column)}</td>")
        rows.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
    return (
        "<div class='table-wrap'><table class='summary'><thead><tr>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _metadata_table(part: _Run) -> str:
    attrs = dict(part.tree["posterior"].attrs)
    sizes = part.posterior.sizes
    rows: list[tuple[str, Any]] = [
        ("sampler", attrs.pop("sampler", "not recorded")),
        ("chains × draws", f"{sizes.get('chain', 1)} × {sizes.get('draw', 0)}"),
        ("warmup steps per chain", attrs.pop("tuning_steps", "not recorded")),
        ("scalar quantities", part.num_quantities),
        ("seed", attrs.pop("seed", "not recorded")),
    ]
    for key, name in (
        ("compile_time", "compile"),
        ("warmup_time", "warmup"),
        ("sampling_time", "sampling"),
    ):
        if key in attrs:
            rows.append((f"{name} time", f"{float(attrs.pop(key)):.2f} s"))
    for stat in ("acceptance_rate", "step_size", "n_steps", "tree_depth"):
        if stat in part.stats:
            rows.append((f"mean {stat}", _fmt(float(part.stats[stat].mean()))))
    for key in ("created_at", "sample_dims", "creation_library_language"):
        attrs.pop(key, None)
    rows += sorted(attrs.items())
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<h3>Run</h3><table class='meta'>{body}</table>"


def _loo_part(part: _Run) -> str:
    out = ["<h3>Leave-one-out cross-validation (PSIS-LOO)</h3>"]
    for name, result in part.loo.items():
        pareto_k = np.asarray(result.pareto_k, dtype=float).ravel()
        bad = int(np.sum(~(pareto_k <= result.good_k)))
        css = "warn" if bad else "ok"
        out.append(
            f"<p class='finding {css}'>{_e(name)}: elpd_loo = {result.elpd:.2f} (SE "
            f"{result.se:.2f}), p_loo = {result.p:.2f}; Pareto k above {result.good_k:.2f} "
            f"for {bad} of {pareto_k.size} observations (max {np.nanmax(pareto_k):.2f})</p>"
        )
    return "\n".join(out)


def _variational_part(part: _Run) -> str:
    """A variational fit's section: its k-hat, judged as ``check`` judges it, and the trace
    of the bound it climbed (``optimization/elbo``, or ``-loss`` in files without it)."""
    out = ["<h3>Variational fit</h3>"]
    if part.khat is not None:
        t = part.thresholds
        css = "ok"
        if part.khat > t["khat_bad"]:
            css = "bad"
        elif part.khat > t["khat_warn"]:
            css = "warn"
        out.append(
            f"<p class='finding {css}'>PSIS k-hat = {part.khat:.2f} (warning above "
            f"{t['khat_warn']}, error above {t['khat_bad']})</p>"
        )
    trace = _bound_trace(part.tree)
    if trace is not None:
        objective = part.tree["optimization"].attrs.get("objective", "elbo")
        label = "ELBO" if objective == "elbo" else f"{objective} bound"
        window = max(1, trace.size // 50)
        smooth = np.convolve(trace, np.ones(window) / window, mode="valid")
        tail = trace[-max(1, trace.size // 10) :]
        out.append(
            f"<p>{_e(label)} over the last {tail.size} of {trace.size} steps: "
            f"{_fmt(float(np.mean(tail)))} (each step's estimate from its own draws)</p>"
        )

        def draw():
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(8, 3))
            ax.plot(np.arange(trace.size), trace, lw=0.5, alpha=0.4, label="per step")
            ax.plot(np.arange(smooth.size) + window - 1, smooth, lw=1.5, label=f"mean of {window}")
            finite = trace[np.isfinite(trace)]
            if finite.size > 10:  # the first steps' bound can be far below the rest
                ax.set_ylim(np.quantile(finite, 0.05), finite.max() + 0.05 * np.ptp(finite))
            ax.set_xlabel("step")
            ax.set_ylabel(label)
            ax.legend(loc="lower right")
            fig.tight_layout()
            return fig

        out.append(_figure(f"{label} trace", f"{part.name}: {label} trace", draw))
    return "\n".join(out)


def _bound_trace(tree: xr.DataTree) -> np.ndarray | None:
    if "optimization" not in tree.children:
        return None
    ds = tree["optimization"].dataset
    if "elbo" in ds:
        return np.asarray(ds["elbo"], dtype=float).ravel()
    if "loss" in ds:
        return -np.asarray(ds["loss"], dtype=float).ravel()
    return None


def _comparison_section(parts: list[_Run], max_plotted: int) -> str:
    import arviz_plots

    out = ["<section id='comparison'><h2>Comparison</h2>"]
    labels: list[str] = []
    for part in parts:
        labels += [label for label in part.table.index if label not in labels]
    head = "".join(f"<th>{_e(p.name)}</th>" for p in parts)
    interval = [c for c in parts[0].table.columns if c.endswith("_lb") or c.endswith("_ub")]
    rows = []
    for label in labels:
        cells = []
        for part in parts:
            if label in part.table.index:
                row = part.table.loc[label]
                lo, hi = (float(row[c]) for c in interval)
                cells.append(f"<td>{_fmt(float(row['mean']))} [{_fmt(lo)}, {_fmt(hi)}]</td>")
            else:
                cells.append("<td></td>")
        rows.append(f"<tr><th>{_e(label)}</th>{''.join(cells)}</tr>")
    kind = interval[0].rsplit("_", 1)[0] if interval else "interval"
    out.append(f"<p class='note'>Mean [{_e(kind)}] per quantity and run.</p>")
    out.append(
        "<div class='table-wrap'><table class='summary compare'><thead><tr><th></th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    # One forest plot per group of runs that share quantities.
    groups: list[tuple[list[str], list[_Run]]] = []
    for part in parts:
        for group in groups:
            shared = [label for label in group[0] if label in part.table.index]
            if shared:
                group[0][:] = shared
                group[1].append(part)
                break
        else:
            groups.append((list(part.table.index), [part]))
    for shared, members in groups:
        if len(members) < 2:
            continue
        chosen = shared[:max_plotted]
        trees = {
            p.name: xr.DataTree.from_dict(
                {"posterior": xr.Dataset(dict(_select(p.posterior, chosen)))}
            )
            for p in members
        }
        caption = "Means and intervals: " + ", ".join(p.name for p in members)
        if len(shared) > len(chosen):
            caption += f" (first {len(chosen)} of {len(shared)} shared quantities)"

        def draw(trees=trees):
            plot = arviz_plots.plot_forest(trees, backend="matplotlib", combined=True)
            plot.add_legend("model")
            return plot

        out.append(_figure(caption, caption, draw))
    out.append("</section>")
    return "\n".join(out)


def _select(ds: xr.Dataset, labels: list[str]):
    """``(label, values)`` for the scalar quantities of ``ds`` named in ``labels``."""
    wanted = set(labels)
    found = {label: values for label, values in flat_elements(ds) if label in wanted}
    return [(label, found[label]) for label in labels if label in found]


def _environment_section() -> str:
    rows = [("python", platform.python_version()), ("platform", platform.platform())]
    rows += [(name, _version(name)) for name in _VERSIONS]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return (
        "<section id='environment'><h2>Environment</h2><p class='note'>Libraries where this "
        f"report was written.</p><table class='meta'>{body}</table></section>"
    )


def _with_figures(name: str, text: str, figures: list[tuple[str, Callable]]) -> str:
    drawn = [_figure(caption, f"{name}: {caption}", draw) for caption, draw in figures]
    return "\n".join([text, *drawn])


def _figure(caption: str, alt: str, draw: Callable) -> str:
    """A figure drawn by ``draw`` (returning a PlotCollection or a matplotlib figure), as an
    inline PNG; a failed plot becomes a visible note, not a failed report."""
    import matplotlib.pyplot as plt
    from arviz_base import rc_context

    try:
        with (
            warnings.catch_warnings(),
            np.errstate(divide="ignore", invalid="ignore"),
            rc_context({"plot.max_subplots": 100}),  # an 8 x 8 pair plot
        ):
            warnings.simplefilter("ignore")
            made = draw()
            figure = made.get_viz("figure") if hasattr(made, "get_viz") else made
            figure = figure.item() if hasattr(figure, "item") else figure
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=72)
    except Exception as error:  # noqa: BLE001  (a plot that fails must not lose the report)
        return (
            f"<figure><figcaption>{_e(caption)}</figcaption><p class='plot-error'>"
            f"could not draw this plot: {_e(type(error).__name__)}: {_e(error)}</p></figure>"
        )
    finally:
        plt.close("all")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (
        f"<figure><figcaption>{_e(caption)}</figcaption>"
        f"<img src='data:image/png;base64,{data}' alt='{_e(alt)}'></figure>"
    )


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 0 1.5em 3em; color: #1d2430; line-height: 1.4; }
header { border-bottom: 1px solid #d0d7de; margin-bottom: 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; }
nav a { margin-right: 0.3em; } .meta, .note { color: #57606a; }
ul.findings { list-style: none; padding: 0; }
.finding { border-left: 6px solid; border-radius: 4px; padding: 0.5em 0.8em; margin: 0.4em 0; }
.finding.error, .finding.bad { background: #ffebe9; border-color: #cf222e; }
.finding.warning, .finding.warn { background: #fff8c5; border-color: #bf8700; }
.finding.ok { background: #dafbe1; border-color: #1a7f37; }
.badge { font-size: 0.8em; font-weight: 700; text-transform: uppercase; }
.error .badge { color: #cf222e; } .warning .badge { color: #9a6700; }
.advice { color: #424a53; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #eaeef2; text-align: right; }
table.meta th, table.meta td { text-align: left; }
thead th { position: sticky; top: 0; background: #f6f8fa; }
td.bad { background: #ffebe9; color: #cf222e; font-weight: 700; }
td.warn { background: #fff8c5; }
.table-wrap { max-height: 32em; overflow: auto; }
figure { margin: 1em 0; } figcaption { font-weight: 600; margin-bottom: 0.3em; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
.plot-error { color: #cf222e; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""
