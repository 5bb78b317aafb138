"""Tests for the ``diffrecon`` command line (in-process through ``diffrecon.cli.main``).

Reconstructions are checked against independent numpy recomputations (zero-filled), the
library's own operators (FBP of the projected volume) and physical expectations (TV beats
zero-filled at R = 4, more views give a better FBP, FBP conserves total attenuation).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from diffrecon.cli import main
from diffrecon.data.datasets import prepare_dataset
from diffrecon.data.thorax import thorax_volume
from diffrecon.physics.ct import CTGeometry, ParallelBeamCT
from diffrecon.physics.masks import make_mask

REPO = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "diffrecon"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# MRI: poisson R = 4 with a 25 % calibration region, multi-coil (as in tests/integration/config_tiny.yaml)
MRI_OPTS = ["--mask", "poisson", "--acceleration", "4", "--acs-fraction", "0.25", "--coil-mode", "multicoil"]


def _np_ifft2c(k):
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"), axes=ax)


def _psnr(target, pred):
    """fastMRI PSNR: data range = volume maximum of the target, one MSE over the volume."""
    target, pred = np.asarray(target, np.float64), np.asarray(pred, np.float64)
    return 20 * np.log10(target.max()) - 10 * np.log10(np.mean((target - pred) ** 2))


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _summary(out: str) -> dict:
    return json.loads(out)


def _read_recon(path):
    with h5py.File(path, "r") as f:
        return f["reconstruction"][()], dict(f.attrs)


def _assert_usage_error(rc, out, err, output: Path, *must_name):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert lines[0].startswith("diffrecon: error:")
    for name in must_name:
        assert str(name) in lines[0], f"{name!r} not named in {lines[0]!r}"
    assert out.strip() == ""
    assert not output.exists()
    assert not list(output.parent.glob("*.part"))


# ================================================================================ fixtures
@pytest.fixture(scope="module")
def mri_file(tmp_path_factory):
    """A fully sampled multi-coil fastMRI-layout file (2 slices, 8 coils, 32 x 32)."""
    out = tmp_path_factory.mktemp("cli_mri")
    cfg = {"modality": "mri", "source": "demo", "size": 32, "coils": 8, "slices": 2, "volumes": {"test": 1}}
    manifest = prepare_dataset("cli_brain", cfg, out / "data", seed=5)
    return Path(manifest["splits"]["test"][0])


@pytest.fixture(scope="module")
def mri_truth(mri_file):
    """Coil images, normalised RSS target and k-space of ``mri_file``, recomputed with numpy."""
    with h5py.File(mri_file, "r") as f:
        kspace = f["kspace"][()].astype(np.complex128)
    coils = _np_ifft2c(kspace)
    rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
    scale = rss.max()
    return {"kspace": kspace / scale, "target": rss / scale}


@pytest.fixture(scope="module")
def ct_volume():
    return thorax_volume(np.random.default_rng(2), 27, 32)


@pytest.fixture
def ct_npy(tmp_path, ct_volume):
    path = tmp_path / "thorax.npy"
    np.save(path, ct_volume)
    return path


def _project(volume, geom):
    with ParallelBeamCT(geom) as op:
        return op.A(torch.from_numpy(volume)).numpy()


def _fbp(sino, geom):
    with ParallelBeamCT(geom) as op:
        return op.A_dagger(torch.from_numpy(np.ascontiguousarray(sino, np.float32))).numpy()


# ===================================================================================== MRI
def test_mri_zero_filled(capsys, tmp_path, mri_file, mri_truth):
    out_h5 = tmp_path / "out" / "zf.h5"
    rc, out, err = _run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "zero_filled",
                        *MRI_OPTS, "--output", out_h5)
    assert rc == 0, err
    rec, attrs = _read_recon(out_h5)
    assert rec.shape == (2, 32, 32) and rec.dtype == np.float32
    assert attrs["method"] == "zero_filled" and attrs["modality"] == "mri"

    # independent recomputation: RSS of the centred ifft of the masked, normalised k-space
    mask = make_mask("poisson", (32, 32), 4.0, 0.25, 0).array
    expected = np.sqrt((np.abs(_np_ifft2c(mri_truth["kspace"] * mask)) ** 2).sum(axis=1))
    np.testing.assert_allclose(rec, expected, atol=1e-5)

    summary = _summary(out)
    assert summary["method"] == "zero_filled" and summary["input"] == str(mri_file)
    assert summary["shape"] == [2, 32, 32]
    assert set(summary["metrics"]) == {"image/psnr", "image/ssim"}
    assert summary["metrics"]["image/psnr"] == pytest.approx(_psnr(mri_truth["target"], expected), abs=2e-3)
    assert 0 < summary["metrics"]["image/ssim"] < 1
    assert json.loads(attrs["summary"]) == summary
    assert not list(out_h5.parent.glob("*.part"))


def test_mri_tv_beats_zero_filled(capsys, tmp_path, mri_file, mri_truth):
    psnr = {}
    for method, extra in (("zero_filled", []), ("tv", ["--iterations", "30"])):
        out_h5 = tmp_path / f"{method}.h5"
        rc, out, err = _run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", method,
                            *MRI_OPTS, *extra, "--output", out_h5)
        assert rc == 0, err
        rec, _ = _read_recon(out_h5)
        assert rec.shape == (2, 32, 32) and rec.dtype == np.float32
        assert np.isfinite(rec).all() and rec.min() >= 0
        psnr[method] = _psnr(mri_truth["target"], rec)
        assert _summary(out)["metrics"]["image/psnr"] == pytest.approx(psnr[method], abs=2e-3)
    # TV's sparsity prior removes incoherent aliasing: at least 1 dB better than zero filling
    assert psnr["tv"] > psnr["zero_filled"] + 1.0, psnr


def test_mri_preview_png(capsys, tmp_path, mri_file):
    out_h5, png = tmp_path / "r.h5", tmp_path / "figs" / "r.png"
    rc, out, err = _run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "zero_filled",
                        "--output", out_h5, "--preview", png)
    assert rc == 0, err
    assert out_h5.is_file()
    assert png.is_file() and png.read_bytes()[:8] == PNG_SIGNATURE


def test_mri_central_slices_and_seed(capsys, tmp_path, mri_file):
    outs = {}
    for seed in (0, 0, 1):
        out_h5 = tmp_path / f"s{seed}_{len(outs)}.h5"
        rc, _, err = _run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "zero_filled",
                          "--mask", "uniform1d", "--central-slices", "1", "--seed", seed, "-o", out_h5)
        assert rc == 0, err
        outs[out_h5.name] = _read_recon(out_h5)[0]
    a, b, c = outs.values()
    assert a.shape == (1, 32, 32)
    np.testing.assert_array_equal(a, b)          # same seed, same mask
    assert not np.array_equal(a, c)              # another seed, another mask


# ====================================================================================== CT
def test_ct_volume_fbp(capsys, tmp_path, ct_npy, ct_volume):
    out_h5 = tmp_path / "ct.h5"
    rc, out, err = _run(capsys, "reconstruct", ct_npy, "--modality", "ct", "--method", "fbp", "--setting", "sv8",
                        "--output", out_h5)
    assert rc == 0, err
    rec, attrs = _read_recon(out_h5)
    assert rec.shape == (27, 32, 32) and rec.dtype == np.float32
    assert attrs["modality"] == "ct" and attrs["method"] == "fbp"
    # the CLI = project at 8 views uniform over [0, 180) and FBP
    geom = CTGeometry(32, tuple(np.deg2rad(np.arange(8) * 22.5)))
    np.testing.assert_allclose(rec, _fbp(_project(ct_volume, geom), geom), atol=1e-4)
    # physically sensible: correlated with the truth, total attenuation conserved
    assert np.corrcoef(rec.ravel(), ct_volume.ravel())[0, 1] > 0.8
    assert rec.sum() == pytest.approx(float(ct_volume.sum()), rel=0.05)
    summary = _summary(out)
    assert summary["shape"] == [27, 32, 32]
    assert {f"{v}/{m}" for v in ("axial", "coronal", "sagittal") for m in ("psnr", "ssim")} == set(summary["metrics"])
    # TPDM convention: both clipped to [0, 1], data range 1, one MSE over the volume (same in every view)
    mse = np.mean((np.clip(ct_volume, 0, 1).astype(np.float64) - np.clip(rec, 0, 1)) ** 2)
    for view in ("axial", "coronal", "sagittal"):
        assert summary["metrics"][f"{view}/psnr"] == pytest.approx(-10 * np.log10(mse), abs=2e-3)
        assert 0 < summary["metrics"][f"{view}/ssim"] < 1


def test_ct_more_views_reconstruct_better(capsys, tmp_path, ct_npy):
    psnr = {}
    for setting in ("sv8", "sv32"):
        rc, out, err = _run(capsys, "reconstruct", ct_npy, "--modality", "ct", "--method", "fbp",
                            "--setting", setting, "-o", tmp_path / f"{setting}.h5")
        assert rc == 0, err
        psnr[setting] = _summary(out)["metrics"]["axial/psnr"]
    assert psnr["sv32"] > psnr["sv8"] + 3, psnr


def test_ct_h5_volume_input(capsys, tmp_path, ct_volume):
    from diffrecon.data.ct_volumes import write_ct_volume

    src = write_ct_volume(tmp_path / "vol.h5", ct_volume)
    rc, out, err = _run(capsys, "reconstruct", src, "--modality", "ct", "--method", "fbp", "--setting", "la90",
                        "-o", tmp_path / "la.h5")
    assert rc == 0, err
    rec, _ = _read_recon(tmp_path / "la.h5")
    geom = CTGeometry(32, tuple(np.deg2rad(np.arange(90.0))))
    np.testing.assert_allclose(rec, _fbp(_project(ct_volume, geom), geom), atol=1e-4)


def test_ct_sinogram_input(capsys, tmp_path, ct_volume):
    geom = CTGeometry.sparse_view(32, 90)
    sino = _project(ct_volume, geom)
    src = tmp_path / "measured.h5"
    with h5py.File(src, "w") as f:
        f["sinogram"] = sino
        f["angles"] = np.asarray(geom.angles)
    out_h5 = tmp_path / "from_sino.h5"
    rc, out, err = _run(capsys, "reconstruct", src, "--modality", "ct", "--method", "fbp", "--sinogram",
                        "--output", out_h5, "--preview", tmp_path / "p.png")
    assert rc == 0, err
    rec, _ = _read_recon(out_h5)
    # the image size is inferred from the detector count (ceil(sqrt(2) * 32) bins -> 32)
    assert rec.shape == (27, 32, 32) and rec.dtype == np.float32
    np.testing.assert_allclose(rec, _fbp(sino, geom), atol=1e-4)
    assert np.corrcoef(rec.ravel(), ct_volume.ravel())[0, 1] > 0.95     # 90 views: close to the truth
    summary = _summary(out)
    assert summary["shape"] == [27, 32, 32] and "metrics" not in summary  # no ground truth given
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_SIGNATURE


# ================================================================================== errors
def test_error_missing_input(capsys, tmp_path):
    missing = tmp_path / "no_such_scan.h5"
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", missing, "--modality", "mri", "--method", "zero_filled",
                              "-o", output), output, missing.name)
    _assert_usage_error(*_run(capsys, "reconstruct", tmp_path / "no_vol.npy", "--modality", "ct",
                              "--method", "fbp", "-o", output), output, "no_vol.npy")


def test_error_text_file_posing_as_h5(capsys, tmp_path):
    fake = tmp_path / "fake_scan.h5"
    fake.write_text("I am not HDF5\n")
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", fake, "--modality", "mri", "--method", "zero_filled",
                              "-o", output), output, fake.name)
    _assert_usage_error(*_run(capsys, "reconstruct", fake, "--modality", "ct", "--method", "fbp",
                              "-o", output), output, fake.name)


def test_error_h5_without_kspace(capsys, tmp_path):
    src = tmp_path / "image_only.h5"
    with h5py.File(src, "w") as f:
        f["reconstruction_rss"] = np.ones((1, 16, 16), np.float32)
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", src, "--modality", "mri", "--method", "zero_filled",
                              "-o", output), output, src.name, "kspace")


def test_error_unknown_method(capsys, tmp_path, mri_file, ct_npy):
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "bogus_net",
                              "-o", output), output, "bogus_net", "zero_filled")
    _assert_usage_error(*_run(capsys, "reconstruct", ct_npy, "--modality", "ct", "--method", "sart",
                              "-o", output), output, "sart", "fbp")


def test_error_bad_mask_kind(capsys, tmp_path, mri_file):
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "zero_filled",
                              "--mask", "gaussian3d", "-o", output), output, "gaussian3d", "gaussian1d")


def test_error_bad_ct_setting_and_non_square_volume(capsys, tmp_path, ct_npy):
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", ct_npy, "--modality", "ct", "--method", "fbp",
                              "--setting", "xx8", "-o", output), output, "xx8")
    rect = tmp_path / "rect.npy"
    np.save(rect, np.zeros((27, 32, 30), np.float32))
    _assert_usage_error(*_run(capsys, "reconstruct", rect, "--modality", "ct", "--method", "fbp",
                              "-o", output), output, rect.name)


def test_error_sinogram_not_hdf5(capsys, tmp_path):
    fake = tmp_path / "fake_sino.h5"
    fake.write_text("not a sinogram\n")
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", fake, "--modality", "ct", "--method", "fbp", "--sinogram",
                              "-o", output), output, fake.name)


def test_error_keeps_existing_output_untouched(capsys, tmp_path):
    output = tmp_path / "previous.h5"
    output.write_bytes(b"old result")
    rc, _, err = _run(capsys, "reconstruct", tmp_path / "missing.h5", "--modality", "mri",
                      "--method", "zero_filled", "-o", output)
    assert rc == 2 and err.startswith("diffrecon: error:")
    assert output.read_bytes() == b"old result"


# ============================================================================ check-config
def test_check_config_shipped(capsys):
    rc, out, err = _run(capsys, "check-config", REPO / "config.yaml")
    assert rc == 0, err
    assert "valid" in out and "config.yaml" in out
    assert err == ""


def test_check_config_broken(capsys, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text((REPO / "config.yaml").read_text().replace("masks: [gaussian1d, poisson]",
                                                                 "masks: [gaussian3d, poisson]"))
    rc, out, err = _run(capsys, "check-config", broken)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("diffrecon: error:")
    assert "mri.masks[0]" in lines[0] and "gaussian3d" in lines[0]
    assert "valid" not in out


def test_check_config_missing_file(capsys, tmp_path):
    rc, _, err = _run(capsys, "check-config", tmp_path / "absent.yaml")
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "absent.yaml" in err


# ========================================================================= the installed script
def test_console_script_help():
    assert EXE.is_file(), f"console script not installed at {EXE}"
    top = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, timeout=60)
    assert top.returncode == 0, top.stderr
    for command in ("reconstruct", "check-config"):
        assert command in top.stdout
    sub = subprocess.run([str(EXE), "reconstruct", "--help"], capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    for group in ("MRI:", "CT:"):
        assert group in sub.stdout
    for option in ("--modality", "--method", "--output", "--preview", "--mask", "--acceleration",
                   "--acs-fraction", "--coil-mode", "--iterations", "--setting", "--projector", "--sinogram"):
        assert option in sub.stdout


def test_score_method_with_the_shipped_weights(tmp_path):
    """`reconstruct --method score` with the shipped demo prior writes mean and posterior std,
    and beats zero-filled on a held-out slice of the demo's real anatomy (Alg. 2, 4x gaussian1d)."""
    from pathlib import Path

    import h5py

    from diffrecon.cli import main
    from diffrecon.data.datasets import prepare_dataset

    weights = Path(__file__).resolve().parents[2] / "weights" / "score_mri_demo_brain.safetensors"
    man = prepare_dataset("demo_brain", {"modality": "mri", "source": "anatomy", "size": 64, "coils": 8, "slices": 3,
                                         "volumes": {"test": 1}}, tmp_path / "data", seed=5)
    src = man["splits"]["test"][0]
    common = ["reconstruct", src, "--modality", "mri", "--coil-mode", "magnitude", "--central-slices", "1"]
    assert main([*common, "--method", "score", "--model", str(weights), "--steps", "30", "--samples", "2",
                 "--output", str(tmp_path / "s.h5")]) == 0
    assert main([*common, "--method", "zero_filled", "--output", str(tmp_path / "z.h5")]) == 0
    with h5py.File(tmp_path / "s.h5") as f:
        summary_s = f.attrs["summary"]
        assert f["std"].shape == f["reconstruction"].shape == (1, 64, 64)
        assert float(f["std"][()].max()) > 0
    with h5py.File(tmp_path / "z.h5") as f:
        summary_z = f.attrs["summary"]
    import json

    psnr = lambda s: json.loads(s)["metrics"]["image/psnr"]  # noqa: E731
    assert psnr(summary_s) > psnr(summary_z) + 3.0
    assert main([*common, "--method", "score", "--output", str(tmp_path / "x.h5")]) == 2
    assert not (tmp_path / "x.h5").exists()


