"""Convergence checks with thresholds: R-hat, ESS, divergences, tree depth, E-BFMI, PSIS k-hat.

Every statistic comes from ``arviz_stats``; this module only compares it with a threshold and
says what to do about it.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import arviz_stats
import numpy as np
import xarray as xr
from arviz_base.labels import BaseLabeller

from inferax.posterior import STUCK_ACCEPTANCE, STUCK_STEP_SIZE_RATIO, stuck_chains

Severity = Literal["error", "warning"]

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "rhat_max": 1.01,
    "ess_min_per_chain": 100,
    "ess_tail_prob": (0.05, 0.95),
    "max_divergences": 0,
    "max_treedepth_fraction": 0.01,
    "bfmi_min": 0.3,
    "khat_warn": 0.5,
    "khat_bad": 0.7,
}
"""The default of every keyword argument of ``check``."""

_ORDER = (
    "nonfinite",
    "diverging",
    "stuck_chain",
    "khat",
    "r_hat",
    "ess_bulk",
    "ess_tail",
    "tree_depth",
    "e_bfmi",
    "loo",
)

_ADVICE = {
    "nonfinite": "the model computes NaN or infinity there (such as the log of a negative "
    "number, or an overflow): fix the model or its constraints; the draws cannot be used",
    "r_hat": "the chains disagree: run longer warmup and more draws, or reparameterise "
    "(for example non-centred)",
    "ess_bulk": "too few effective draws for means and sds: draw more samples or improve mixing",
    "ess_tail": "too few effective draws in the tails: draw more samples before trusting "
    "intervals",
    "diverging": "the sampler missed regions of high curvature, so the draws are biased: "
    "raise target_acceptance_rate (for example 0.95) or reparameterise (for example "
    "non-centred)",
    "tree_depth": "NUTS stopped at its maximum tree depth: raise max_num_doublings, or "
    "reparameterise to reduce posterior correlations",
    "e_bfmi": "momentum resampling explores the energy poorly: reparameterise, or adapt a "
    "dense mass matrix",
    "khat_bad": "the approximation misses mass the posterior has: do not trust it; use a "
    "richer family or MCMC",
    "khat_warn": "heavy-tailed importance weights: PSIS-corrected estimates may be noisy; "
    "consider a richer family",
    "stuck_chain": "warmup failed for these chains, so their draws do not explore the "
    "posterior: rerun with inferax.sample(..., restart_stuck_chains=True), give inits nearer "
    "the posterior, or leave the chains out",
    "loo": "PSIS-LOO is unreliable for observations with a high Pareto k: those are highly "
    "influential; use K-fold cross-validation or moment matching for them, or a more robust "
    "model",
}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One failed check.

    Attributes:
      severity: ``"error"`` (do not use these draws as they are) or ``"warning"`` (use with
        care).
      check: which check failed: ``"nonfinite"``, ``"stuck_chain"``, ``"r_hat"``, ``"ess_bulk"``,
        ``"ess_tail"``, ``"diverging"``, ``"tree_depth"``, ``"e_bfmi"``, ``"khat"`` or
        ``"loo"``.
      variable: the worst element, such as ``"theta[3]"``; ``None`` for a check on the whole
        run (divergences, tree depth, E-BFMI, k-hat).
      value: the statistic at the worst element, chain or run (NaN where it could not be
        computed, such as R-hat of a stuck chain).
      threshold: the threshold it was compared with.
      message: what was found, in one line.
      advice: what to do about it, in one line.
      count: how many elements, chains or transitions failed.
      total: out of how many.
    """

    severity: Severity
    check: str
    variable: str | None
    value: float
    threshold: float
    message: str
    advice: str
    count: int = 1
    total: int = 1

    def __str__(self) -> str:
        return f"{self.severity}: {self.message}; {self.advice}"


def _quietly(fn):
    """Runs ``fn`` without the RuntimeWarnings that constant quantities give: their NaN
    statistics are skipped."""

    @functools.wraps(fn)
    def quiet(*args, **kwargs):
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn(*args, **kwargs)

    return quiet


