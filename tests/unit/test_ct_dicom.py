"""CT from DICOM trees and NIfTI files into the preprocessed store (diffrecon.data.dicom, nifti, ct_store).

The DICOM series are built here from pydicom's real CT test slice (CT_small.dcm, 128 x 128,
HU = stored - 1024, pixel 0.661468 mm): copies with new positions, UIDs and shuffled file
names, a per-slice marker block written into the pixel data, and bad cases next to them.
Expected values come from that construction, never from a run of the code under test.
"""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import JPEGLSLossless, generate_uid  # noqa: E402

from diffrecon.data.ct_store import assign_splits  # noqa: E402
from diffrecon.data.ct_volumes import read_ct_volume  # noqa: E402
from diffrecon.data.datasets import prepare_dataset  # noqa: E402
from diffrecon.data.dicom import read_series_tree  # noqa: E402
from diffrecon.data.fastmri import DataFormatError  # noqa: E402
from diffrecon.data.nifti import load_nifti  # noqa: E402

CT_SMALL = get_testdata_file("CT_small.dcm", download=False)
RTDOSE = get_testdata_file("rtdose.dcm", download=False)
PIXEL = 0.661468
WINDOW = (-1024.0, 3072.0)                  # stored value v -> HU v - 1024 -> (v) / 4096
MARK = 16                                   # marker block [0:16, 0:16], stored value 1000 + 100 * slice


def _write_series(root: Path, n: int, *, patient="P1", dz=1.25, z0=-75.7, positions=None,
                  orientation=(1, 0, 0, 0, 1, 0), edit=None, series_uid=None) -> str:
    """Write ``n`` slices of one series with shuffled names; slice i (in position order) carries marker i."""
    src = pydicom.dcmread(CT_SMALL)
    uid = series_uid or generate_uid()
    zs = list(positions) if positions is not None else [z0 + i * dz for i in range(n)]
    root.mkdir(parents=True, exist_ok=True)
    for i, z in enumerate(zs):
        ds = copy.deepcopy(src)
        x, y, _ = (float(v) for v in src.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, float(z)]                 # z: patient (LPS) z of slice i
        ds.ImageOrientationPatient = list(map(float, orientation))
        ds.InstanceNumber = n - i                                  # reversed: order must not come from it
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = uid
        ds.PatientID = patient
        arr = ds.pixel_array.copy()
        arr[:MARK, :MARK] = 1000 + 100 * i
        ds.PixelData = arr.tobytes()
        if edit:
            edit(i, ds)
        ds.save_as(root / f"{uuid.uuid4().hex}.dcm")
    return uid


def _resized_to(ds, size):
    arr = ds.pixel_array[:size, :size].copy()
    ds.Rows, ds.Columns = size, size
    ds.PixelData = arr.tobytes()


def _good_tree(root: Path) -> dict:
    """Two patients' good series, plus files that must be skipped with a note."""
    uids = {"P1": _write_series(root / "P1", 6, patient="P1"), "P2": _write_series(root / "P2" / "a", 4, patient="P2", dz=2.5)}
    # localiser in P1's study
    _write_series(root / "P1" / "scout", 1, patient="P1", edit=lambda i, ds: setattr(ds, "ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"]))
    # a sagittal reformat: not axial
    _write_series(root / "P1" / "sag", 3, patient="P1", orientation=(0, 1, 0, 0, 0, -1))
    (root / "P1" / "README.txt").write_text("not dicom")
    (root / "P2" / "dose.dcm").write_bytes(Path(RTDOSE).read_bytes())
    return uids


def _one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in {msg!r}"


def dicom_cfg(root, **kw):
    cfg = {"modality": "ct", "source": "dicom", "root": str(root), "splits": {"test": ["P1"], "train": ["*"]},
           "window": list(WINDOW), "size": 64, "spacing_tolerance": 0.1}
    cfg.update(kw)
    return cfg


