"""MRI image-quality metrics in the fastMRI evaluation convention.

The fastMRI challenge scores a reconstruction against the fully sampled
reference *volume* (all slices of one case at once):

* PSNR uses ``data_range = target.max()`` taken over the whole volume and one
  mean squared error over the whole volume;
* SSIM is the mean over slices of the 2-D SSIM (7 x 7 uniform window, the
  scikit-image default), again with the volume maximum as data range;
* NMSE is ``||target - prediction||^2 / ||target||^2`` over the volume.

Inputs are magnitude images.  Complex arrays are rejected rather than silently
converted, so the caller decides how a complex reconstruction becomes a
magnitude (``abs`` of the coil-combined image, RSS, ...).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["MRI_CONVENTION", "fastmri_metrics"]

MRI_CONVENTION = (
    "MRI metrics follow the fastMRI convention on magnitude volumes: "
    "PSNR and NMSE over the whole volume and SSIM as the mean of 2-D SSIM "
    "(7×7 uniform window) over slices, both with data range = maximum of the "
    "reference volume."
)


def _validated_pair(target, prediction, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(target, prediction)`` as float64 arrays after the common checks.

    Raises ``ValueError`` for complex input or mismatched shapes.  ``what``
    names the metric family in the error messages.
    """
    target = np.asarray(target)
    prediction = np.asarray(prediction)
    for name, arr in (("target", target), ("prediction", prediction)):
        if np.iscomplexobj(arr):
            raise ValueError(
                f"{what}: {name} is complex ({arr.dtype}); pass real-valued "
                "magnitude images (e.g. np.abs of the reconstruction)"
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"{what}: {name} has non-numeric dtype {arr.dtype}")
    if target.shape != prediction.shape:
        raise ValueError(
            f"{what}: shape mismatch, target {target.shape} vs prediction {prediction.shape}"
        )
    return target.astype(np.float64, copy=False), prediction.astype(np.float64, copy=False)


def _psnr(target: np.ndarray, prediction: np.ndarray, data_range: float) -> float:
    """PSNR = 10 log10(data_range² / MSE) over the whole array, as skimage's
    ``peak_signal_noise_ratio`` (equal to it: tests/unit/test_crosscheck_fastmri.py); written out
    because importing that function loads scipy.stats, which costs each workflow job ~0.5 s. An
    exact match returns ``inf`` without a divide warning."""
    if np.array_equal(target, prediction):
        return float("inf")
    mse = float(np.mean((target - prediction) ** 2))
    return float(10.0 * np.log10(data_range ** 2 / mse))


def _mean_slice_ssim(target: np.ndarray, prediction: np.ndarray, data_range: float) -> float:
    """Mean over axis 0 of the 2-D skimage SSIM (default 7 x 7 uniform window)."""
    rows, cols = target.shape[1:]
    if min(rows, cols) < 7:
        raise ValueError(
            f"SSIM needs 2-D slices of at least 7 x 7 pixels (default window), got {rows} x {cols}"
        )
    values = [
        structural_similarity(t, p, data_range=data_range)
        for t, p in zip(target, prediction, strict=True)
    ]
    return float(np.mean(values))


def fastmri_metrics(target, prediction) -> dict[str, float]:
    """PSNR, SSIM and NMSE of one case in the fastMRI convention.

    Parameters
    ----------
    target, prediction:
        Real magnitude volumes of shape ``(slices, H, W)``; a 2-D ``(H, W)``
        image is treated as a single slice.

    Returns
    -------
    dict with float entries ``psnr`` (dB), ``ssim`` and ``nmse``.

    Notes
    -----
    ``data_range`` for both PSNR and SSIM is ``target.max()`` over the *whole
    volume*, not per slice.  PSNR and NMSE are computed from one error over the
    whole volume; SSIM is averaged over slices.  A perfect prediction gives
    ``psnr = inf``, ``ssim = 1`` and ``nmse = 0``.

    Raises
    ------
    ValueError
        for complex input, mismatched shapes, arrays that are not 2-D or 3-D,
        slices smaller than the 7 x 7 SSIM window, or a target whose maximum is
        not positive (the data range would be undefined).
    """
    gt, pred = _validated_pair(target, prediction, what="fastmri_metrics")
    if gt.ndim == 2:
        gt, pred = gt[None], pred[None]
    if gt.ndim != 3:
        raise ValueError(
            f"fastmri_metrics expects (slices, H, W) or (H, W) arrays, got shape {gt.shape}"
        )
    if gt.size == 0:
        raise ValueError("fastmri_metrics: empty volume")

    max_val = float(gt.max())
    if not max_val > 0:
        raise ValueError(
            f"fastmri_metrics: target maximum is {max_val}; a magnitude reference must "
            "have a positive maximum to define the data range"
        )

    nmse = float(np.sum((gt - pred) ** 2) / np.sum(gt**2))
    return {
        "psnr": _psnr(gt, pred, max_val),
        "ssim": _mean_slice_ssim(gt, pred, max_val),
        "nmse": nmse,
    }
