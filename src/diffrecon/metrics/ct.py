"""CT image-quality metrics in the DiffusionBlend / TPDM convention.

CT volumes are normalised so that the range of interest maps to ``[0, 1]``.
Both reference and reconstruction are clipped to ``[0, 1]`` and scored with a
fixed ``data_range = 1``.  The 3-D reconstruction is inspected in three
orthogonal views; a volume of shape ``(D, H, W)`` holds

* axial slices along axis 0 (``vol[k]``, shape ``(H, W)``),
* coronal slices along axis 1 (``vol[:, k]``, shape ``(D, W)``),
* sagittal slices along axis 2 (``vol[:, :, k]``, shape ``(D, H)``).
"""

from __future__ import annotations

import numpy as np

from .mri import _mean_slice_ssim, _psnr, _validated_pair

__all__ = ["CT_CONVENTION", "VIEWS", "ct_view_metrics"]

VIEWS: tuple[str, str, str] = ("axial", "coronal", "sagittal")

#: axis of a (D, H, W) volume along which each view's 2-D slices are stacked
VIEW_AXIS: dict[str, int] = {"axial": 0, "coronal": 1, "sagittal": 2}

CT_CONVENTION = (
    "CT metrics follow the DiffusionBlend/TPDM convention: volumes clipped to [0, 1] "
    "with data range 1, PSNR from one MSE over the whole volume (hence the same in "
    "every view) and SSIM as the mean of 2-D SSIM (7×7 uniform window) over the "
    "axial, coronal or sagittal slices."
)


def view_stack(volume: np.ndarray, view: str) -> np.ndarray:
    """Return the 2-D slices of ``view`` stacked along axis 0 (a view of ``volume``)."""
    try:
        axis = VIEW_AXIS[view]
    except KeyError:
        raise ValueError(f"unknown view {view!r}; expected one of {VIEWS}") from None
    return np.moveaxis(volume, axis, 0)


def ct_view_metrics(target, prediction) -> dict[str, dict[str, float]]:
    """PSNR and SSIM of one CT volume in each of the three orthogonal views.

    Parameters
    ----------
    target, prediction:
        Real volumes of shape ``(D, H, W)`` in normalised units.  Both are
        clipped to ``[0, 1]`` before scoring (values outside the window count
        as the window edge), and ``data_range = 1``.

    Returns
    -------
    ``{view: {"psnr": float, "ssim": float}}`` for ``view`` in :data:`VIEWS`.

    Notes
    -----
    PSNR is computed from a single mean squared error over the whole clipped
    volume, so it is **identical for all three views** (re-slicing does not
    change the set of voxels).  Only SSIM differs per view: it is the mean of
    the 2-D SSIM (scikit-image default 7 x 7 uniform window) over that view's
    slices.  Every volume dimension must therefore be at least 7.

    Raises
    ------
    ValueError
        for complex input, mismatched shapes, non-3-D arrays or a dimension
        smaller than the SSIM window.
    """
    gt, pred = _validated_pair(target, prediction, what="ct_view_metrics")
    if gt.ndim != 3:
        raise ValueError(f"ct_view_metrics expects (D, H, W) volumes, got shape {gt.shape}")
    if min(gt.shape) < 7:
        raise ValueError(
            f"ct_view_metrics: every dimension must be >= 7 for the 7 x 7 SSIM window "
            f"in all three views, got shape {gt.shape}"
        )
    gt = np.clip(gt, 0.0, 1.0)
    pred = np.clip(pred, 0.0, 1.0)

    psnr = _psnr(gt, pred, 1.0)
    return {
        view: {
            "psnr": psnr,
            "ssim": _mean_slice_ssim(view_stack(gt, view), view_stack(pred, view), 1.0),
        }
        for view in VIEWS
    }