# =========================================================================== the good series
def test_good_tree_goes_into_the_store_in_position_order(tmp_path):
    root = tmp_path / "dicom"
    uids = _good_tree(root)
    out = tmp_path / "results" / "data" / "ct" / "aapm"
    manifest = prepare_dataset("aapm", dicom_cfg(root), out)

    assert [len(v) for v in manifest["splits"].values()] == [1, 1]
    test_file = Path(manifest["splits"]["test"][0])
    assert test_file.parent == out / "test"
    vol = read_ct_volume(test_file)
    assert vol.shape == (6, 64, 64)
    # order: marker block (resized 16 -> 8 px) holds 1000 + 100 i stored, i.e. (1000 + 100 i) / 4096
    expected = (1000 + 100 * np.arange(6)) / 4096.0
    np.testing.assert_allclose(vol[:, 3, 3], expected, atol=1e-4)
    with h5py.File(test_file) as f:
        assert f["volume"].chunks == (1, 64, 64)
        np.testing.assert_allclose(f.attrs["spacing_mm"], [1.25, PIXEL * 2, PIXEL * 2], rtol=1e-6)
        assert f.attrs["source_series_uid"] == uids["P1"]
        np.testing.assert_array_equal(f.attrs["hu_window"], WINDOW)
        np.testing.assert_array_equal(f.attrs["resized_from"], [128, 128])
        files = [s.decode() if isinstance(s, bytes) else s for s in f["source_files"][()]]
    # the recorded files are in slice order: their positions increase
    zs = [float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in files]
    assert zs == sorted(zs) and len(zs) == 6

    with h5py.File(manifest["splits"]["train"][0]) as f:
        assert f.attrs["spacing_mm"][0] == pytest.approx(2.5)
        assert f.attrs["source_series_uid"] == uids["P2"]

    on_disk = json.loads((out / "manifest.json").read_text())
    pre = on_disk["preprocessing"]
    assert pre["window"] == list(WINDOW) and pre["target_size"] == 64
    rec = pre["splits"]["test"][0]
    assert rec["patient"] == "P1" and rec["series_uid"] == uids["P1"] and rec["n_slices"] == 6
    assert len(rec["files"]) == 6 and all(len(f["sha256"]) == 64 for f in rec["files"])
    assert pre["packages"]["pydicom"] == pydicom.__version__
    skipped = "\n".join(pre["skipped"])
    for what in ("README.txt", "dose.dcm", "localiser", "not axial"):
        assert what in skipped, what
    assert json.loads((out / "splits.json").read_text())["train"][0]["patient"] == "P2"
    assert (out / "splits.csv").read_text().splitlines()[0] == "split,patient,series_uid,n_slices,n_files,output"
    assert not list(out.glob(".staging-*"))


def test_window_scaling_without_resize_is_exact(tmp_path):
    root = tmp_path / "d"
    _write_series(root, 3)
    (series,), _ = read_series_tree(root)
    from diffrecon.data.dicom import load_series

    vol, spacing = load_series(series, window=(-200.0, 300.0), size=None)
    stored = pydicom.dcmread(CT_SMALL).pixel_array.astype(np.float64)
    expected = np.clip((stored - 1024.0 + 200.0) / 500.0, 0, 1)
    np.testing.assert_allclose(vol[1, MARK:, MARK:], expected[MARK:, MARK:], atol=1e-6)
    assert spacing == pytest.approx((1.25, PIXEL, PIXEL))


def test_resize_is_antialiased_and_keeps_the_mean(tmp_path):
    root = tmp_path / "d"
    _write_series(root, 2)
    (series,), _ = read_series_tree(root)
    from diffrecon.data.dicom import load_series

    full, _ = load_series(series, WINDOW, size=None)
    small, spacing = load_series(series, WINDOW, size=32)
    assert small.shape == (2, 32, 32) and small.min() >= 0 and small.max() <= 1
    assert small.mean() == pytest.approx(full.mean(), abs=2e-3)
    # anti-aliased: each pixel near the 4 x 4 block average, not a point sample
    blocks = full.reshape(2, 32, 4, 32, 4).mean(axis=(2, 4))
    assert np.abs(small - blocks).mean() < 0.01
    assert spacing[1] == pytest.approx(PIXEL * 4)


def test_flipped_cosines_are_ordered_by_the_normal_and_laid_out_canonically(tmp_path):
    root = tmp_path / "d"
    # rows run towards patient right: normal = (-1,0,0) x (0,1,0) = (0,0,-1)
    _write_series(root, 4, orientation=(-1, 0, 0, 0, 1, 0), positions=[10.0, 11.0, 12.0, 13.0])
    (series,), _ = read_series_tree(root)
    from diffrecon.data.dicom import load_series

    vol, spacing = load_series(series, WINDOW, size=None)
    assert spacing[0] == pytest.approx(1.0)
    # slice 0 = lowest patient z = marker 0; marker block moved to the top right by the column flip
    np.testing.assert_allclose(vol[:, 3, -4], (1000 + 100 * np.arange(4)) / 4096.0, atol=1e-6)


# =========================================================================== bad series
def _gap(root):
    return _write_series(root, 5, positions=[0.0, 1.0, 2.0, 4.0, 5.0])