def test_ct_diffusion_method_with_own_checkpoint(capsys, tmp_path, ct_npy):
    """A CT diffusion method takes the prior as --model; without it the CLI stops with one line."""
    from diffrecon.data.datasets import prepare_dataset
    from diffrecon.models.recipes import train_ct_prior

    manifest = prepare_dataset("thorax", {"modality": "ct", "source": "demo", "size": 32, "slices": 27,
                                          "volumes": {"train": 1, "test": 1}}, tmp_path / "data", seed=0)
    cfg = {"model": {"channels": [8, 16], "attention": [False, False], "norm_num_groups": 4},
           "train": {"steps": 2, "batch_size": 2, "checkpoint_every": 2}}
    train_ct_prior(manifest, cfg, tmp_path / "slice_prior", "slice", device="cpu", progress=False)
    out_h5 = tmp_path / "dds.h5"
    rc, out, err = _run(capsys, "reconstruct", ct_npy, "--modality", "ct", "--method", "dds_2d", "--setting", "sv8",
                        "--model", tmp_path / "slice_prior.safetensors", "--ddim-steps", "3", "--output", out_h5)
    assert rc == 0, err
    rec, attrs = _read_recon(out_h5)
    assert rec.shape == (27, 32, 32) and np.isfinite(rec).all() and attrs["method"] == "dds_2d"
    assert "axial/psnr" in _summary(out)["metrics"]
    rc, out, err = _run(capsys, "reconstruct", ct_npy, "--modality", "ct", "--method", "dds",
                        "--output", tmp_path / "none.h5")
    _assert_usage_error(rc, out, err, tmp_path / "none.h5", "--model")

    # TPDM: the perpendicular prior as --model, the axial one as --axial-model (both checked)
    cfg_perp = {**cfg, "z_window": 24, "model": {"channels": [8, 16], "attention": [False, False], "norm_num_groups": 4}}
    train_ct_prior(manifest, cfg_perp, tmp_path / "perp_prior", "slice_perp", device="cpu", progress=False)
    tpdm = ["reconstruct", ct_npy, "--modality", "ct", "--method", "tpdm", "--setting", "sv8", "--ddim-steps", "3"]
    rc, out, err = _run(capsys, *tpdm, "--model", tmp_path / "perp_prior.safetensors", "--output", tmp_path / "t0.h5")
    _assert_usage_error(rc, out, err, tmp_path / "t0.h5", "--axial-model", "axial slices")
    rc, out, err = _run(capsys, *tpdm, "--model", tmp_path / "perp_prior.safetensors",
                        "--axial-model", tmp_path / "perp_prior.safetensors", "--output", tmp_path / "t1.h5")
    _assert_usage_error(rc, out, err, tmp_path / "t1.h5", "--axial-model", "ct_slice_perp checkpoint")
    rc, out, err = _run(capsys, *tpdm, "--model", tmp_path / "perp_prior.safetensors",
                        "--axial-model", tmp_path / "slice_prior.safetensors", "--output", tmp_path / "t2.h5")
    assert rc == 0, err
    rec, attrs = _read_recon(tmp_path / "t2.h5")
    assert rec.shape == (27, 32, 32) and np.isfinite(rec).all() and attrs["method"] == "tpdm"
    assert json.loads(attrs["sampler_params"])["axial_model"] == str(tmp_path / "slice_prior")