@_quietly
def check(
    dt,
    *,
    var_names: Sequence[str] | None = None,
    rhat_max: float = 1.01,
    ess_min_per_chain: float = 100,
    ess_tail_prob: tuple[float, float] = (0.05, 0.95),
    max_divergences: int = 0,
    max_treedepth_fraction: float = 0.01,
    bfmi_min: float = 0.3,
    khat_warn: float = 0.5,
    khat_bad: float = 0.7,
) -> list[Finding]:
    """Checks a posterior for the usual signs of trouble and says what to do about each.

    Rank-normalised split R-hat, bulk ESS and tail ESS are computed per scalar quantity;
    quantities that never vary (such as a fixed deterministic site) are skipped. Tail ESS is
    the smaller of the ESS of the indicators at the two ``ess_tail_prob`` quantiles, as Stan
    computes it (ArviZ's own default is 11%/89%). The ESS threshold is
    ``ess_min_per_chain`` times the number of chains, as in ArviZ's ``diagnose``. Divergences,
    tree depth and E-BFMI are checked where ``sample_stats`` has ``diverging``,
    ``reached_max_treedepth`` and ``energy``. For a variational approximation, the PSIS
    k-hat of the log importance weights (``sample_stats.log_weight``, or ``lp - log_q``) is
    checked, or the ``khat`` attribute of the posterior group where no weights are stored.
    Chains that did not move after warmup (mean acceptance below 1%, or every transition
    divergent) are named. Where the tree has a ``log_likelihood`` group, PSIS-LOO's Pareto k
    of each observation is compared with ArviZ's sample-size-dependent threshold.

    Args:
      dt: a DataTree from ``Posterior.to_datatree()`` or ``Approximation.to_datatree()``,
        or anything with a ``to_datatree()`` method that takes no arguments.
      var_names: the posterior variables for R-hat and ESS; all by default.
      rhat_max: the largest acceptable R-hat.
      ess_min_per_chain: the smallest acceptable bulk and tail ESS, per chain.
      ess_tail_prob: the quantiles for tail ESS.
      max_divergences: the most divergent transitions accepted.
      max_treedepth_fraction: the largest acceptable fraction of draws at the maximum tree
        depth.
      bfmi_min: the smallest acceptable E-BFMI of any chain.
      khat_warn: k-hat above this is a warning.
      khat_bad: k-hat above this is an error.

    Returns:
      The findings, errors first, one per check and variable (naming the worst element and
      how many elements failed); an empty list when every check passes.

    Raises:
      ValueError: ``dt`` has no ``posterior`` group.

    Examples:
      >>> import numpy as np, arviz_base
      >>> from inferax.diagnostics import check
      >>> rng = np.random.default_rng(0)
      >>> dt = arviz_base.from_dict({"posterior": {"x": rng.normal(size=(4, 500))},
      ...                            "sample_stats": {"diverging": np.zeros((4, 500), bool)}})
      >>> check(dt)
      []
      >>> [f.check for f in check(dt, ess_min_per_chain=1000)]
      ['ess_bulk', 'ess_tail']

    References:
      Vehtari, Gelman, Simpson, Carpenter, Buerkner, "Rank-normalization, folding, and
      localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis
      2021.
      Betancourt, "A Conceptual Introduction to Hamiltonian Monte Carlo", 2017.
      Yao, Vehtari, Simpson, Gelman, "Yes, but Did It Work?: Evaluating Variational
      Inference", ICML 2018.
    """
    dt = as_datatree(dt)
    posterior = dt["posterior"].dataset
    if var_names is not None:
        posterior = posterior[list(var_names)]
    num_chains = posterior.sizes.get("chain", 1)
    findings: list[Finding] = [
        finding for name in posterior.data_vars if (finding := _nonfinite(posterior[name]))
    ]
    varying = {name: _varies(posterior[name]) for name in posterior.data_vars}

    def per_element(
        stat: xr.Dataset, name: str, bad_fn, kind: str, threshold: float, worst, describe
    ) -> None:
        values = np.asarray(stat[name], dtype=float)
        relevant = np.asarray(varying[name])
        bad = relevant & bad_fn(values)
        if not bad.any():
            return
        masked = np.where(bad, values, np.nan)
        if np.isnan(masked).all():
            index = np.unravel_index(np.argmax(bad), bad.shape)
        else:
            index = np.unravel_index(worst(masked), bad.shape)
        label = element_label(posterior[name], index)
        value = float(values[index]) if values.ndim else float(values)
        count, total = int(bad.sum()), int(relevant.sum())
        where = f" ({count} of {total} elements of {name})" if total > 1 else ""
        findings.append(
            Finding(
                severity="error" if kind == "r_hat" else "warning",
                check=kind,
                variable=label,
                value=value,
                threshold=float(threshold),
                message=describe(label, value, where),
                advice=_ADVICE[kind],
                count=count,
                total=total,
            )
        )

    if num_chains >= 2 and posterior.sizes.get("draw", 0) >= 4:
        rhat = arviz_stats.rhat(posterior)
        for name in posterior.data_vars:
            per_element(
                rhat,
                name,
                lambda v: ~(v <= rhat_max),
                "r_hat",
                rhat_max,
                np.nanargmax,
                lambda label, v, where: f"r_hat {v:.3f} > {rhat_max} at {label}{where}",
            )
    ess_min = ess_min_per_chain * num_chains
    ess_bulk = arviz_stats.ess(posterior, method="bulk")
    ess_tail = arviz_stats.ess(posterior, method="tail", prob=tuple(ess_tail_prob))
    for kind, ess in (("ess_bulk", ess_bulk), ("ess_tail", ess_tail)):
        for name in posterior.data_vars:
            per_element(
                ess,
                name,
                lambda v: ~(v >= ess_min),
                kind,
                ess_min,
                np.nanargmin,
                lambda label, v, where, kind=kind: (
                    f"{kind} {v:.0f} < {ess_min:g} ({ess_min_per_chain:g} x {num_chains} "
                    f"chains) at {label}{where}"
                ),
            )

    stats = dt["sample_stats"].dataset if "sample_stats" in dt.children else xr.Dataset()
    findings += _stuck_chain_findings(stats, dt["posterior"].dataset)
    findings += _sampler_findings(stats, max_divergences, max_treedepth_fraction, bfmi_min)
    findings += _khat_findings(dt, stats, khat_warn, khat_bad)
    findings += _loo_findings(dt)
    findings.sort(key=lambda f: (f.severity != "error", _ORDER.index(f.check)))
    return findings


