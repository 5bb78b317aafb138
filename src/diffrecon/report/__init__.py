"""diffrecon.report: per-cell summaries, paper-shaped tables and figures.

Both halves load on first use, so that a job which draws a figure does not import pandas and
a job which writes a table does not import matplotlib: ``diffrecon.report.summarize`` (or
``from diffrecon.report.tables import summarize``) imports pandas, ``diffrecon.report.comparison_figure``
(or ``from diffrecon.report.figures import ...``) imports matplotlib.
"""

from __future__ import annotations

_TABLES = ("GROUP_COLUMNS", "MISSING", "SUMMARY_COLUMNS", "TABLE_METRICS", "paper_table", "paper_table_values",
           "summarize", "write_table")
_FIGURES = ("comparison_figure", "ct_views_figure", "uncertainty_figure", "save_preview")

__all__ = [*_TABLES, *_FIGURES]


def __getattr__(name: str):
    if name in _TABLES:
        from . import tables

        return getattr(tables, name)
    if name in _FIGURES:
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
