"""``Posterior``: draws and sampler statistics, as arrays and as an ArviZ DataTree."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import warnings
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import arviz_base
import arviz_stats
import numpy as np
import xarray as xr

from inferax.checkpoint import write_atomically

STUCK_ACCEPTANCE = 0.01
"""A chain whose mean acceptance rate after warmup is below this is stuck."""

STUCK_STEP_SIZE_RATIO = 1e-4
"""A chain whose tuned step size is below this fraction of the median over chains is stuck:
warmup left it creeping through a region of huge curvature that the others left."""


def stuck_chains(stats: dict[str, Any], draws: dict[str, Any] | None = None) -> list[int]:
    """The chains that did not move after warmup: every draw equal to the first, mean
    acceptance rate below ``STUCK_ACCEPTANCE``, every transition divergent, or a step size
    below ``STUCK_STEP_SIZE_RATIO`` times the median over chains. Warmup that ends with a
    step size of zero, or in a region where every proposal fails, leaves such a chain.

    Args:
      stats: sampler statistics by ArviZ name, shape ``(chain, draw)``
        (``acceptance_rate``, ``diverging`` and ``step_size`` are read where present).
      draws: the draws by site, shape ``(chain, draw, ...)``, if at hand.

    Returns:
      The indices of the stuck chains, in order.
    """
    flags = []
    if "acceptance_rate" in stats:
        acceptance = np.nan_to_num(np.asarray(stats["acceptance_rate"], dtype=float), nan=0.0)
        flags.append(acceptance.mean(axis=1) < STUCK_ACCEPTANCE)
    if "diverging" in stats:
        flags.append(np.asarray(stats["diverging"], dtype=bool).all(axis=1))
    if "step_size" in stats:
        step_size = np.asarray(stats["step_size"], dtype=float).mean(axis=1)
        if step_size.size >= 2:
            flags.append(step_size < STUCK_STEP_SIZE_RATIO * np.median(step_size))
    moving = [
        (values != values[:, :1]).reshape(values.shape[0], -1).any(axis=1)
        for values in map(np.asarray, (draws or {}).values())
        if np.issubdtype(values.dtype, np.floating) and values.ndim >= 2 and values.shape[1] > 1
    ]
    if moving:
        flags.append(~np.logical_or.reduce(moving))
    if not flags:
        return []
    return np.flatnonzero(np.logical_or.reduce(flags)).tolist()


_TIMING_ATTRS = {"compile": "compile_time", "warmup": "warmup_time", "sampling": "sampling_time"}


def _inferax_version() -> str:
    try:
        return version("inferax")
    except PackageNotFoundError:
        return "unknown"


@dataclasses.dataclass(frozen=True)
class Posterior:
    """The result of ``inferax.sample``.

    Attributes:
      draws: each site in its own (constrained) space, shape ``(chain, draw, ...)``.
      stats: per-draw sampler statistics with ArviZ's names (``acceptance_rate``,
        ``diverging``, ``energy``, ``lp``, ``step_size``, ``n_steps``, ``tree_depth``,
        ``reached_max_treedepth``), where the kernel has them; shape ``(chain, draw)``.
      timing: seconds spent compiling, in warmup, and sampling.
      observed_data: the model's observed values, by site.
      sampler: the kernel's configuration.
      num_warmup: warmup steps per chain.
      tuned: the parameters warmup tuned, per chain (step size, inverse mass matrix).
      log_likelihood: pointwise log likelihood by observed site, shape
        ``(chain, draw, *site_shape)``: one value per observation, for ``az.loo`` and
        ``az.compare``. ``inferax.sample`` fills it for NumPyro models.
      constant_data: the model's array arguments other than the observations.
      posterior_predictive: replicated observations by site, ``(chain, draw, ...)``
        (``inferax.predictive``).
      prior: prior draws of the latent and deterministic sites, ``(1, draw, ...)``
        (``inferax.prior_predictive``).
      prior_predictive: prior draws of the observed sites, ``(1, draw, ...)``.
      dims: dim names by site (without ``chain`` and ``draw``), from the model's plates.
      coords: coordinate values by dim name.
      evidence_stats: for a method that estimates the evidence (tempered SMC), the per-chain
        (per-run) ``log_evidence``, shape ``(chain,)``, and its per-stage records
        (``temperature``, ``ess``, ...), shape ``(chain, stage)``; the DataTree's
        ``evidence_stats`` group.
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    timing: dict[str, float]
    observed_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    sampler: str = ""
    num_warmup: int = 0
    tuned: dict[str, Any] = dataclasses.field(default_factory=dict)
    log_likelihood: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    constant_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    posterior_predictive: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    prior: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    prior_predictive: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    dims: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    coords: dict[str, Any] = dataclasses.field(default_factory=dict)
    evidence_stats: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def log_evidence(self) -> float | None:
        """The log evidence ``log p(data)``: the mean over chains (independent runs) of each
        run's estimate; ``None`` when the method gives none."""
        if "log_evidence" not in self.evidence_stats:
            return None
        return float(np.mean(self.evidence_stats["log_evidence"]))

    @property
    def log_evidence_mcse(self) -> float | None:
        """The Monte Carlo standard error of ``log_evidence``: the runs' standard deviation
        over the square root of their number (NaN with one run)."""
        if "log_evidence" not in self.evidence_stats:
            return None
        runs = np.asarray(self.evidence_stats["log_evidence"], dtype=float)
        if runs.size < 2:
            return float("nan")
        return float(np.std(runs, ddof=1) / np.sqrt(runs.size))

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[1]

    def to_datatree(
        self,
        *,
        coords: dict[str, Any] | None = None,
        dims: dict[str, list[str]] | None = None,
    ) -> xr.DataTree:
        """The run as an ``xarray.DataTree`` in ArviZ 1.x's layout, dims ``(chain, draw,
        ...)``: groups ``posterior`` and ``sample_stats``, and where there are any,
        ``log_likelihood``, ``posterior_predictive``, ``prior``, ``prior_predictive``,
        ``observed_data`` and ``constant_data``. Plate names are dim names; ``az.loo``,
        ``az.compare`` and ``az.plot_ppc`` read the tree as it is.

        Args:
          coords: coordinate values by dim name, over those the posterior holds.
          dims: dim names by variable (without ``chain`` and ``draw``), over the plates'.

        Returns:
          An ``xarray.DataTree``.
        """
        groups = {
            "posterior": self.draws,
            "sample_stats": self.stats,
            "log_likelihood": self.log_likelihood,
            "posterior_predictive": self.posterior_predictive,
            "prior": self.prior,
            "prior_predictive": self.prior_predictive,
            "observed_data": self.observed_data,
            "constant_data": self.constant_data,
        }
        groups = {name: values for name, values in groups.items() if values}
        all_dims = {**self.dims, **(dims or {})}
        all_coords = {**self.coords, **(coords or {})}
        attrs = {
            "inference_library": "inferax",
            "inference_library_version": _inferax_version(),
            "sampler": self.sampler,
            "tuning_steps": self.num_warmup,
            **{_TIMING_ATTRS[name]: seconds for name, seconds in self.timing.items()},
        }
        if self.evidence_stats:
            attrs["log_evidence"] = self.log_evidence
            attrs["log_evidence_mcse"] = self.log_evidence_mcse
        tree = arviz_base.from_dict(
            groups,
            attrs={"posterior": attrs, "sample_stats": attrs},
            dims=_dims_that_fit(groups, all_dims),
            coords=all_coords,
        )
        if self.evidence_stats:
            tree["evidence_stats"] = xr.Dataset(
                {
                    name: (("chain", "stage")[: np.ndim(values)], np.asarray(values))
                    for name, values in self.evidence_stats.items()
                }
            )
        return tree

    def fault_counts(self) -> dict[str, int]:
        """Numerical trouble in the run: divergent transitions, and draws with a non-finite
        value in any site."""
        nonfinite = np.zeros((self.num_chains, self.num_draws), dtype=bool)
        for values in self.draws.values():
            values = np.asarray(values)
            if np.issubdtype(values.dtype, np.floating):
                flat = values.reshape(self.num_chains, self.num_draws, -1)
                nonfinite |= ~np.isfinite(flat).all(axis=-1)
        diverging = self.stats.get("diverging")
        return {
            "diverging": int(np.sum(diverging)) if diverging is not None else 0,
            "nonfinite_draws": int(nonfinite.sum()),
        }

    def stuck_chains(self) -> list[int]:
        """The chains that did not move after warmup (see ``inferax.posterior.stuck_chains``)."""
        return stuck_chains(self.stats, self.draws)

    def summary(self, **kwargs):
        """ArviZ's summary table: mean, sd, HDI, mcse, ess_bulk, ess_tail, r_hat.

        Keyword arguments go to ``arviz_stats.summary``; the interval is an HDI unless
        ``ci_kind`` says otherwise. The table's ``attrs`` carry ``fault_counts()``, and a
        warning names them when there are any.
        """
        kwargs.setdefault("ci_kind", "hdi")
        table = arviz_stats.summary(self.to_datatree(), **kwargs)
        faults = self.fault_counts()
        table.attrs.update(faults)
        if any(faults.values()):
            warnings.warn(
                f"{faults['diverging']} divergent transitions and "
                f"{faults['nonfinite_draws']} draws with non-finite values",
                stacklevel=2,
            )
        return table

    def save(self, path: str | os.PathLike) -> None:
        """Writes the DataTree to a netCDF4 file, atomically (a temporary file, fsync,
        rename); ``inferax.load`` reads it back."""
        tree = self.to_datatree()
        write_atomically(
            pathlib.Path(path), lambda temporary: tree.to_netcdf(temporary, engine="h5netcdf")
        )