def as_datatree(data) -> xr.DataTree:
    """``data`` as a DataTree: a DataTree as it is, or the result of its ``to_datatree()``."""
    if isinstance(data, xr.DataTree):
        tree = data
    elif hasattr(data, "to_datatree"):
        tree = data.to_datatree()
    else:
        raise TypeError(
            f"expected an xarray.DataTree or an inferax Posterior, got {type(data).__name__}"
        )
    if "posterior" not in tree.children:
        raise ValueError("the DataTree has no posterior group")
    return tree


def _varies(da: xr.DataArray) -> xr.DataArray:
    """True for elements whose draws are all finite and not all equal."""
    sample_dims = [d for d in ("chain", "draw") if d in da.dims]
    finite = np.isfinite(da).all(sample_dims)
    return ((da.max(sample_dims) > da.min(sample_dims)) & finite).fillna(False)


def _nonfinite(da: xr.DataArray) -> Finding | None:
    """An error naming the element of ``da`` with the most NaN or infinite draws, if any."""
    sample_dims = [d for d in ("chain", "draw") if d in da.dims]
    if not np.issubdtype(da.dtype, np.number):
        return None
    counts = np.asarray((~np.isfinite(da)).sum(sample_dims))
    if not counts.any():
        return None
    index = np.unravel_index(np.argmax(counts), counts.shape)
    label = element_label(da, index)
    draws = int(np.prod([da.sizes[d] for d in sample_dims]))
    bad, total = int(np.count_nonzero(counts)), int(counts.size)
    where = f" ({bad} of {total} elements of {da.name})" if total > 1 else ""
    return Finding(
        severity="error",
        check="nonfinite",
        variable=label,
        value=float(counts[index]) / draws,
        threshold=0.0,
        message=f"{label} is NaN or infinite in {int(counts[index])} of {draws} draws{where}",
        advice=_ADVICE["nonfinite"],
        count=bad,
        total=total,
    )


