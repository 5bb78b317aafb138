"""Raw fastMRI files → the preprocessed store; prospective files through measure and the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from diffrecon.data.datasets import prepare_dataset
from diffrecon.data.fastmri import DataFormatError, header_matrices, read_volume, write_volume
from diffrecon.data.fastmri_raw import kept_slices, preprocess_file
from diffrecon.physics.fft import fft2c

from fastmri_mock import HEADER, W, centre, write_raw


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw")
    out = {"dir": d}
    out["multi"] = (d / "file_multi.h5", write_raw(d / "file_multi.h5", n_slices=3, seed=1))
    out["single"] = (d / "file_single.h5", write_raw(d / "file_single.h5", n_slices=3, multicoil=False, seed=2))
    out["pro"] = (d / "file_pro.h5", write_raw(d / "file_pro.h5", n_slices=2, prospective=True, seed=3))
    return out


def test_header_matrices_of_a_fastmri_header():
    m = header_matrices(HEADER.format(H=640, W=368, h=320, w=320).encode())
    assert m == {"encoded": (640, 368), "recon": (320, 320)}


def test_kept_slices_rules():
    assert list(kept_slices(5, [1, 2])) == [1, 2]
    assert list(kept_slices(8, 0.25)) == [2, 3, 4, 5]
    assert list(kept_slices(3, [0, 0])) == [0, 1, 2]
    assert len(kept_slices(2, [1, 1])) == 0
    with pytest.raises(ValueError):
        kept_slices(4, 0.5)


def test_multicoil_crop_kspace_and_target(raw, tmp_path):
    src, made = raw["multi"]
    rec = preprocess_file(src, tmp_path / "s.h5", drop_edge_slices=[1, 0])
    assert rec["slices"] == [1, 2] and rec["grid"] == [320, 320] and rec["source_grid"] == [640, 368]
    assert rec["coils"] == 15 and rec["target_max_rel_error"] < 1e-4
    vol = read_volume(tmp_path / "s.h5")
    assert vol.kspace.shape == (2, 15, 320, 320) and vol.target.shape == (2, 320, 320)
    expected = fft2c(torch.from_numpy(np.ascontiguousarray(made["crop"][1:]))).numpy()
    np.testing.assert_allclose(vol.kspace, expected, atol=1e-3 * np.abs(expected).max())
    np.testing.assert_allclose(vol.target, made["target"][1:], rtol=1e-5)
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["kspace"].chunks == (1, 15, 320, 320)
        assert f["reconstruction_rss"].chunks == (1, 320, 320)
        assert list(f.attrs["source_slices"]) == [1, 2] and f.attrs["source"] == src.name
        assert header_matrices(f["ismrmrd_header"][()])["recon"] == (320, 320)


def test_singlecoil_file(raw, tmp_path):
    src, made = raw["single"]
    rec = preprocess_file(src, tmp_path / "s.h5")
    vol = read_volume(tmp_path / "s.h5")
    assert not vol.multicoil and vol.kspace.shape == (3, 1, 320, 320) and rec["target"] == "reconstruction_esc"
    np.testing.assert_allclose(vol.target, made["target"], rtol=1e-5)


def test_inconsistent_target_is_rejected_naming_the_file(tmp_path):
    src = tmp_path / "bad_target.h5"
    write_raw(src, n_slices=2, n_coils=4, target_scale=1.5)
    with pytest.raises(DataFormatError, match="bad_target.h5: slice 0: target reconstruction_rss differs"):
        preprocess_file(src, tmp_path / "out.h5")
    assert not list(tmp_path.glob("out.h5*"))


def test_edge_rule_leaving_nothing_is_an_error(tmp_path):
    src = tmp_path / "two.h5"
    write_raw(src, n_slices=2, n_coils=2)
    with pytest.raises(DataFormatError, match="two.h5: drop_edge_slices"):
        preprocess_file(src, tmp_path / "out.h5", drop_edge_slices=[1, 1])
    assert not list(tmp_path.glob("out.h5*"))


def test_prepare_dataset_writes_store_and_record(raw, tmp_path):
    d = raw["dir"]
    cfg = {"modality": "mri", "source": "fastmri", "drop_edge_slices": [1, 1], "fingerprint": "sha256",
           "files": {"train": str(d / "file_single.h5"), "test": str(d / "file_multi.h5")}}
    m = prepare_dataset("knee", cfg, tmp_path / "knee")
    assert m["splits"]["test"] == [str(tmp_path / "knee" / "test" / "file_multi.h5")]
    rec = m["preprocessing"]
    assert rec["drop_edge_slices"] == [1, 1] and "maximum of its target" in rec["normalisation"]
    test = rec["files"]["test"][0]
    assert test["slices"] == [1] and test["size"] == (d / "file_multi.h5").stat().st_size and len(test["sha256"]) == 64
    assert set(rec["versions"]) >= {"numpy", "h5py", "torch"}
    on_disk = json.loads((tmp_path / "knee" / "manifest.json").read_text())
    assert on_disk["preprocessing"]["files"]["train"][0]["slices"] == [1]


def test_prospective_file_in_a_retrospective_dataset_is_an_error(raw, tmp_path):
    cfg = {"modality": "mri", "source": "fastmri", "files": {"test": str(raw["pro"][0])}}
    with pytest.raises(DataFormatError, match="file_pro.h5: has a 'mask' and no target.*prospective: true"):
        prepare_dataset("p", cfg, tmp_path / "p")
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_prospective_store_measure_and_reconstruct(raw, tmp_path):
    from diffrecon import io
    from diffrecon.stages.measure import measure_prospective
    from diffrecon.stages.reconstruct import reconstruct

    src, made = raw["pro"]
    m = prepare_dataset("pro", {"modality": "mri", "source": "fastmri", "prospective": True,
                                "files": {"test": str(src)}}, tmp_path / "pro")
    vol = read_volume(m["splits"]["test"][0])
    assert vol.prospective and vol.kspace.shape == (2, 15, 320, W)
    np.testing.assert_array_equal(vol.mask, made["mask"])
    meas = tmp_path / "measurements.h5"
    measure_prospective(m, meas, "multicoil")
    assert io.read_attrs(meas)["setting"] == "prospective-multicoil"
    own = io.read_case_masks(meas)["file_pro"]
    np.testing.assert_array_equal(own[0], made["mask"])
    assert (own == own[:1]).all()
    reconstruct(meas, "zero_filled", tmp_path / "recon.h5")
    rec = io.read_cases(tmp_path / "recon.h5", "reconstruction")["file_pro"]
    assert rec.shape == (2, 320, W) and np.isfinite(rec).all()


def test_demo_writer_is_chunked_per_slice(tmp_path):
    write_volume(tmp_path / "v.h5", np.ones((3, 2, 8, 8), np.complex64), np.ones((3, 8, 8), np.float32))
    with h5py.File(tmp_path / "v.h5") as f:
        assert f["kspace"].chunks == (1, 2, 8, 8) and f["reconstruction_rss"].chunks == (1, 8, 8)


# --------------------------------------------------------------------------------------- CLI
def _cli(*args):
    from diffrecon.cli import main

    return main([str(a) for a in args])


def test_cli_prospective_file_uses_its_own_mask(raw, tmp_path, capsys):
    src, _ = raw["pro"]
    out = tmp_path / "r.h5"
    assert _cli("reconstruct", src, "--modality", "mri", "--method", "zero_filled", "-o", out,
                "--central-slices", "1", "--preview", tmp_path / "p.png") == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prospective"] and "metrics" not in summary and summary["shape"] == [1, 320, W]
    assert summary["mask"]["kind"] == "file" and (tmp_path / "p.png").is_file()


def test_cli_mask_file_of_the_wrong_shape_is_one_line(raw, tmp_path, capsys):
    src, _ = raw["pro"]
    bad = tmp_path / "mask.npy"
    np.save(bad, np.ones(320, np.float32))
    out = tmp_path / "r.h5"
    assert _cli("reconstruct", src, "--modality", "mri", "--method", "zero_filled", "-o", out,
                "--mask-file", bad) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "mask.npy: mask shape (320,)" in err
    assert not out.exists() and not list(tmp_path.glob("r.h5*"))


def test_cli_mask_file_overrides_and_retrospective_keeps_metrics(raw, tmp_path, capsys):
    from diffrecon.physics.masks import fastmri_columns

    mfile = tmp_path / "m.h5"
    with h5py.File(mfile, "w") as f:
        f["mask"] = fastmri_columns("equispaced", 320, 4, 0.08, 5)
    src, _ = raw["multi"]
    assert _cli("reconstruct", src, "--modality", "mri", "--method", "zero_filled", "--coil-mode", "magnitude",
                "-o", tmp_path / "r.h5", "--central-slices", "1", "--mask-file", mfile) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"]["image/psnr"] > 10


def test_cli_bad_raw_file_is_one_line(tmp_path, capsys):
    src = tmp_path / "bad_mask.h5"
    with h5py.File(src, "w") as f:
        f["kspace"] = np.ones((1, 2, 16, 16), np.complex64)
        f["mask"] = np.ones(10, bool)
    assert _cli("reconstruct", src, "--modality", "mri", "--method", "zero_filled", "-o", tmp_path / "r.h5") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bad_mask.h5: 'mask' has 10 entries, k-space has 16 columns" in err
    assert not (tmp_path / "r.h5").exists()


def test_prospective_figure(raw, tmp_path):
    from diffrecon.stages.measure import measure_prospective
    from diffrecon.stages.reconstruct import reconstruct
    from diffrecon.stages.report import prospective_figure

    m = prepare_dataset("pro", {"modality": "mri", "source": "fastmri", "prospective": True,
                                "files": {"test": str(raw["pro"][0])}}, tmp_path / "pro")
    measure_prospective(m, tmp_path / "meas.h5", "multicoil", central_slices=1)
    reconstruct(tmp_path / "meas.h5", "zero_filled", tmp_path / "zf.h5")
    prospective_figure(tmp_path / "meas.h5", {"zero_filled": tmp_path / "zf.h5"}, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 1000
