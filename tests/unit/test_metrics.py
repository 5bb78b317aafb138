"""Metrics in the fastMRI (MRI) and DiffusionBlend/TPDM (CT) conventions.

Expected values are recomputed here straight from numpy / scikit-image, never
copied from the implementation's output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from diffrecon.metrics import (
    CASE_COLUMNS,
    CT_CONVENTION,
    METRIC_COLUMNS,
    MRI_CONVENTION,
    VIEWS,
    case_rows,
    ct_view_metrics,
    fastmri_metrics,
)


def _ramp_volume(slices=4, rows=24, cols=20):
    """Smooth volume whose slices have clearly different maxima (slice k peaks at k + 1)."""
    r = np.linspace(0.0, 1.0, rows)[:, None]
    c = np.linspace(0.0, 1.0, cols)[None, :]
    base = 0.2 + 0.5 * r + 0.3 * c**2  # peaks at 1.0 in the last pixel
    return np.stack([(k + 1) * base for k in range(slices)])


@pytest.fixture
def mri_pair():
    target = _ramp_volume()
    rng = np.random.default_rng(1234)
    prediction = target + 0.1 * rng.standard_normal(target.shape)
    return target, prediction


# ----------------------------------------------------------------------------- MRI


def test_fastmri_matches_direct_computation(mri_pair):
    target, prediction = mri_pair
    got = fastmri_metrics(target, prediction)

    vol_max = target.max()
    assert vol_max == pytest.approx(4.0)
    mse = np.mean((target - prediction) ** 2)
    psnr = 10.0 * np.log10(vol_max**2 / mse)
    ssim = np.mean(
        [structural_similarity(t, p, data_range=vol_max) for t, p in zip(target, prediction)]
    )
    nmse = np.sum((target - prediction) ** 2) / np.sum(target**2)

    assert set(got) == {"psnr", "ssim", "nmse"}
    assert got["psnr"] == pytest.approx(psnr, rel=1e-10)
    assert got["ssim"] == pytest.approx(ssim, rel=1e-10)
    assert got["nmse"] == pytest.approx(nmse, rel=1e-10)
    assert all(isinstance(v, float) for v in got.values())


def test_fastmri_uses_volume_max_not_slice_max(mri_pair):
    target, prediction = mri_pair
    got = fastmri_metrics(target, prediction)

    # what a per-slice data_range implementation would report
    slice_ssim = np.mean(
        [structural_similarity(t, p, data_range=t.max()) for t, p in zip(target, prediction)]
    )
    slice_psnr = np.mean(
        [10 * np.log10(t.max() ** 2 / np.mean((t - p) ** 2)) for t, p in zip(target, prediction)]
    )
    # the fixture is built so that the two conventions differ clearly ...
    assert abs(slice_ssim - got["ssim"]) > 1e-3
    assert abs(slice_psnr - got["psnr"]) > 0.5
    # ... and the data range of the SSIM is the volume maximum (4.0)
    vol_ssim = np.mean(
        [structural_similarity(t, p, data_range=4.0) for t, p in zip(target, prediction)]
    )
    assert got["ssim"] == pytest.approx(vol_ssim, rel=1e-10)


def test_fastmri_nmse_and_psnr_by_hand():
    target = np.ones((2, 8, 8))
    prediction = np.full((2, 8, 8), 0.9)
    got = fastmri_metrics(target, prediction)
    # every voxel errs by 0.1: ||e||^2 / ||gt||^2 = 0.01, MSE = 0.01, max = 1 -> 20 dB
    assert got["nmse"] == pytest.approx(0.01, rel=1e-12)
    assert got["psnr"] == pytest.approx(20.0, rel=1e-12)


def test_fastmri_perfect_prediction(mri_pair):
    target, _ = mri_pair
    got = fastmri_metrics(target, target.copy())
    assert got["nmse"] == 0.0
    assert got["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert got["psnr"] == math.inf


def test_fastmri_2d_is_one_slice(mri_pair):
    target, prediction = mri_pair
    assert fastmri_metrics(target[2], prediction[2]) == fastmri_metrics(target[2:3], prediction[2:3])


def test_fastmri_rejects_complex():
    x = np.ones((1, 8, 8))
    with pytest.raises(ValueError, match="complex"):
        fastmri_metrics(x.astype(np.complex64), x)
    with pytest.raises(ValueError, match="complex"):
        fastmri_metrics(x, x + 0j)


def test_fastmri_rejects_shape_mismatch():
    with pytest.raises(ValueError) as err:
        fastmri_metrics(np.ones((2, 16, 16)), np.ones((2, 16, 15)))
    assert "(2, 16, 16)" in str(err.value) and "(2, 16, 15)" in str(err.value)


def test_fastmri_rejects_wrong_rank_and_zero_target():
    with pytest.raises(ValueError):
        fastmri_metrics(np.ones((1, 2, 8, 8)), np.ones((1, 2, 8, 8)))
    with pytest.raises(ValueError):
        fastmri_metrics(np.zeros((1, 8, 8)), np.ones((1, 8, 8)))


def test_convention_strings():
    assert "fastMRI" in MRI_CONVENTION
    assert "TPDM" in CT_CONVENTION or "DiffusionBlend" in CT_CONVENTION


# ----------------------------------------------------------------------------- CT


def _ct_volume(shape=(9, 11, 13)):
    """Anisotropic smooth volume in [0, 1] (different structure along each axis)."""
    d, h, w = (np.linspace(0, 1, n) for n in shape)
    vol = (
        0.5
        + 0.2 * np.sin(6 * d)[:, None, None]
        + 0.15 * np.cos(9 * h)[None, :, None] * d[:, None, None]
        + 0.1 * (w**2)[None, None, :]
    )
    return np.clip(vol, 0.0, 1.0)


@pytest.fixture
def ct_pair():
    target = _ct_volume()
    rng = np.random.default_rng(99)
    prediction = target + 0.08 * rng.standard_normal(target.shape)
    prediction[0, 0, :4] = 1.7  # outside the window: must be clipped to 1
    prediction[-1, -1, -4:] = -0.5  # clipped to 0
    return target, prediction


def test_ct_views_and_shapes():
    assert VIEWS == ("axial", "coronal", "sagittal")


def test_ct_clips_and_uses_unit_data_range(ct_pair):
    target, prediction = ct_pair
    got = ct_view_metrics(target, prediction)
    clipped = np.clip(prediction, 0, 1)
    mse = np.mean((target - clipped) ** 2)
    expected_psnr = 10 * np.log10(1.0 / mse)
    unclipped_psnr = 10 * np.log10(1.0 / np.mean((target - prediction) ** 2))
    assert abs(expected_psnr - unclipped_psnr) > 0.05  # the clipping matters here
    for view in VIEWS:
        assert got[view]["psnr"] == pytest.approx(expected_psnr, rel=1e-10)
    # pre-clipped input gives the same numbers
    assert ct_view_metrics(target, clipped) == got


def test_ct_target_is_clipped_too(ct_pair):
    target, prediction = ct_pair
    shifted = target.copy()
    shifted[2, 3, 4] = 1.4
    got = ct_view_metrics(shifted, prediction)
    assert got == ct_view_metrics(np.clip(shifted, 0, 1), prediction)


def test_ct_psnr_identical_across_views_and_ssim_per_view(ct_pair):
    target, prediction = ct_pair
    got = ct_view_metrics(target, prediction)
    assert set(got) == set(VIEWS)
    psnrs = {got[v]["psnr"] for v in VIEWS}
    assert len(psnrs) == 1

    t, p = target, np.clip(prediction, 0, 1)
    stacks = {
        "axial": [(t[k], p[k]) for k in range(t.shape[0])],
        "coronal": [(t[:, k, :], p[:, k, :]) for k in range(t.shape[1])],
        "sagittal": [(t[:, :, k], p[:, :, k]) for k in range(t.shape[2])],
    }
    expected = {
        view: np.mean([structural_similarity(a, b, data_range=1.0) for a, b in pairs])
        for view, pairs in stacks.items()
    }
    # the views really differ, so an axis mix-up cannot pass
    assert len({round(v, 6) for v in expected.values()}) == 3
    for view in VIEWS:
        assert got[view]["ssim"] == pytest.approx(expected[view], rel=1e-10)
        assert set(got[view]) == {"psnr", "ssim"}


def test_ct_data_range_is_one_even_for_dim_target():
    target = 0.5 * _ct_volume()
    prediction = target + 0.05
    got = ct_view_metrics(target, prediction)
    assert got["axial"]["psnr"] == pytest.approx(10 * np.log10(1.0 / 0.05**2), rel=1e-9)


def test_ct_errors():
    vol = _ct_volume()
    with pytest.raises(ValueError, match="complex"):
        ct_view_metrics(vol + 0j, vol)
    with pytest.raises(ValueError) as err:
        ct_view_metrics(vol, vol[:, :, :-1])
    assert str(vol.shape) in str(err.value) and str(vol[:, :, :-1].shape) in str(err.value)
    with pytest.raises(ValueError):
        ct_view_metrics(vol[0], vol[0])


# ----------------------------------------------------------------------------- CSV rows


def test_case_rows_mri():
    rows = case_rows("MRI", "fastmri_knee", "x4", "dps", "file1000", {"psnr": 31.0, "ssim": 0.8, "nmse": 0.02})
    assert len(rows) == 1
    row = rows[0]
    assert tuple(row) == CASE_COLUMNS
    assert CASE_COLUMNS == ("modality", "dataset", "setting", "method", "case", "view") + METRIC_COLUMNS
    assert METRIC_COLUMNS == ("psnr", "ssim", "nmse")
    assert row["modality"] == "mri" and row["view"] == "image"
    assert (row["psnr"], row["ssim"], row["nmse"]) == (31.0, 0.8, 0.02)


def test_case_rows_ct():
    by_view = {v: {"psnr": 30.0, "ssim": 0.7 + i / 10, "nmse": 0.1} for i, v in enumerate(reversed(VIEWS))}
    rows = case_rows("ct", "aapm", "8views", "fbp", 7, by_view)
    assert [r["view"] for r in rows] == list(VIEWS)
    assert all(math.isnan(r["nmse"]) for r in rows)
    assert [r["ssim"] for r in rows] == [by_view[v]["ssim"] for v in VIEWS]
    assert all(r["case"] == "7" and tuple(r) == CASE_COLUMNS for r in rows)


def test_case_rows_rejects_bad_input():
    with pytest.raises(ValueError):
        case_rows("pet", "d", "s", "m", "c", {"psnr": 1.0, "ssim": 1.0})
    with pytest.raises(ValueError):
        case_rows("ct", "d", "s", "m", "c", {"psnr": 1.0, "ssim": 1.0})