def load(path: str | os.PathLike) -> Posterior:
    """Reads a ``Posterior`` written by ``Posterior.save``.

    Args:
      path: the netCDF file.

    Returns:
      The ``Posterior``, with its draws, statistics, observed data and timing; the tuned
      parameters are not saved.
    """
    # Read everything, then close the file: an open HDF5 file stays locked against writers.
    with xr.open_datatree(path, engine="h5netcdf") as opened:
        tree = opened.load()
    attrs = tree["posterior"].attrs

    def arrays(group: str) -> dict[str, np.ndarray]:
        if group not in tree.children:
            return {}
        return {name: np.asarray(var) for name, var in tree[group].dataset.data_vars.items()}

    dims, coords = {}, {}
    for group in tree.children.values():
        if group.name == "evidence_stats":
            continue
        sample_dims = {"chain", "draw"}
        for name, var in group.dataset.data_vars.items():
            named = [dim for dim in var.dims if dim not in sample_dims]
            if named:
                dims.setdefault(name, named)
        for name, coord in group.dataset.coords.items():
            if name not in sample_dims:
                coords.setdefault(name, np.asarray(coord))
    return Posterior(
        draws=arrays("posterior"),
        stats=arrays("sample_stats"),
        timing={name: float(attrs.get(key, np.nan)) for name, key in _TIMING_ATTRS.items()},
        observed_data=arrays("observed_data"),
        sampler=str(attrs.get("sampler", "")),
        num_warmup=int(attrs.get("tuning_steps", 0)),
        log_likelihood=arrays("log_likelihood"),
        constant_data=arrays("constant_data"),
        posterior_predictive=arrays("posterior_predictive"),
        prior=arrays("prior"),
        prior_predictive=arrays("prior_predictive"),
        dims=dims,
        coords=coords,
        evidence_stats=arrays("evidence_stats"),
    )


def _dims_that_fit(groups: dict, dims: dict[str, list[str]]) -> dict[str, list[str]]:
    """The named dims of each variable, cut to the axes it has: a plate dim names a batch
    axis, and a site whose value has fewer axes than its plates (a plate that broadcasts)
    keeps ArviZ's default names rather than wrong ones."""
    fitted = {}
    for group, values in groups.items():
        leading = 0 if group in ("observed_data", "constant_data") else 2
        for name, value in values.items():
            if name not in dims:
                continue
            names = list(dims[name])
            if len(names) <= np.ndim(value) - leading:
                fitted[name] = names
    return fitted
