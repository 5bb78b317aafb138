"""Hostile inputs of ``diffrecon reconstruct``, as a table: each case builds its input files in a
fresh folder, runs ``diffrecon.cli.main`` in-process and checks the exit status, one stderr line
naming the file or option, no traceback, and no output file after a failure."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffrecon.cli import main

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "weights"


# ------------------------------------------------------------------------------- input builders
def mri(d: Path, coils: int = 2, slices: int = 2, n: int = 16) -> Path:
    """A tiny fully sampled fastMRI-layout file (multi-coil unless coils = 0)."""
    rng = np.random.default_rng(0)
    shape = (slices, coils, n, n) if coils else (slices, n, n)
    k = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    img = np.abs(np.fft.ifft2(k)).reshape(slices, -1, n, n).sum(1).astype(np.float32)
    path = d / "scan.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = k
        f["reconstruction_rss" if coils else "reconstruction_esc"] = img
    return path


def singlecoil(d):
    return mri(d, coils=0)


def ct(d: Path, slices: int = 8, n: int = 16, dtype=np.float32, name="vol.npy", fill=None) -> Path:
    vol = np.zeros((slices, n, n), dtype)
    vol[:, 4:12, 4:12] = 0.5
    if fill is not None:
        vol.flat[0] = fill
    path = d / name
    np.save(path, vol)
    return path


def sino(d: Path, angles: bool = True) -> Path:
    path = d / "sino.h5"
    with h5py.File(path, "w") as f:
        f["sinogram"] = np.ones((2, 8, 23), np.float32)
        if angles:
            f["angles"] = np.linspace(0, np.pi, 8, endpoint=False)
    return path


def text_h5(d):
    (d / "notes.h5").write_text("not HDF5 at all\n")
    return d / "notes.h5"


def empty_file(d):
    (d / "empty.h5").write_bytes(b"")
    return d / "empty.h5"


def h5_without_kspace(d):
    with h5py.File(d / "img.h5", "w") as f:
        f["reconstruction_rss"] = np.ones((1, 8, 8), np.float32)
    return d / "img.h5"


def kspace_real(d):
    with h5py.File(d / "real.h5", "w") as f:
        f["kspace"] = np.ones((1, 2, 8, 8), np.float32)
    return d / "real.h5"


def npy_for_mri(d):
    np.save(d / "scan.npy", np.ones((2, 16, 16), np.complex64))
    return d / "scan.npy"


def unreadable(d):
    path = mri(d)
    path.chmod(0)
    return path


def folder(d):
    (d / "dir.h5").mkdir()
    return d / "dir.h5"


def weights_copy(d: Path, name: str, corrupt: str | None = None) -> Path:
    """A copy of shipped weights (+ sidecar, + .sha256) in ``d``, optionally damaged."""
    dst = d / f"{name}.safetensors"
    for suffix in (".safetensors", ".json", ".sha256"):
        shutil.copyfile(WEIGHTS / f"{name}{suffix}", dst.with_suffix(suffix))
    if corrupt == "flip":            # one byte changed: the .sha256 no longer matches
        data = bytearray(dst.read_bytes())
        data[-1] ^= 0xFF
        dst.write_bytes(bytes(data))
    elif corrupt == "truncate":      # cut short, no checksum to catch it: the header must
        dst.write_bytes(dst.read_bytes()[:4096])
        dst.with_suffix(".sha256").unlink()
    elif corrupt == "garbage":
        dst.write_bytes(b"\x00\x01 garbage " * 50)
        dst.with_suffix(".sha256").unlink()
    elif corrupt == "no_sidecar":
        dst.with_suffix(".json").unlink()
    return dst


# ------------------------------------------------------------------------------------- the table
MRI = ["--modality", "mri", "--method", "zero_filled"]
TV = ["--modality", "mri", "--method", "tv", "--iterations", "5"]
SCORE = ["--modality", "mri", "--method", "score", "--steps", "2"]
FBP = ["--modality", "ct", "--method", "fbp", "--setting", "sv8"]
DDS = ["--modality", "ct", "--method", "dds_2d", "--ddim-steps", "2", "--setting", "sv8"]
OUT = "{d}/out/recon.h5"

# (name, input builder, argv after the input ({d}: the case folder), exit status, fragment)
CASES = [
    # numeric options out of range (the config schema's bounds)
    ("iterations_0", mri, [*TV[:-1], "0"], 2, "--iterations"),
    ("lam_negative", mri, [*TV, "--lam", "-1"], 2, "--lam"),
    ("steps_0", mri, [*MRI, "--steps", "0"], 2, "--steps"),
    ("samples_0", mri, [*MRI, "--samples", "0"], 2, "--samples"),
    ("snr_negative", mri, [*MRI, "--snr", "-1"], 2, "--snr"),
    ("snr_zero", mri, [*MRI, "--snr", "0"], 2, "--snr"),
    ("central_slices_0", mri, [*MRI, "--central-slices", "0"], 2, "--central-slices"),
    ("central_slices_negative", mri, [*MRI, "--central-slices", "-1"], 2, "--central-slices"),
    ("acceleration_below_1", mri, [*MRI, "--acceleration", "0.5"], 2, "--acceleration"),
    ("acceleration_huge", mri, [*MRI, "--acceleration", "1000"], 2, "--acceleration"),
    ("acs_fraction_above_1", mri, [*MRI, "--acs-fraction", "1.5"], 2, "--acs-fraction"),
    ("acs_fraction_negative", mri, [*MRI, "--acs-fraction", "-0.1"], 2, "--acs-fraction"),
    ("threads_0", ct, [*FBP, "--threads", "0"], 2, "--threads"),
    ("ddim_steps_0", ct, [*FBP, "--ddim-steps", "0"], 2, "--ddim-steps"),
    ("seed_negative", mri, [*MRI, "--seed", "-3"], 2, "--seed"),
    ("iterations_not_int", mri, [*TV[:-1], "many"], 2, "--iterations"),
    # names
    ("unknown_method", mri, ["--modality", "mri", "--method", "magic"], 2, "magic"),
    ("unknown_modality", mri, ["--modality", "pet", "--method", "fbp"], 2, "--modality"),
    ("ct_method_for_mri", mri, ["--modality", "mri", "--method", "fbp"], 2, "fbp"),
    ("mri_method_for_ct", ct, ["--modality", "ct", "--method", "tv"], 2, "tv"),
    ("unknown_mask", mri, [*MRI, "--mask", "spiral"], 2, "--mask"),
    ("unknown_coil_mode", mri, [*MRI, "--coil-mode", "fourcoil"], 2, "--coil-mode"),
    ("multicoil_for_singlecoil_file", singlecoil, [*MRI, "--coil-mode", "multicoil"], 2, "--coil-mode multicoil"),
    ("unknown_ct_setting", ct, [*FBP[:-1], "xv8"], 2, "--setting"),
    ("preview_not_png", mri, [*MRI, "--preview", "{d}/p.jpgx"], 2, "--preview"),
    # input files
    ("missing_input", lambda d: d / "absent.h5", MRI, 2, "absent.h5"),
    ("input_is_folder", folder, MRI, 2, "dir.h5"),
    ("unreadable_input", unreadable, MRI, 2, "scan.h5"),
    ("empty_input", empty_file, MRI, 2, "empty.h5"),
    ("text_named_h5_mri", text_h5, MRI, 2, "notes.h5"),
    ("text_named_h5_ct", text_h5, FBP, 2, "notes.h5"),
    ("h5_without_kspace", h5_without_kspace, MRI, 2, "kspace"),
    ("real_kspace", kspace_real, MRI, 2, "real.h5"),
    ("npy_for_mri", npy_for_mri, MRI, 2, "fastMRI-layout .h5"),
    ("ct_npy_rank_2", lambda d: (np.save(d / "r2.npy", np.ones((16, 16), np.float32)), d / "r2.npy")[1], FBP, 2,
     "r2.npy"),
    ("ct_npy_rank_4", lambda d: (np.save(d / "r4.npy", np.ones((1, 2, 16, 16), np.float32)), d / "r4.npy")[1], FBP,
     2, "r4.npy"),
    ("ct_complex_volume", lambda d: ct(d, dtype=np.complex64, name="cplx.npy"), FBP, 2, "cplx.npy"),
    ("ct_nan_volume", lambda d: ct(d, name="nan.npy", fill=np.nan), FBP, 2, "nan.npy"),
    ("ct_pickled_npy", lambda d: (np.save(d / "obj.npy", np.array([{"a": 1}], dtype=object)), d / "obj.npy")[1],
     FBP, 2, "obj.npy"),
    ("ct_h5_without_volume", h5_without_kspace, FBP, 2, "volume"),
    ("sinogram_without_angles", lambda d: sino(d, angles=False), [*FBP[:4], "--sinogram"], 2, "angles"),
    ("sinogram_file_is_volume", ct, [*FBP[:4], "--sinogram"], 2, "vol.npy"),
    # a 2-slice volume reconstructs; the 3-D SSIM cannot be computed and the summary says so
    ("ct_two_slices", lambda d: ct(d, slices=2), FBP, 0, "not computed"),
    # outputs
    ("output_is_input", mri, [*MRI, "-o", "{d}/scan.h5"], 2, "--output"),
    ("output_is_input_other_spelling", mri, [*MRI, "-o", "{d}/./out/../scan.h5"], 2, "--output"),
    ("output_is_input_symlink", lambda d: (os.symlink(mri(d), d / "link.h5"), d / "scan.h5")[1],
     [*MRI, "-o", "{d}/link.h5"], 2, "--output"),
    ("output_under_a_file", mri, [*MRI, "-o", "{d}/scan.h5/recon.h5"], 2, "--output"),
    ("output_is_folder", lambda d: ((d / "outdir").mkdir(), mri(d))[1], [*MRI, "-o", "{d}/outdir"], 2, "--output"),
    ("output_in_missing_folder_is_created", mri, [*MRI, "-o", "{d}/new/deeper/recon.h5"], 0, '"method"'),
    ("preview_is_input", mri, [*MRI, "--preview", "{d}/scan.h5"], 2, "--preview"),
    # masks
    ("mask_file_wrong_shape", mri, [*MRI, "--mask-file", "{d}/m.npy"], 2, "m.npy"),
    ("mask_file_missing", mri, [*MRI, "--mask-file", "{d}/nomask.npy"], 2, "--mask-file"),
    # models
    ("model_missing_for_learned", mri, SCORE, 2, "--model"),
    ("model_file_missing", mri, [*SCORE, "--model", "{d}/none.safetensors"], 2, "none.safetensors"),
    ("model_checksum_mismatch", lambda d: (weights_copy(d, "score_mri_demo_brain", "flip"), mri(d))[1],
     [*SCORE, "--model", "{d}/score_mri_demo_brain.safetensors"], 2, "score_mri_demo_brain.sha256"),
    ("model_truncated", lambda d: (weights_copy(d, "score_mri_demo_brain", "truncate"), mri(d))[1],
     [*SCORE, "--model", "{d}/score_mri_demo_brain.safetensors"], 2, "--model"),
    ("model_garbage", lambda d: (weights_copy(d, "score_mri_demo_brain", "garbage"), mri(d))[1],
     [*SCORE, "--model", "{d}/score_mri_demo_brain.safetensors"], 2, "--model"),
    ("model_without_sidecar", lambda d: (weights_copy(d, "score_mri_demo_brain", "no_sidecar"), mri(d))[1],
     [*SCORE, "--model", "{d}/score_mri_demo_brain.safetensors"], 2, "score_mri_demo_brain.json"),
    ("ct_prior_for_mri_method", lambda d: (weights_copy(d, "ct_slice_demo_thorax"), mri(d))[1],
     [*SCORE, "--model", "{d}/ct_slice_demo_thorax.safetensors"], 2, "ct_slice"),
    ("mri_prior_for_ct_method", lambda d: (weights_copy(d, "score_mri_demo_brain"), ct(d))[1],
     [*DDS, "--model", "{d}/score_mri_demo_brain.safetensors"], 2, "score_mri"),
]


def _build(name, builder, d):
    src = builder(d)
    if name == "mask_file_wrong_shape":
        np.save(d / "m.npy", np.ones(7, np.float32))
    return src


@pytest.mark.parametrize("name,builder,argv,code,fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input(capsys, tmp_path, name, builder, argv, code, fragment):
    if name == "unreadable_input" and os.geteuid() == 0:
        pytest.skip("root reads any file")
    src = _build(name, builder, tmp_path)
    argv = [a.format(d=tmp_path) for a in argv]
    if "-o" not in argv:
        argv += ["-o", OUT.format(d=tmp_path)]
    output = Path(argv[argv.index("-o") + 1])
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    try:
        rc = main(["reconstruct", str(src), *argv])
    except SystemExit as exc:           # argparse: choices / types
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == code, (rc, err)
    assert "Traceback" not in err and "Traceback" not in out
    if code == 0:
        assert fragment in out, out
        assert output.is_file()
        return
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffrecon: error:"), lines[0]
    assert fragment in lines[0], lines[0]
    assert out.strip() == ""
    # nothing written: no output, no preview, no part files; existing files untouched
    if not (output.exists() and output in before):
        assert not output.exists() or output.is_dir()
    assert not list(tmp_path.rglob("*.part*"))
    assert not (tmp_path / "p.jpgx").exists()
    for p, mtime in before.items():
        assert p.exists() and p.stat().st_mtime_ns == mtime, p


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