def _dup(root):
    return _write_series(root, 4, positions=[0.0, 1.0, 1.0, 2.0])


def _irregular(root):
    return _write_series(root, 5, positions=[0.0, 1.0, 2.0, 3.4, 4.4])


def _mixed_size(root):
    return _write_series(root, 4, edit=lambda i, ds: _resized_to(ds, 64) if i == 2 else None)


def _mixed_orientation(root):
    tilt = [1.0, 0.0, 0.0, 0.0, 0.995, 0.0998749]
    return _write_series(root, 4, edit=lambda i, ds: setattr(ds, "ImageOrientationPatient", tilt) if i == 1 else None)


def _compressed(root):
    from pydicom.encaps import encapsulate

    def edit(i, ds):
        ds.file_meta.TransferSyntaxUID = JPEGLSLossless
        ds.PixelData = encapsulate([ds.PixelData])
    return _write_series(root, 3, edit=edit)


@pytest.mark.parametrize("make, needles", [
    (_gap, ["missing slice", "2.000 mm"]),
    (_dup, ["duplicate slice position", "1.000"]),
    (_irregular, ["irregular spacing", "1.400"]),
    (_mixed_size, ["mixed slice sizes", "(64, 64)"]),
    (_mixed_orientation, ["mixed orientations"]),
    (_compressed, ["JPEG-LS", "no decoder"]),
], ids=["gap", "duplicate", "irregular", "mixed-size", "mixed-orientation", "compressed"])
def test_bad_series_fails_with_one_line_and_writes_nothing(tmp_path, make, needles):
    root = tmp_path / "dicom"
    _write_series(root / "P1", 4, patient="P1")            # a good series first
    uid = make(root / "P2")
    # give the bad series its own patient
    for p in (root / "P2").glob("*.dcm"):
        ds = pydicom.dcmread(p)
        ds.PatientID = "P2"
        ds.save_as(p)
    out = tmp_path / "out"
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset("x", dicom_cfg(root), out)
    _one_line(exc, f"series {uid}", *needles)
    assert ".dcm" in str(exc.value)                        # names a file
    assert not (out / "manifest.json").exists()
    assert not list(out.rglob("*.h5")) and not list(out.rglob("*.part"))


def test_bad_series_can_be_skipped_and_is_recorded(tmp_path):
    root = tmp_path / "dicom"
    _write_series(root / "P1", 4, patient="P1")
    _write_series(root / "P3", 4, patient="P3")
    uid = _write_series(root / "P2", 3, patient="P2", positions=[0.0, 1.0, 3.0])
    manifest = prepare_dataset("x", dicom_cfg(root, skip_bad_series=True), tmp_path / "out")
    assert len(manifest["splits"]["train"]) == 1            # P3 only
    assert any(uid in s and "missing slice" in s for s in manifest["preprocessing"]["skipped"])


def test_a_failed_rebuild_keeps_the_previous_store(tmp_path):
    root = tmp_path / "dicom"
    _write_series(root / "P1", 4, patient="P1")
    _write_series(root / "P2", 4, patient="P2")
    out = tmp_path / "out"
    first = prepare_dataset("x", dicom_cfg(root), out)
    _write_series(root / "P4", 3, patient="P4", positions=[0.0, 0.0, 1.0])
    with pytest.raises(DataFormatError):
        prepare_dataset("x", dicom_cfg(root), out)
    assert all(Path(p).is_file() for ps in first["splits"].values() for p in ps)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "splits.csv", "splits.json", "test", "train"]


def test_splits_by_patient():
    assign = assign_splits(["L067", "L096", "L109"], {"test": ["L067"], "train": ["*"]})
    assert assign == {"L067": "test", "L096": "train", "L109": "train"}
    assign = assign_splits(["A1", "A2", "B1"], {"train": ["*"], "test": ["A2"], "val": ["B*"]})
    assert assign == {"A1": "train", "A2": "test", "B1": "train"}      # first matching pattern wins
    with pytest.raises(DataFormatError, match="L067 not found"):
        assign_splits(["L096"], {"test": ["L067"], "train": ["*"]})
    with pytest.raises(DataFormatError, match="both"):
        assign_splits(["L096"], {"test": ["L096"], "train": ["L096"]})


def test_empty_split_and_missing_root_are_one_line_errors(tmp_path):
    root = tmp_path / "dicom"
    _write_series(root / "P1", 3, patient="P1")
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset("x", dicom_cfg(root), tmp_path / "out")
    _one_line(exc, "splits.train", "no series")
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset("x", dicom_cfg(tmp_path / "nowhere"), tmp_path / "out")
    _one_line(exc, "nowhere", "not a directory")