# ============================================================= never destroys, never lies
def test_output_equal_to_input_is_refused(capsys, tmp_path, mri_file):
    src = tmp_path / "scan.h5"
    src.write_bytes(Path(mri_file).read_bytes())
    original = src.read_bytes()
    (tmp_path / "alias.h5").symlink_to(src)
    for spelling in (src, tmp_path / "sub" / ".." / "scan.h5", tmp_path / "alias.h5"):
        rc, out, err = _run(capsys, "reconstruct", src, "--modality", "mri", "--method", "zero_filled", "-o", spelling)
        assert rc == 2 and "--output" in err and len(err.strip().splitlines()) == 1
        assert src.read_bytes() == original


@pytest.mark.parametrize("option,value", [("--iterations", "0"), ("--steps", "0"), ("--ddim-steps", "0"),
                                          ("--lam", "-1"), ("--snr", "-1"), ("--central-slices", "0"),
                                          ("--samples", "0"), ("--central-slices", "-1"), ("--acceleration", "0.5"),
                                          ("--acs-fraction", "1.5"), ("--threads", "0")])
def test_options_meet_the_config_schema(capsys, tmp_path, mri_file, option, value):
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "tv",
                              option, value, "-o", output), output, option)


def test_option_bounds_follow_the_schema(monkeypatch, capsys, tmp_path, mri_file):
    """A bound changed in the schema changes the command line's check."""
    from diffrecon import config

    real = config.load_schema

    def stricter():
        schema = real()
        schema["properties"]["mri"]["properties"]["tv"]["properties"]["iterations"]["minimum"] = 10
        return schema

    monkeypatch.setattr(config, "load_schema", stricter)
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "tv",
                              "--iterations", "5", "-o", output), output, "--iterations", "minimum of 10")


