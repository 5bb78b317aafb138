"""diffrecon.report: per-cell summaries, paper-shaped tables and figures.

Tables (pandas only) are imported here.  The figure functions need matplotlib
and are loaded lazily: ``from diffrecon.report.figures import comparison_figure``
(or ``diffrecon.report.comparison_figure``) imports matplotlib on first use.
"""

from __future__ import annotations

from .tables import (
    GROUP_COLUMNS,
    MISSING,
    SUMMARY_COLUMNS,
    TABLE_METRICS,
    paper_table,
    paper_table_values,
    summarize,
    write_table,
)
from .tables import __all__ as _TABLES

_FIGURES = ("comparison_figure", "ct_views_figure", "uncertainty_figure", "save_preview")

__all__ = [*_TABLES, *_FIGURES]


def __getattr__(name: str):
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
