"""The summary table, one row per scalar quantity, with Stan's tail ESS."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import arviz_stats
import numpy as np
import pandas as pd
import xarray as xr

from inferax.diagnostics.checks import DEFAULT_THRESHOLDS, as_datatree, element_label


def summary(dt, *, ess_tail_prob: tuple[float, float] | None = None) -> pd.DataFrame:
    """ArviZ's summary table, with tail ESS at the quantiles that ``check`` uses.

    Columns: mean, sd, the 89% HDI (``hdi89_lb``, ``hdi89_ub``), ``mcse_mean``,
    ``mcse_sd``, ``ess_bulk``, ``ess_tail``, ``r_hat`` and ``n_nonfinite`` (how many draws
    are NaN or infinite: any is an error, which ``check`` reports), one row per scalar quantity
    (``theta[3]``), unrounded. ``arviz_stats.summary`` computes everything but the tail ESS,
    which ``arviz_stats.ess`` computes at ``ess_tail_prob`` (Stan's 5%/95% by default; ArviZ's
    own summary uses 11%/89%).

    Args:
      dt: a DataTree with a posterior group, or a ``Posterior``.
      ess_tail_prob: the quantiles for tail ESS.

    Returns:
      A ``pandas.DataFrame`` indexed by quantity.

    Examples:
      >>> import numpy as np, arviz_base
      >>> from inferax.diagnostics import summary
      >>> draws = np.zeros((2, 50, 3)) + np.arange(50)[:, None]
      >>> dt = arviz_base.from_dict({"posterior": {"x": draws}})
      >>> list(summary(dt).index)
      ['x[0]', 'x[1]', 'x[2]']
    """
    if ess_tail_prob is None:
        ess_tail_prob = DEFAULT_THRESHOLDS["ess_tail_prob"]
    posterior = as_datatree(dt)["posterior"].dataset
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        table = arviz_stats.summary(posterior, ci_kind="hdi", round_to="none")
        tail = arviz_stats.ess(posterior, method="tail", prob=tuple(ess_tail_prob))
    table = pd.DataFrame(table).astype(float)
    values = {label: float(value) for label, value in flat_elements(tail)}
    table["ess_tail"] = [values.get(label, np.nan) for label in table.index]
    nonfinite = {
        label: int((~np.isfinite(element)).sum())
        for label, element in flat_elements(posterior)
        if np.issubdtype(element.dtype, np.number)
    }
    table["n_nonfinite"] = [nonfinite.get(label, 0) for label in table.index]
    return table


def flat_elements(ds: xr.Dataset, limit: int | None = None) -> Iterator[tuple[str, xr.DataArray]]:
    """``(label, values)`` for each scalar quantity of ``ds``, in order, ``theta[3]`` style.

    ``values`` keeps the sample dims (``chain``, ``draw``) where ``ds`` has them.
    """
    count = 0
    for name, da in ds.data_vars.items():
        dims = [d for d in da.dims if d not in ("chain", "draw")]
        shape = [da.sizes[d] for d in dims]
        for index in np.ndindex(*shape):
            if limit is not None and count >= limit:
                return
            element = da.isel(dict(zip(dims, index, strict=True)), drop=True)
            yield element_label(da.rename(name), index), element
            count += 1


def num_elements(ds: xr.Dataset) -> int:
    """The number of scalar quantities in ``ds``."""
    return sum(
        int(np.prod([da.sizes[d] for d in da.dims if d not in ("chain", "draw")]))
        for da in ds.data_vars.values()
    )