def test_metric_failure_keeps_the_reconstruction(capsys, tmp_path, ct_volume):
    src = tmp_path / "six.npy"
    np.save(src, ct_volume[:6])                 # SSIM over the 3-D views needs >= 7 slices
    rc, out, err = _run(capsys, "reconstruct", src, "--modality", "ct", "--method", "fbp", "-o", tmp_path / "r.h5")
    assert rc == 0, err
    summary = _summary(out)
    assert summary["metrics"].startswith("not computed:")
    rec, attrs = _read_recon(tmp_path / "r.h5")
    assert rec.shape == (6, 32, 32) and json.loads(attrs["summary"]) == summary


def test_preview_failure_leaves_nothing(monkeypatch, capsys, tmp_path, mri_file):
    import diffrecon.report.figures as figures

    def broken(image, out_path, title=None):
        Path(out_path).write_bytes(b"half a png")
        raise OSError(f"{out_path}: disk full")

    monkeypatch.setattr(figures, "save_preview", broken)
    output = tmp_path / "recon.h5"
    rc, out, err = _run(capsys, "reconstruct", mri_file, "--modality", "mri", "--method", "zero_filled",
                        "-o", output, "--preview", tmp_path / "p.png")
    _assert_usage_error(rc, out, err, output, "disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_coil_mode_follows_the_file(capsys, tmp_path, mri_file):
    single = tmp_path / "single.h5"
    with h5py.File(mri_file) as f, h5py.File(single, "w") as g:
        g["kspace"] = f["kspace"][:, 0]
        g["reconstruction_esc"] = f["reconstruction_rss"][()]
    for src, mode in ((mri_file, "multicoil"), (single, "singlecoil")):
        rc, out, err = _run(capsys, "reconstruct", src, "--modality", "mri", "--method", "zero_filled",
                            "-o", tmp_path / f"{mode}.h5")
        assert rc == 0, err
        assert _summary(out)["coil_mode"] == mode
    output = tmp_path / "x.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", single, "--modality", "mri", "--method", "zero_filled",
                              "--coil-mode", "multicoil", "-o", output), output, "--coil-mode multicoil", "single.h5")


