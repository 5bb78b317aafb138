"""diffrecon.metrics: PSNR / SSIM / NMSE in the fastMRI (MRI) and TPDM (CT) conventions.

Every table cell of the pipeline (one modality, dataset, setting and method)
writes a per-case CSV, ``metrics.csv``, whose rows come from :func:`case_rows`
and whose columns are :data:`CASE_COLUMNS`::

    modality, dataset, setting, method, case, view, psnr, ssim, nmse

* MRI: one row per case, ``view = "image"``, with ``nmse`` filled in;
* CT: one row per case and view (``axial``, ``coronal``, ``sagittal``), with
  ``nmse = NaN``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .ct import CT_CONVENTION, VIEWS, ct_view_metrics
from .mri import MRI_CONVENTION, fastmri_metrics

__all__ = [
    "CASE_COLUMNS",
    "CT_CONVENTION",
    "METRIC_COLUMNS",
    "MODALITIES",
    "MRI_CONVENTION",
    "MRI_VIEW",
    "VIEWS",
    "case_rows",
    "ct_view_metrics",
    "fastmri_metrics",
]

#: metric columns of the per-case CSV, in order
METRIC_COLUMNS: tuple[str, str, str] = ("psnr", "ssim", "nmse")

#: identifying columns of the per-case CSV, in order
KEY_COLUMNS: tuple[str, ...] = ("modality", "dataset", "setting", "method", "case", "view")

#: all columns of the per-case CSV (``metrics.csv``), in order
CASE_COLUMNS: tuple[str, ...] = KEY_COLUMNS + METRIC_COLUMNS

#: the single "view" name used for (2-D slice-stack) MRI results
MRI_VIEW = "image"

MODALITIES: tuple[str, str] = ("mri", "ct")


def case_rows(
    modality: str,
    dataset: str,
    setting: str,
    method: str,
    case: str,
    metrics_by_view: Mapping,
) -> list[dict]:
    """Rows of the per-case CSV for one case of one table cell.

    Parameters
    ----------
    modality:
        ``"mri"`` or ``"ct"`` (case-insensitive; stored lower-case).
    dataset, setting, method, case:
        identifiers, stored as strings.
    metrics_by_view:
        either ``{view: {"psnr": .., "ssim": .., ["nmse": ..]}}`` (the output of
        :func:`ct_view_metrics`) or a flat ``{"psnr": .., "ssim": .., ...}``
        (the output of :func:`fastmri_metrics`), which is taken as the single
        view ``"image"``.

    Returns
    -------
    list of dicts keyed by :data:`CASE_COLUMNS`.  MRI gives one row with
    ``view = "image"``; CT gives one row per view in :data:`VIEWS` order
    (other view names follow in the given order).  A metric missing from the
    input, and ``nmse`` for every CT row, is ``NaN``.
    """
    modality = str(modality).lower()
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if not isinstance(metrics_by_view, Mapping) or not metrics_by_view:
        raise ValueError("metrics_by_view must be a non-empty mapping")

    if any(key in metrics_by_view for key in METRIC_COLUMNS):
        metrics_by_view = {MRI_VIEW: metrics_by_view}

    if modality == "mri":
        if set(metrics_by_view) != {MRI_VIEW}:
            raise ValueError(
                f"MRI results have the single view {MRI_VIEW!r}, got views {list(metrics_by_view)}"
            )
        views = [MRI_VIEW]
    else:
        if MRI_VIEW in metrics_by_view:
            raise ValueError(
                f"CT results need per-view metrics {VIEWS}, got a single {MRI_VIEW!r} entry"
            )
        views = [v for v in VIEWS if v in metrics_by_view]
        views += [v for v in metrics_by_view if v not in VIEWS]

    rows = []
    for view in views:
        values = metrics_by_view[view]
        row = {
            "modality": modality,
            "dataset": str(dataset),
            "setting": str(setting),
            "method": str(method),
            "case": str(case),
            "view": str(view),
        }
        for metric in METRIC_COLUMNS:
            if modality == "ct" and metric == "nmse":
                row[metric] = math.nan
            else:
                row[metric] = float(values.get(metric, math.nan))
        rows.append(row)
    return rows
