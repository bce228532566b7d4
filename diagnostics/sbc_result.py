"""The result of simulation-based calibration: ranks, their uniformity tests, and the
ECDF-difference plot with simultaneous confidence bands."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, final

import arviz_base
import numpy as np
import scipy.stats
import xarray as xr
from arviz_stats.ecdf_utils import ecdf_pit

BAND_SIMULATIONS = 1000
"""Uniform samples drawn to calibrate the simultaneous band (arviz-stats' simulation method)."""


@final
@dataclasses.dataclass(frozen=True)
class SBCResult:
    """The ranks of a simulation-based calibration and their uniformity tests.

    Attributes:
      ranks: by site, the rank of the true value among the ``num_draws`` posterior draws,
        shape ``(simulation, *site_shape)``, integers in ``0..num_draws``.
      true_values: by site, the prior draw each simulation was made from.
      num_draws: ``L``, the posterior draws each rank is taken among.
      p_values: by site, the chi-square test of uniform ranks over ``num_bins`` bins, one
        p-value per scalar component, shape ``site_shape``.
      num_bins: the bins of the chi-square test.
      fit_stats: by simulation, numerical trouble in its fit: ``diverging`` transitions and
        ``nonfinite_draws``.
    """

    ranks: dict[str, np.ndarray]
    true_values: dict[str, np.ndarray]
    num_draws: int
    p_values: dict[str, np.ndarray]
    num_bins: int
    fit_stats: dict[str, np.ndarray]

    @property
    def num_simulations(self) -> int:
        return next(iter(self.ranks.values())).shape[0]

    def min_p_value(self) -> float:
        """The smallest p-value over every scalar component of every site."""
        return float(min(np.min(values) for values in self.p_values.values()))

    def rejects(self, alpha: float = 0.01) -> bool:
        """Whether uniformity is rejected at family-wise level ``alpha``: some component's
        p-value is below ``alpha`` over the number of components (Bonferroni)."""
        count = sum(np.size(values) for values in self.p_values.values())
        return self.min_p_value() < alpha / count

    def pit(self) -> dict[str, np.ndarray]:
        """The ranks as PIT values in (0, 1): ``(rank + 1/2) / (L + 1)``."""
        return {name: (r + 0.5) / (self.num_draws + 1) for name, r in self.ranks.items()}

    def to_datatree(self) -> xr.DataTree:
        """The result as a DataTree: ``prior_sbc`` holds the PIT values with dims ``(chain,
        draw, ...)`` (one chain, a draw per simulation), which ``arviz_plots.plot_ecdf_pit``
        reads as it is; ``ranks`` and ``true_values`` have dims ``(simulation, ...)``;
        ``p_values`` the tests. The attrs hold ``num_draws`` and ``num_bins``."""
        pit = {name: values[None] for name, values in self.pit().items()}
        tree = arviz_base.from_dict({"prior_sbc": pit})
        attrs = {"num_draws": self.num_draws, "num_bins": self.num_bins}

        def per_simulation(arrays):
            return xr.Dataset(
                {
                    name: (
                        ("simulation", *(f"{name}_dim_{i}" for i in range(v.ndim - 1))),
                        np.asarray(v),
                    )
                    for name, v in arrays.items()
                },
                attrs=attrs,
            )

        tree["ranks"] = per_simulation(self.ranks)
        tree["true_values"] = per_simulation(self.true_values)
        tree["fit_stats"] = per_simulation(self.fit_stats)
        tree["p_values"] = xr.Dataset(
            {
                name: (tuple(f"{name}_dim_{i}" for i in range(np.ndim(v))), np.asarray(v))
                for name, v in self.p_values.items()
            },
            attrs=attrs,
        )
        tree.attrs.update(attrs)
        return tree

    def outside_band(self, prob: float = 0.99) -> dict[str, np.ndarray]:
        """By site and component: whether the PIT ECDF leaves the ``prob`` simultaneous
        band anywhere (the graphical uniformity test of Säilynoja et al.)."""
        return {
            name: np.array([ecdf_difference(u, prob).outside for u in _components(pit)]).reshape(
                pit.shape[1:]
            )
            for name, pit in self.pit().items()
        }

    def plot(self, prob: float = 0.99, var_names: list[str] | None = None):
        """The ECDF-difference plot of the PIT values with ``prob`` simultaneous confidence
        bands (``plot_ecdf_difference``); returns the matplotlib figure."""
        return plot_ecdf_difference(self.to_datatree(), prob=prob, var_names=var_names)


def rank_uniformity_p_values(ranks: np.ndarray, num_draws: int, num_bins: int) -> np.ndarray:
    """Chi-square tests of ranks uniform on ``0..num_draws``, one per trailing component.

    Ranks are binned into ``num_bins`` bins of (nearly) equal width; each bin's expected
    count is exact, the number of rank values it holds over ``num_draws + 1``.

    Args:
      ranks: shape ``(simulation, ...)``.
      num_draws: ``L``.
      num_bins: bins, at most ``L + 1``.

    Returns:
      The p-values, shape ``ranks.shape[1:]``.
    """
    ranks = np.asarray(ranks)
    bin_of = np.arange(num_draws + 1) * num_bins // (num_draws + 1)
    share = np.bincount(bin_of, minlength=num_bins) / (num_draws + 1)
    flat = ranks.reshape(ranks.shape[0], -1)
    p_values = np.empty(flat.shape[1])
    for j in range(flat.shape[1]):
        counts = np.bincount(bin_of[flat[:, j]], minlength=num_bins)
        p_values[j] = scipy.stats.chisquare(counts, share * flat.shape[0]).pvalue
    return p_values.reshape(ranks.shape[1:])


class ECDFDifference(NamedTuple):
    """The ECDF of PIT values minus the uniform CDF, at ``x``, with the simultaneous band."""

    x: np.ndarray
    difference: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    outside: bool


def ecdf_difference(pit: np.ndarray, prob: float = 0.99) -> ECDFDifference:
    """The ECDF-difference of ``pit`` values with a ``prob`` simultaneous confidence band.

    The band is pointwise binomial at a level raised until uniform samples of the same size
    stay inside it everywhere with probability ``prob`` (arviz-stats' ``ecdf_pit``, the
    simulation method of Säilynoja, Bürkner, Vehtari 2022).

    Args:
      pit: PIT values in (0, 1), one per simulation.
      prob: the band's simultaneous coverage.

    Returns:
      An ``ECDFDifference``.
    """
    pit = np.asarray(pit, dtype=float).ravel()
    rng = np.random.default_rng(0)  # the band's calibration, not the data: fixed.
    x, ecdf, lower, upper = ecdf_pit(pit, prob, BAND_SIMULATIONS, rng=rng)
    outside = bool(np.any((ecdf < lower) | (ecdf > upper)))
    return ECDFDifference(x, ecdf - x, lower - x, upper - x, outside)


def _components(values: np.ndarray):
    flat = np.asarray(values).reshape(values.shape[0], -1)
    return [flat[:, j] for j in range(flat.shape[1])]


def plot_ecdf_difference(tree: xr.DataTree, prob: float = 0.99, var_names=None):
    """The ECDF-difference plot of an SBC DataTree's ``prior_sbc`` PIT values: one panel per
    site, one line per scalar component, and the grey ``prob`` simultaneous band.

    arviz-plots has this plot (``plot_ecdf_pit(method="envelope")``), but the installed
    release fails on it; this draws the same quantities from arviz-stats with matplotlib.

    Args:
      tree: ``SBCResult.to_datatree()``.
      prob: the band's simultaneous coverage.
      var_names: the sites to draw; by default all.

    Returns:
      The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    dataset = tree["prior_sbc"].dataset
    names = list(dataset.data_vars) if var_names is None else list(var_names)
    fig, axes = plt.subplots(
        1, len(names), figsize=(3.2 * len(names), 3), squeeze=False, sharey=True
    )
    for ax, name in zip(axes[0], names, strict=True):
        values = np.asarray(dataset[name]).reshape(-1, *dataset[name].shape[2:])
        components = _components(values)
        band = ecdf_difference(components[0], prob)
        ax.fill_between(band.x, band.lower, band.upper, color="0.85", step="post", lw=0)
        for component in components:
            line = ecdf_difference(component, prob)
            ax.step(line.x, line.difference, where="post", lw=1, alpha=0.8)
        ax.axhline(0.0, color="0.4", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("PIT")
    axes[0][0].set_ylabel("ECDF difference")
    fig.tight_layout()
    return fig