def test_npy_for_mri_says_what_is_expected(capsys, tmp_path):
    src = tmp_path / "scan.npy"
    np.save(src, np.ones((1, 8, 8), np.complex64))
    output = tmp_path / "o.h5"
    _assert_usage_error(*_run(capsys, "reconstruct", src, "--modality", "mri", "--method", "zero_filled",
                              "-o", output), output, "scan.npy", "fastMRI-layout .h5", "kspace")


def test_sigkill_leaves_no_intermediate_files(tmp_path, mri_file):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    import diffrecon

    env = {**__import__("os").environ, "TMPDIR": str(tmp), "PYTHONPATH": str(Path(diffrecon.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "diffrecon.cli", "reconstruct", str(mri_file),
                             "--modality", "mri", "--method", "tv", "--iterations", "1000000",
                             "-o", str(out_dir / "recon.h5")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    import signal
    import time

    time.sleep(4.0)                              # imports, simulation, then inside the TV iterations
    assert proc.poll() is None, "the run ended before it was killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert list(tmp.iterdir()) == []
    assert list(out_dir.iterdir()) == []


def test_model_checksum(capsys, tmp_path, mri_file):
    import shutil

    weights = REPO / "weights" / "score_mri_demo_brain"
    stem = tmp_path / "prior"
    for suffix in (".safetensors", ".json", ".sha256"):
        shutil.copyfile(weights.with_suffix(suffix), stem.with_suffix(suffix))
    data = bytearray(stem.with_suffix(".safetensors").read_bytes())
    data[-1] ^= 0xFF
    stem.with_suffix(".safetensors").write_bytes(bytes(data))
    output = tmp_path / "o.h5"
    common = ["reconstruct", mri_file, "--modality", "mri", "--method", "score", "--coil-mode", "magnitude",
              "--steps", "2", "-o", output]
    _assert_usage_error(*_run(capsys, *common, "--model", stem.with_suffix(".safetensors")), output,
                        "prior.sha256")
    # a user checkpoint without any checksum is accepted with one warning (and then checked like any
    # other: this 64² prior does not fit the 32² file, which is the one error line)
    shutil.copyfile(weights.with_suffix(".safetensors"), stem.with_suffix(".safetensors"))
    stem.with_suffix(".sha256").unlink()
    meta = json.loads(stem.with_suffix(".json").read_text())
    meta.pop("sha256")
    stem.with_suffix(".json").write_text(json.dumps(meta))
    rc, out, err = _run(capsys, *common, "--model", stem.with_suffix(".safetensors"))
    assert rc == 2 and not output.exists()
    assert err.count("warning") == 1 and "not verified" in err and "trained on 64 x 64" in err


def test_export_weights_writes_a_dot_free_name_and_refuses_a_dotted_one(capsys, tmp_path):
    """export-weights keeps the EMA weights with sidecar and checksum; an output name with a '.' in
    its stem (a mask family such as acs0.12) is refused in one line rather than written under a
    truncated name."""
    from diffrecon.models.checkpoint import load_checkpoint, save_checkpoint

    save_checkpoint(tmp_path / "ck", {"model.w": torch.zeros(2), "ema.w": torch.ones(2)}, {"step": 5})
    code, out, err = _run(capsys, "export-weights", str(tmp_path / "ck.safetensors"),
                          str(tmp_path / "ship" / "unet_acs0.12.safetensors"))
    assert code == 2 and err.count("\n") == 1 and "unet_acs012.safetensors" in err
    assert not (tmp_path / "ship").exists() or not list((tmp_path / "ship").iterdir())
    code, out, err = _run(capsys, "export-weights", str(tmp_path / "ck.safetensors"),
                          str(tmp_path / "ship" / "unet_acs012.safetensors"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "ship").iterdir()) == [
        "unet_acs012.json", "unet_acs012.safetensors", "unet_acs012.sha256"]
    tensors, meta = load_checkpoint(tmp_path / "ship" / "unet_acs012")
    assert set(tensors) == {"ema.w"} and meta["step"] == 5
