"""A DICOM CT dataset and a NIfTI volume through snakemake: prepare_dataset -> simulate_ct ->
reconstruct (fbp) -> the CT table."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _series(folder: Path, patient: str, n: int) -> None:
    """``n`` copies of pydicom's CT_small.dcm at 2 mm steps, one series, random file names."""
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    uid = generate_uid()
    folder.mkdir(parents=True)
    for i in range(n):
        ds = copy.deepcopy(src)
        x, y, z = (float(v) for v in src.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.0 * i]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.PatientID, ds.InstanceNumber = uid, patient, i + 1
        ds.save_as(folder / f"{uuid.uuid4().hex}.dcm")


def test_dicom_dataset_to_the_ct_table(tmp_path):
    tree = tmp_path / "dicom"
    _series(tree / "L067", "L067", 8)   # >= 7 slices: the 7 x 7 SSIM window in every view
    _series(tree / "L096", "L096", 8)
    (tree / "notes.txt").write_text("not dicom")
    import nibabel as nib
    import numpy as np

    nii = tmp_path / "nifti"
    nii.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        vol = np.zeros((40, 40, 9), np.float32)                     # (x, y, z): 9 axial slices
        vol[8:32, 10:30, :] = 500.0 + 100.0 * rng.random((24, 20, 9))
        nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.5, 1.0])), nii / f"{split}.nii.gz")
    cfg = {
        "seed": 0, "results_dir": "results",
        "datasets": {"ldct": {"modality": "ct", "source": "dicom", "root": str(tree),
                              "splits": {"test": ["L067"], "train": ["*"]}, "window": [-1024, 3072], "size": 32},
                     "vol": {"modality": "ct", "source": "nifti", "normalize": "minmax", "size": 32,
                             "files": {"train": str(nii / "train.nii.gz"), "test": str(nii / "test.nii.gz")}}},
        "ct": {"datasets": ["ldct", "vol"], "settings": ["sv8"], "methods": ["fbp"], "projector": "linear",
               "max_cases": None, "noise": {"I0": 0, "sigma": 0.0}},
        "figures": {"case_index": 0},
    }
    cfg_path = tmp_path / "ldct.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path), "results/tables/ct_axial.csv", "--configfile", str(cfg_path), "--cores", "2"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    store = tmp_path / "results" / "data" / "ct" / "ldct"
    manifest = json.loads((store / "manifest.json").read_text())
    assert [Path(p).parent.name for p in manifest["splits"]["test"]] == ["test"]
    assert manifest["preprocessing"]["splits"]["test"][0]["patient"] == "L067"
    assert manifest["preprocessing"]["splits"]["test"][0]["spacing_mm"][0] == pytest.approx(2.0)
    assert any("notes.txt" in s for s in manifest["preprocessing"]["skipped"])
    assert (store / "splits.csv").is_file()
    table = pd.read_csv(tmp_path / "results" / "tables" / "ct_axial.csv")
    assert "fbp" in table.to_string().lower()
    metrics = pd.read_csv(tmp_path / "results" / "ct" / "ldct" / "sv8" / "fbp" / "metrics.csv")
    assert len(metrics) == 3                                  # one test volume, three views
    assert metrics["psnr"].between(10, 60).all() and metrics["ssim"].between(0, 1).all()
    assert set(table.dataset) == {"ldct", "vol"}
    nifti_manifest = json.loads((tmp_path / "results" / "data" / "ct" / "vol" / "manifest.json").read_text())
    from diffrecon.data.ct_volumes import read_ct_volume

    stored = read_ct_volume(tmp_path / nifti_manifest["splits"]["test"][0])
    assert stored.shape == (9, 32, 32) and stored.min() >= 0 and stored.max() <= 1
