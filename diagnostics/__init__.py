"""Diagnostics on ArviZ DataTrees: checks with thresholds and the HTML report. The DataTree
itself comes from ``Posterior.to_datatree``; every statistic comes from ``arviz_stats``."""

from inferax.diagnostics.checks import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS
from inferax.diagnostics.checks import Finding as Finding
from inferax.diagnostics.checks import check as check
from inferax.diagnostics.checks import khat as khat
from inferax.diagnostics.checks import loo as loo
from inferax.diagnostics.html_report import report as report
from inferax.diagnostics.sbc import SBCResult as SBCResult
from inferax.diagnostics.sbc import sbc as sbc
from inferax.diagnostics.summary_table import summary as summary

__all__ = [
    "DEFAULT_THRESHOLDS",
    "SBCResult",
    "Finding",
    "check",
    "khat",
    "loo",
    "report",
    "sbc",
    "summary",
]
