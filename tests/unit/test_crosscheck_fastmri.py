"""The MRI metrics against fastMRI's own evaluation code (``fastmri.evaluate``).

:func:`diffrecon.metrics.fastmri_metrics` claims the fastMRI convention (``MRI_CONVENTION``):
per volume, PSNR and NMSE from one error over the whole volume and SSIM the mean of 2-D SSIM
over slices, both with ``data_range = target.max()`` of the whole volume. fastMRI's
``evaluate.psnr / ssim / nmse`` are the reference definitions; ``evaluate.Metrics`` is the
reference aggregation over volumes (the mean of the per-volume values), which the tables'
``summarize`` reproduces.

Our metrics compute in float64 whatever the input dtype; fastMRI computes NMSE and the PSNR
error in the dtype it is given. On float64 input both agree to rounding; on float32 input
(what the stage files store) they differ by float32 rounding only (checked with rtol 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest

fastmri_evaluate = pytest.importorskip("fastmri.evaluate")

from diffrecon.metrics import fastmri_metrics  # noqa: E402


def _reference(target, prediction) -> dict[str, float]:
    return {
        "psnr": float(fastmri_evaluate.psnr(target, prediction)),
        "ssim": float(np.squeeze(fastmri_evaluate.ssim(target, prediction))),
        "nmse": float(fastmri_evaluate.nmse(target, prediction)),
    }


def _blur(volume: np.ndarray) -> np.ndarray:
    """3-tap box blur along both image axes (a smooth, structured reconstruction error)."""
    out = volume.copy()
    for axis in (1, 2):
        out = (np.roll(out, 1, axis) + out + np.roll(out, -1, axis)) / 3
    return out


def _phantom(slices: int, rows: int, cols: int) -> np.ndarray:
    """Ellipses of different intensity in every slice: a structured magnitude volume."""
    r = np.linspace(-1, 1, rows)[:, None]
    c = np.linspace(-1, 1, cols)[None, :]
    vol = np.zeros((slices, rows, cols))
    for k in range(slices):
        a = 0.5 + 0.4 * k / max(slices - 1, 1)
        vol[k] += 1.0 * ((r / 0.9) ** 2 + (c / a) ** 2 <= 1)
        vol[k] += 0.5 * (((r - 0.2) / 0.3) ** 2 + ((c + 0.1 * k) / 0.2) ** 2 <= 1)
    return vol


def _volumes():
    rng = np.random.default_rng(20240611)
    # random target, additive noise
    t = rng.random((3, 32, 32))
    yield "random", t, t + 0.05 * rng.standard_normal(t.shape)
    # random non-square slices, multiplicative error and a bias
    t = rng.gamma(2.0, 1.0, (4, 24, 40))
    yield "random-nonsquare", t, 0.9 * t * (1 + 0.1 * rng.standard_normal(t.shape)) + 0.02
    # structured phantom, blurred reconstruction
    t = _phantom(5, 48, 40)
    yield "phantom-blur", t, _blur(t)
    # the maximum differs per slice by two orders of magnitude (the volume max is the data range)
    scale = np.array([0.02, 0.3, 1.0, 2.5, 0.7])[:, None, None]
    t = _phantom(5, 40, 40) * scale
    yield "slice-max-differs", t, np.abs(_blur(t) + 0.01 * rng.standard_normal(t.shape))
    # an empty (all-zero) edge slice, as at the edges of a knee volume
    t = _phantom(4, 32, 32)
    t[0] = 0.0
    yield "empty-slice", t, np.abs(t + 0.03 * rng.standard_normal(t.shape))
    # a single slice (2-D input is one slice for our function; fastMRI needs (1, H, W))
    t = _phantom(1, 32, 32)
    yield "one-slice", t, _blur(t)


VOLUMES = list(_volumes())


@pytest.mark.parametrize("name,target,prediction", VOLUMES, ids=[v[0] for v in VOLUMES])
def test_fastmri_metrics_equal_fastmri_evaluate(name, target, prediction):
    ours = fastmri_metrics(target, prediction)
    ref = _reference(target, prediction)
    for key in ("psnr", "ssim", "nmse"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-10, abs=1e-13), (name, key)


@pytest.mark.parametrize("name,target,prediction", VOLUMES[:4], ids=[v[0] for v in VOLUMES[:4]])
def test_float32_volumes_agree_to_float32_rounding(name, target, prediction):
    t32, p32 = target.astype(np.float32), prediction.astype(np.float32)
    ours = fastmri_metrics(t32, p32)
    ref = _reference(t32, p32)
    for key in ("psnr", "ssim", "nmse"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-5), (name, key)


def test_volume_max_is_the_data_range_not_the_slice_max():
    """With per-slice maxima far apart, the per-slice convention gives other values: the
    agreement above is not an accident of a data range that does not matter."""
    _, target, prediction = next(v for v in VOLUMES if v[0] == "slice-max-differs")
    ours = fastmri_metrics(target, prediction)
    per_slice_ssim = np.mean([
        float(np.squeeze(fastmri_evaluate.ssim(t[None], p[None], maxval=t.max())))
        for t, p in zip(target, prediction)
    ])
    per_slice_psnr = np.mean([fastmri_evaluate.psnr(t, p, maxval=t.max()) for t, p in zip(target, prediction)])
    assert abs(ours["ssim"] - per_slice_ssim) > 1e-3
    assert abs(ours["psnr"] - per_slice_psnr) > 0.1
    assert ours["ssim"] == pytest.approx(float(np.squeeze(fastmri_evaluate.ssim(target, prediction,
                                                                                 maxval=target.max()))))


def test_2d_image_is_one_slice_as_in_fastmri():
    _, target, prediction = next(v for v in VOLUMES if v[0] == "one-slice")
    ours = fastmri_metrics(target[0], prediction[0])
    ref = _reference(target, prediction)
    for key in ("psnr", "ssim", "nmse"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-10), key


def test_evaluate_stage_and_table_mean_equal_fastmri_metrics_class(tmp_path):
    """The pipeline path: the ``evaluate`` stage scores each volume of a stage file (float32 on
    disk) and ``summarize`` averages over volumes; fastMRI's ``Metrics`` pushes each volume and
    takes the mean."""
    from diffrecon import io
    from diffrecon.report.tables import summarize
    from diffrecon.stages.evaluate import evaluate

    cases = {name: (t.astype(np.float32), p.astype(np.float32)) for name, t, p in VOLUMES[:4]}
    target_file, recon_file = tmp_path / "target.h5", tmp_path / "recon.h5"
    with io.CaseWriter(target_file) as w:
        for case, (t, _) in cases.items():
            w.add(case, target=t)
        w.finish({"modality": "mri", "dataset": "knee", "setting": "x4"})
    with io.CaseWriter(recon_file) as w:
        for case, (_, p) in cases.items():
            w.add(case, reconstruction=p)
    rows = evaluate(target_file, recon_file, None, "knee", "x4", "zero_filled")

    reference = fastmri_evaluate.Metrics(fastmri_evaluate.METRIC_FUNCS)
    for case, (t, p) in cases.items():
        row = rows[rows["case"] == case].iloc[0]
        ref = _reference(t, p)
        for key in ("psnr", "ssim", "nmse"):
            assert row[key] == pytest.approx(ref[key], rel=1e-5), (case, key)
        reference.push(t, p)

    means = reference.means()
    summary = summarize(rows).iloc[0]
    assert summary["n"] == len(cases)
    assert summary["psnr_mean"] == pytest.approx(float(means["PSNR"]), rel=1e-5)
    assert summary["ssim_mean"] == pytest.approx(float(np.squeeze(means["SSIM"])), rel=1e-5)
    assert summary["nmse_mean"] == pytest.approx(float(means["NMSE"]), rel=1e-5)