def element_label(da: xr.DataArray, index: tuple[int, ...]) -> str:
    """The name of one element of a variable, such as ``theta[school=Choate]``, from its
    index over the dims other than ``chain`` and ``draw``."""
    dims = [d for d in da.dims if d not in ("chain", "draw")]
    if not dims:
        return str(da.name)
    isel = dict(zip(dims, index, strict=True))
    sel = {d: da[d].values[i] if d in da.coords else i for d, i in isel.items()}
    return BaseLabeller().make_label_flat(str(da.name), sel, isel)


def _stuck_chain_findings(stats: xr.Dataset, posterior: xr.Dataset) -> list[Finding]:
    if "chain" not in stats.dims:
        return []
    stuck = stuck_chains(
        {name: np.asarray(stats[name]) for name in stats.data_vars},
        {name: np.asarray(posterior[name]) for name in posterior.data_vars},
    )
    if not stuck:
        return []
    total = stats.sizes["chain"]
    return [
        Finding(
            severity="error",
            check="stuck_chain",
            variable=None,
            value=float(len(stuck)),
            threshold=0.0,
            message=f"chain(s) {', '.join(map(str, stuck))} did not move after warmup "
            f"({len(stuck)} of {total} chains: every draw the same, mean acceptance below "
            f"{STUCK_ACCEPTANCE:g}, every transition divergent, or a step size below "
            f"{STUCK_STEP_SIZE_RATIO:g} of the median)",
            advice=_ADVICE["stuck_chain"],
            count=len(stuck),
            total=total,
        )
    ]


def loo(dt: xr.DataTree) -> dict[str, Any]:
    """PSIS-LOO by ``arviz_stats.loo`` for each variable of the ``log_likelihood`` group
    where ArviZ can compute it; empty when there is no such group. ArviZ's warnings about
    high Pareto k are left to ``check``."""
    return _loo_results(dt)[0]


def _loo_results(dt: xr.DataTree) -> tuple[dict[str, Any], dict[str, str]]:
    """The PSIS-LOO results by variable, and the reasons ArviZ gave where it failed (such
    as stuck chains, whose log likelihoods never vary)."""
    if "log_likelihood" not in dt.children:
        return {}, {}
    results, failures = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for name in dt["log_likelihood"].dataset.data_vars:
            try:
                results[name] = arviz_stats.loo(dt, pointwise=True, var_name=name)
            except ValueError as error:
                failures[name] = str(error)
    return results, failures


def _loo_findings(dt: xr.DataTree) -> list[Finding]:
    results, failures = _loo_results(dt)
    findings = [
        Finding(
            severity="warning",
            check="loo",
            variable=name,
            value=float("nan"),
            threshold=float("nan"),
            message=f"PSIS-LOO of {name} could not be computed ({reason})",
            advice=_ADVICE["loo"],
        )
        for name, reason in failures.items()
    ]
    for name, result in results.items():
        pareto_k = np.asarray(result.pareto_k, dtype=float).ravel()
        bad = ~(pareto_k <= result.good_k)
        if not bad.any():
            continue
        findings.append(
            Finding(
                severity="warning",
                check="loo",
                variable=name,
                value=float(np.nanmax(pareto_k)),
                threshold=float(result.good_k),
                message=f"PSIS-LOO of {name}: {int(bad.sum())} of {pareto_k.size} "
                f"observations have Pareto k above {result.good_k:.2f} (max "
                f"{np.nanmax(pareto_k):.2f}), so elpd_loo {result.elpd:.1f} (SE "
                f"{result.se:.1f}) is unreliable",
                advice=_ADVICE["loo"],
                count=int(bad.sum()),
                total=int(pareto_k.size),
            )
        )
    return findings