def test_demo_store_is_chunked_per_slice(tmp_path):
    cfg = {"modality": "ct", "source": "demo", "size": 32, "slices": 27, "volumes": {"test": 1}}
    manifest = prepare_dataset("demo_thorax", cfg, tmp_path)
    with h5py.File(manifest["splits"]["test"][0]) as f:
        assert f["volume"].chunks == (1, 32, 32)


# =========================================================================== NIfTI
def test_nifti_is_reoriented_to_the_canonical_axial_layout(tmp_path):
    Z, Y, X = 5, 6, 6
    dz, dy, dx = 2.0, 0.7, 0.5
    V = np.arange(Z * Y * X, dtype=np.float64).reshape(Z, Y, X)      # wanted: (inferior->superior, A->P, R->L)
    # RAS+ array D[i, j, k] (i -> Right, j -> Anterior, k -> Superior)
    D = np.transpose(V[:, ::-1, ::-1], (2, 1, 0))
    # stored with voxel axes (a, b, c) = (I, R, A): a runs superior -> inferior
    A = np.transpose(D, (2, 0, 1))[::-1]
    affine = np.array([[0, dx, 0, 0], [0, 0, dy, 0], [-dz, 0, 0, (Z - 1) * dz], [0, 0, 0, 1]], dtype=float)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(A.astype(np.float32), affine), str(path))
    vol, spacing = load_nifti(path, window=(0.0, float(V.max())), size=None)
    np.testing.assert_allclose(vol, V / V.max(), atol=1e-6)
    assert spacing == pytest.approx((dz, dy, dx))


def test_nifti_real_mr_with_minmax_and_resize(tmp_path):
    import os

    path = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "anatomical.nii")
    img = nib.load(path)
    canon = nib.as_closest_canonical(img)
    vol, spacing = load_nifti(path, normalize="minmax", size=32)
    assert vol.shape == (canon.shape[2], 32, 32)
    assert vol.min() >= 0 and vol.max() <= 1 and vol.max() > 0.5
    zooms = canon.header.get_zooms()
    assert spacing == pytest.approx((zooms[2], zooms[1] * canon.shape[1] / 32, zooms[0] * canon.shape[0] / 32))


def test_nifti_dataset_into_the_store(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        data = np.full((8, 8, 3), 500.0, dtype=np.float32) + 100.0 * np.arange(3, dtype=np.float32)   # z: 500, 600, 700
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), str(tmp_path / split / f"{split}_case.nii.gz"))
    cfg = {"modality": "ct", "source": "nifti", "files": {"train": str(tmp_path / "train" / "*.nii.gz"),
                                                          "test": str(tmp_path / "test" / "*.nii.gz")},
           "window": [0, 1000], "size": 8}
    manifest = prepare_dataset("nii", cfg, tmp_path / "out")
    vol = read_ct_volume(manifest["splits"]["test"][0])
    assert vol.shape == (3, 8, 8)
    np.testing.assert_allclose(vol, np.broadcast_to(np.array([0.5, 0.6, 0.7])[:, None, None], vol.shape), atol=1e-6)
    assert manifest["preprocessing"]["splits"]["test"][0]["spacing_mm"] == [3.0, 1.0, 1.0]


def test_bad_nifti_is_one_line(tmp_path):
    bad = tmp_path / "bad.nii"
    bad.write_text("nope")
    with pytest.raises(DataFormatError) as exc:
        load_nifti(bad)
    _one_line(exc, "bad.nii")


# =========================================================================== config
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["aapm", "lidc"])
def test_paper_configs_read_dicom_trees(name):
    import yaml

    from diffrecon.config import validate_config

    cfg = yaml.safe_load((ROOT / "config" / "paper" / f"{name}.yaml").read_text())
    validate_config(cfg)
    ds = cfg["datasets"][name]
    assert ds["source"] == "dicom" and ds["root"].startswith(f"/data/{name}") and ds["size"] == 256


def test_dicom_config_errors_are_one_line():
    import yaml

    from diffrecon.config import ConfigError, validate_config

    cfg = yaml.safe_load((ROOT / "config" / "paper" / "aapm.yaml").read_text())
    cfg["datasets"]["aapm"]["series_filter"] = {"Protocol": "*"}
    with pytest.raises(ConfigError) as exc:
        validate_config(cfg)
    _one_line(exc, "datasets.aapm.series_filter", "Protocol")
