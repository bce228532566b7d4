"""The HTML report's sections on evidence and calibration: a tempered-SMC run's log evidence,
its standard error, temperature schedule and ESS per stage; and a simulation-based
calibration's rank tests and ECDF-difference plot. Each returns its HTML and the figures to
draw (caption and a function that draws one), which the report renders."""

from __future__ import annotations

import html
from collections.abc import Callable

import numpy as np
import xarray as xr

from inferax.diagnostics.sbc_result import plot_ecdf_difference

Figures = list[tuple[str, Callable]]


def has_evidence(tree: xr.DataTree) -> bool:
    """Whether the run estimated its evidence (an ``evidence_stats`` group)."""
    return "evidence_stats" in tree.children


def evidence_part(tree: xr.DataTree) -> tuple[str, Figures]:
    """The log evidence with its MCSE and per-run values, and the plots of the temperature
    schedule and of the ESS per stage, one line per run."""
    stats = tree["evidence_stats"].dataset
    runs = np.asarray(stats["log_evidence"], dtype=float)
    mean = float(np.mean(runs))
    mcse = float(np.std(runs, ddof=1) / np.sqrt(runs.size)) if runs.size > 1 else float("nan")
    stages = np.asarray(stats["num_stages"])
    nonfinite = float(np.nansum(np.asarray(stats["nonfinite"], dtype=float)))
    css = "warn" if nonfinite or not np.all(np.isfinite(runs)) else "ok"
    out = [
        "<h3>Evidence (tempered SMC)</h3>",
        f"<p class='finding {css}'>log evidence = {mean:.4f} (MCSE {mcse:.4f} over "
        f"{runs.size} independent runs); stages per run {int(stages.min())}&ndash;"
        f"{int(stages.max())}; particle-stages with a non-finite log likelihood: "
        f"{int(nonfinite)}</p>",
        "<table class='meta'><tr><th>run</th>"
        + "".join(f"<td>{i}</td>" for i in range(runs.size))
        + "</tr><tr><th>log evidence</th>"
        + "".join(f"<td>{value:.4f}</td>" for value in runs)
        + "</tr></table>",
    ]

    def per_stage(name: str, label: str):
        def draw():
            import matplotlib.pyplot as plt

            values = np.asarray(stats[name], dtype=float)
            fig, ax = plt.subplots(figsize=(6, 3))
            for run, row in enumerate(values):
                ax.plot(np.arange(1, row.size + 1), row, marker=".", lw=1, label=f"run {run}")
            ax.set_xlabel("stage")
            ax.set_ylabel(label)
            fig.tight_layout()
            return fig

        return draw

    figures = [
        ("Temperature schedule", per_stage("temperature", "temperature")),
        ("ESS of the weights per stage", per_stage("ess", "ESS")),
    ]
    return "\n".join(out), figures


def sbc_part(tree: xr.DataTree) -> tuple[str, Figures]:
    """The chi-square p-value of every ranked component, flagged below 1% over the number of
    components (Bonferroni), and the ECDF-difference plot with 99% simultaneous bands."""
    p_values = tree["p_values"].dataset
    attrs = tree.attrs
    count = sum(int(np.size(v)) for v in p_values.data_vars.values())
    level = 0.01 / max(count, 1)
    num_simulations = tree["prior_sbc"].dataset.sizes["draw"]
    rows = []
    for name, values in p_values.data_vars.items():
        for index, p in np.ndenumerate(np.asarray(values, dtype=float)):
            label = name + (f"[{', '.join(map(str, index))}]" if index else "")
            css = " class='bad'" if p < level else ""
            rows.append(f"<tr><td>{html.escape(label)}</td><td{css}>{p:.4f}</td></tr>")
    rejected = any(
        float(np.min(np.asarray(v, dtype=float))) < level for v in p_values.data_vars.values()
    )
    css = "bad" if rejected else "ok"
    verdict = "ranks are not uniform" if rejected else "no departure from uniform ranks"
    out = [
        "<section id='sbc'><h2>Simulation-based calibration</h2>",
        f"<p class='finding {css}'>{verdict} at family-wise level 1% (chi-square over "
        f"{attrs.get('num_bins', '?')} bins, Bonferroni over {count} components); "
        f"{num_simulations} simulations, ranks among {attrs.get('num_draws', '?')} draws</p>",
        "<table><thead><tr><th>component</th><th>p-value</th></tr></thead><tbody>",
        *rows,
        "</tbody></table>",
    ]
    figures = [
        (
            "ECDF difference of the ranks, 99% simultaneous band",
            lambda: plot_ecdf_difference(tree, prob=0.99),
        )
    ]
    return "\n".join(out), figures