def _sampler_findings(
    stats: xr.Dataset, max_divergences: int, max_treedepth_fraction: float, bfmi_min: float
) -> list[Finding]:
    findings = []
    if "diverging" in stats:
        diverging = np.asarray(stats["diverging"], dtype=bool)
        count, total = int(diverging.sum()), int(diverging.size)
        if count > max_divergences:
            findings.append(
                Finding(
                    severity="error",
                    check="diverging",
                    variable=None,
                    value=float(count),
                    threshold=float(max_divergences),
                    message=f"{count} of {total} transitions diverged "
                    f"({100 * count / total:.1f}%)",
                    advice=_ADVICE["diverging"],
                    count=count,
                    total=total,
                )
            )
    if "reached_max_treedepth" in stats:
        saturated = np.asarray(stats["reached_max_treedepth"], dtype=bool)
        fraction = float(saturated.mean())
        if fraction > max_treedepth_fraction:
            findings.append(
                Finding(
                    severity="warning",
                    check="tree_depth",
                    variable=None,
                    value=fraction,
                    threshold=float(max_treedepth_fraction),
                    message=f"{100 * fraction:.1f}% of draws reached the maximum tree depth "
                    f"(> {100 * max_treedepth_fraction:g}%)",
                    advice=_ADVICE["tree_depth"],
                    count=int(saturated.sum()),
                    total=int(saturated.size),
                )
            )
    if "energy" in stats and stats.sizes.get("draw", 0) >= 2:
        bfmi = np.atleast_1d(np.asarray(arviz_stats.bfmi(stats["energy"]), dtype=float))
        bad = ~(bfmi >= bfmi_min)
        if bad.any():
            finite = bad & np.isfinite(bfmi)
            if finite.any():
                worst = int(np.nanargmin(np.where(finite, bfmi, np.nan)))
                what = f"E-BFMI {bfmi[worst]:.2f} < {bfmi_min} in chain {worst}"
            else:
                worst = int(np.argmax(bad))
                what = f"E-BFMI is not finite in chain {worst} (non-finite energy)"
            findings.append(
                Finding(
                    severity="warning",
                    check="e_bfmi",
                    variable=None,
                    value=float(bfmi[worst]),
                    threshold=float(bfmi_min),
                    message=f"{what} ({int(bad.sum())} of {bfmi.size} chains below)",
                    advice=_ADVICE["e_bfmi"],
                    count=int(bad.sum()),
                    total=int(bfmi.size),
                )
            )
    return findings


def khat(dt: xr.DataTree) -> float | None:
    """The PSIS k-hat of a variational approximation's importance weights, or ``None``.

    Computed by ``arviz_stats`` from ``sample_stats.log_weight`` (or ``lp - log_q``) over
    all draws; otherwise the ``khat`` attribute of the posterior group, where present.
    """
    stats = dt["sample_stats"].dataset if "sample_stats" in dt.children else xr.Dataset()
    log_weight = _log_weight(stats)
    if log_weight is not None:
        # ArviZ's psislw takes log-likelihoods, as in PSIS-LOO, whose log weights are their
        # negatives; hence the minus sign.
        _, value = (-log_weight).azstats.psislw(dim=list(log_weight.dims))
        return float(value)
    attr = dt["posterior"].attrs.get("khat")
    return None if attr is None else float(attr)


def _log_weight(stats: xr.Dataset) -> xr.DataArray | None:
    if "log_weight" in stats:
        return stats["log_weight"]
    if "log_q" in stats and "lp" in stats:
        return stats["lp"] - stats["log_q"]
    return None


def _khat_findings(
    dt: xr.DataTree, stats: xr.Dataset, khat_warn: float, khat_bad: float
) -> list[Finding]:
    value = khat(dt)
    if value is None or value <= khat_warn:
        return []
    bad = not value <= khat_bad
    threshold = khat_bad if bad else khat_warn
    return [
        Finding(
            severity="error" if bad else "warning",
            check="khat",
            variable=None,
            value=value,
            threshold=float(threshold),
            message=f"PSIS k-hat {value:.2f} > {threshold}",
            advice=_ADVICE["khat_bad" if bad else "khat_warn"],
        )
    ]


def checks_applied(dt: xr.DataTree) -> list[str]:
    """The names of the checks that ``check`` can run on ``dt``, in its order."""
    stats = dt["sample_stats"].dataset if "sample_stats" in dt.children else xr.Dataset()
    posterior = dt["posterior"].dataset
    names = []
    if "acceptance_rate" in stats or "diverging" in stats:
        names.append("stuck_chain")
    if "diverging" in stats:
        names.append("diverging")
    if khat(dt) is not None:
        names.append("khat")
    if posterior.sizes.get("chain", 1) >= 2 and posterior.sizes.get("draw", 0) >= 4:
        names.append("r_hat")
    names += ["ess_bulk", "ess_tail"]
    if "reached_max_treedepth" in stats:
        names.append("tree_depth")
    if "energy" in stats:
        names.append("e_bfmi")
    if "log_likelihood" in dt.children:
        names.append("loo")
    return names
