"""Tests for diffrecon.data: phantom families, the fastMRI layout, CT volume files and dataset preparation.

Expected values are derived independently (numpy FFTs, construction of the inputs, the
documented file layout), never pasted from a run of the code under test.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffrecon.data.ct_volumes import read_ct_volume, read_sinogram, write_ct_volume
from diffrecon.data.datasets import load_manifest, prepare_dataset
from diffrecon.data.fastmri import (
    DataFormatError,
    FastMRIVolume,
    coil_images,
    read_volume,
    write_volume,
)
from diffrecon.data.phantoms import head_volume
from diffrecon.data.thorax import FAMILIES, thorax_volume
from diffrecon.physics.sensitivity import birdcage_maps

TINY_MRI = {"modality": "mri", "source": "demo", "size": 32, "coils": 8, "slices": 2,
            "volumes": {"train": 1, "test": 1}}
TINY_CT = {"modality": "ct", "source": "demo", "size": 32, "slices": 27, "volumes": {"test": 1}}


def _np_ifft2c(k: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2-D DFT over the last two axes, in plain numpy."""
    ax = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=ax), axes=ax, norm="ortho"), axes=ax)


def _crandn(rng, *shape) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _assert_names(exc_info, path) -> None:
    assert Path(path).name in str(exc_info.value), f"message does not name {Path(path).name}: {exc_info.value}"


# =========================================================================== phantoms
PHANTOMS = [
    pytest.param(lambda rng: head_volume(rng, 6, 48), (6, 48, 48), id="head"),
    pytest.param(lambda rng: thorax_volume(rng, 27, 32), (27, 32, 32), id="thorax"),
]


@pytest.mark.parametrize("make, shape", PHANTOMS)
def test_phantom_is_deterministic_for_a_seed(make, shape):
    a = make(np.random.default_rng(7))
    b = make(np.random.default_rng(7))
    c = make(np.random.default_rng(8))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    # a different draw differs substantially, not by a few pixels
    assert np.mean(a != c) > 0.05


@pytest.mark.parametrize("make, shape", PHANTOMS)
def test_phantom_shape_dtype_range_and_content(make, shape):
    v = make(np.random.default_rng(3))
    assert v.shape == shape
    assert v.dtype == np.float32
    assert np.isfinite(v).all()
    assert v.min() >= 0.0 and v.max() <= 1.0
    # non-trivial: the object fills a reasonable part of the field of view, with contrast inside it
    inside = v > 0.05
    assert 0.15 < inside.mean() < 0.85
    assert np.std(v[inside]) > 0.05
    # the corners of the field of view (outside any ellipse of radius <= 1) are background
    assert np.all(v[:, 0, 0] == 0) and np.all(v[:, -1, -1] == 0)


def test_head_volume_is_normalised_to_unit_peak():
    v = head_volume(np.random.default_rng(11), 4, 32)
    assert v.max() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("make, shape", PHANTOMS)
def test_phantom_neighbouring_slices_are_continuous(make, shape):
    v = make(np.random.default_rng(5)).astype(np.float64)
    adjacent = np.abs(np.diff(v, axis=0)).mean()
    shuffled = v.ravel()[np.random.default_rng(0).permutation(v.size)].reshape(v.shape)
    to_shuffled = np.abs(v - shuffled).mean()
    assert adjacent < 0.1 * to_shuffled
    # and much closer to each other than to an independent draw of the same family
    other = make(np.random.default_rng(105)).astype(np.float64)
    assert adjacent < 0.5 * np.abs(v - other).mean()


def test_head_volume_ood_is_a_shifted_family():
    # The ood family narrows the head (x radius * 0.85, y radius * at most 1.05), so for the same
    # rng stream (head radii are drawn first) the head area shrinks by a factor <= 0.85 * 1.05.
    for seed in range(3):
        ind = head_volume(np.random.default_rng(seed), 4, 48)
        ood = head_volume(np.random.default_rng(seed), 4, 48, ood=True)
        assert ood.shape == ind.shape and ood.dtype == np.float32
        assert ood.min() >= 0 and ood.max() <= 1
        assert not np.array_equal(ind, ood)
        area_ind, area_ood = (ind > 0.05).mean(), (ood > 0.05).mean()
        assert area_ood < 0.95 * area_ind


def _body_stats(v):
    """(body area fraction, lung fraction of the body, centroid offset in pixels) of a volume."""
    body = v > 0.02
    lung = body & (v < 0.2)
    ys, xs = np.nonzero(body.any(axis=0))
    centre = np.array(v.shape[1:]) / 2 - 0.5
    return body.mean(), lung.sum() / body.sum(), float(np.hypot(ys.mean() - centre[0], xs.mean() - centre[1]))


def test_thorax_is_fine_along_z_and_textured():
    v = thorax_volume(np.random.default_rng(4), 64, 64).astype(np.float64)
    # structures span many slices: jump-3 neighbours still much closer than a slice 24 apart
    d1, d3, d24 = (np.abs(v[k:] - v[:-k]).mean() for k in (1, 3, 24))
    assert d1 < d3 < 0.6 * d24
    # texture and smooth intensity variation: soft tissue is not piecewise constant
    soft = v[(v > 0.4) & (v < 0.6)]
    assert np.unique(np.round(soft, 4)).size > 300 and soft.std() > 0.01


def test_thorax_keeps_physical_size_across_grids():
    a = _body_stats(thorax_volume(np.random.default_rng(9), 32, 48))
    b = _body_stats(thorax_volume(np.random.default_rng(9), 32, 96))
    assert a[0] == pytest.approx(b[0], rel=0.1) and a[1] == pytest.approx(b[1], rel=0.2)


def test_thorax_families_differ_as_documented():
    stats = {f: np.array([_body_stats(thorax_volume(np.random.default_rng(s), 40, 48, f)) for s in range(3)])
             for f in FAMILIES}
    # test patients are larger than training ones; held-out patients thinner, off-centre, with less lung
    assert stats["test"][:, 0].min() > stats["train"][:, 0].max()
    assert stats["heldout"][:, 0].max() < stats["train"][:, 0].min()
    assert stats["heldout"][:, 2].min() > 4 * max(stats["train"][:, 2].max(), 0.25)


def test_thorax_rejects_an_unknown_family():
    with pytest.raises(ValueError, match="unknown thorax family 'abdomen'"):
        thorax_volume(np.random.default_rng(0), 30, 32, "abdomen")


# ====================================================================== fastMRI layout
def test_write_read_multicoil_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    S, C, H, W, h, w = 2, 3, 10, 12, 8, 10
    kspace = _crandn(rng, S, C, H, W)
    target = rng.random((S, h, w)).astype(np.float32)
    path = write_volume(tmp_path / "sub" / "mc.h5", kspace, target, {"acquisition": "CORPD", "patient_id": "p7"})
    assert path == tmp_path / "sub" / "mc.h5" and path.is_file()
    assert not list(tmp_path.rglob("*.part"))

    with h5py.File(path, "r") as f:
        assert f["kspace"].dtype == np.complex64 and f["kspace"].shape == (S, C, H, W)
        assert f["reconstruction_rss"].shape == (S, h, w)
        assert f["reconstruction_rss"].dtype == np.float32
        assert "reconstruction_esc" not in f
        assert "ismrmrd_header" in f
        header = f["ismrmrd_header"][()]
        assert f.attrs["max"] == pytest.approx(float(target.max()))
        assert f.attrs["norm"] == pytest.approx(float(np.sqrt((target.astype(np.float64) ** 2).sum())), rel=1e-6)
    # the header is valid XML with the encoded (k-space) and recon (target) matrix sizes
    root = ET.fromstring(header)
    ns = {"m": "http://www.ismrm.org/ISMRMRD"}
    enc = root.find("m:encoding/m:encodedSpace/m:matrixSize", ns)
    rec = root.find("m:encoding/m:reconSpace/m:matrixSize", ns)
    assert (int(enc.find("m:x", ns).text), int(enc.find("m:y", ns).text)) == (H, W)
    assert (int(rec.find("m:x", ns).text), int(rec.find("m:y", ns).text)) == (h, w)

    vol = read_volume(path)
    assert vol.multicoil is True
    assert vol.kspace.dtype == np.complex64
    np.testing.assert_array_equal(vol.kspace, kspace)
    np.testing.assert_array_equal(vol.target, target)
    assert vol.n_slices == S and vol.crop == (h, w)
    assert vol.attrs["acquisition"] == "CORPD" and vol.attrs["patient_id"] == "p7"
    assert vol.attrs["max"] == pytest.approx(float(target.max()))


def test_write_read_singlecoil_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    kspace = _crandn(rng, 3, 8, 8)
    target = rng.random((3, 8, 8)).astype(np.float32)
    path = write_volume(tmp_path / "sc.h5", kspace, target)
    with h5py.File(path, "r") as f:
        assert f["kspace"].shape == (3, 8, 8) and f["kspace"].dtype == np.complex64
        assert "reconstruction_esc" in f and "reconstruction_rss" not in f
    vol = read_volume(path)
    assert vol.multicoil is False
    assert vol.kspace.shape == (3, 1, 8, 8)          # single-coil files get C = 1
    np.testing.assert_array_equal(vol.kspace[:, 0], kspace)
    np.testing.assert_array_equal(vol.target, target)


def test_write_volume_rejects_bad_ndim(tmp_path):
    with pytest.raises(DataFormatError) as exc:
        write_volume(tmp_path / "bad.h5", np.zeros((4, 4), np.complex64), np.zeros((1, 4, 4)))
    _assert_names(exc, "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_read_volume_without_target(tmp_path):
    rng = np.random.default_rng(2)
    kspace = _crandn(rng, 2, 2, 6, 6)
    with h5py.File(tmp_path / "nt.h5", "w") as f:
        f["kspace"] = kspace
    vol = read_volume(tmp_path / "nt.h5")
    assert vol.target is None
    assert vol.crop == (6, 6)
    np.testing.assert_allclose(coil_images(vol), _np_ifft2c(kspace), atol=1e-5)


@pytest.mark.parametrize("H, W, h, w", [(20, 18, 12, 9), (16, 16, 16, 16), (15, 17, 10, 6)])
def test_coil_images_is_centre_crop_of_centred_ifft(tmp_path, H, W, h, w):
    rng = np.random.default_rng(H * W + h)
    kspace = _crandn(rng, 3, 4, H, W)
    vol = read_volume(write_volume(tmp_path / "c.h5", kspace, np.ones((3, h, w), np.float32)))
    full = _np_ifft2c(kspace.astype(np.complex128))
    top, left = (H - h) // 2, (W - w) // 2         # fastMRI convention: floor for odd offsets
    expected = full[..., top:top + h, left:left + w]
    got = coil_images(vol)
    assert got.shape == (3, 4, h, w) and got.dtype == np.complex64
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # slice selection
    np.testing.assert_allclose(coil_images(vol, slice(1, 3)), expected[1:3], atol=1e-5)


def test_coil_images_recovers_a_known_image(tmp_path):
    # an image placed in the centre of a larger grid comes back after k-space -> image -> crop
    rng = np.random.default_rng(3)
    img = _crandn(rng, 1, 2, 8, 8)
    padded = np.zeros((1, 2, 16, 16), np.complex64)
    padded[..., 4:12, 4:12] = img
    ax = (-2, -1)
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(padded, axes=ax), axes=ax, norm="ortho"), axes=ax)
    vol = FastMRIVolume(tmp_path / "x.h5", kspace.astype(np.complex64), np.ones((1, 8, 8), np.float32))
    np.testing.assert_allclose(coil_images(vol), img, atol=1e-5)


# -- read_volume errors: each a DataFormatError naming the file
def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


def test_read_volume_missing_file(tmp_path):
    with pytest.raises(DataFormatError) as exc:
        read_volume(tmp_path / "absent_file.h5")
    _assert_names(exc, "absent_file.h5")


def test_read_volume_not_hdf5(tmp_path):
    p = tmp_path / "posing.h5"
    p.write_text("this is not an HDF5 file\n")
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)


def test_read_volume_missing_kspace(tmp_path):
    p = _h5(tmp_path / "nokspace.h5", reconstruction_rss=np.zeros((1, 4, 4), np.float32))
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)
    assert "kspace" in str(exc.value)


def test_read_volume_real_kspace(tmp_path):
    p = _h5(tmp_path / "realk.h5", kspace=np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)
    assert "complex" in str(exc.value)


@pytest.mark.parametrize("shape", [(4, 4), (1, 1, 2, 4, 4)])
def test_read_volume_wrong_ndim(tmp_path, shape):
    p = _h5(tmp_path / "ndim.h5", kspace=np.zeros(shape, np.complex64))
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)
    assert str(shape) in str(exc.value)


def test_read_volume_target_slice_mismatch(tmp_path):
    p = _h5(tmp_path / "mismatch.h5", kspace=np.zeros((3, 2, 8, 8), np.complex64),
            reconstruction_rss=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)


def test_read_volume_target_larger_than_grid(tmp_path):
    p = _h5(tmp_path / "big.h5", kspace=np.zeros((2, 2, 8, 8), np.complex64),
            reconstruction_rss=np.zeros((2, 10, 8), np.float32))
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)


def test_read_volume_kspace_is_a_group(tmp_path):
    p = tmp_path / "group.h5"
    with h5py.File(p, "w") as f:
        f.create_group("kspace")
    with pytest.raises(DataFormatError) as exc:
        read_volume(p)
    _assert_names(exc, p)


# ========================================================================= CT volumes
def test_ct_volume_h5_round_trip(tmp_path):
    vol = np.random.default_rng(0).random((5, 12, 12)).astype(np.float32)
    path = write_ct_volume(tmp_path / "d" / "v.h5", vol, spacing_mm=(2.5, 0.7, 0.7), description="test vol")
    assert path.is_file() and not list(tmp_path.rglob("*.part"))
    with h5py.File(path, "r") as f:
        assert f["volume"].dtype == np.float32 and f["volume"].shape == (5, 12, 12)
        np.testing.assert_allclose(f.attrs["spacing_mm"], [2.5, 0.7, 0.7])
        assert f.attrs["description"] == "test vol"
    got = read_ct_volume(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, vol)


def test_ct_volume_npy_round_trip(tmp_path):
    vol = np.random.default_rng(1).random((3, 9, 9))          # float64 on disk
    np.save(tmp_path / "v.npy", vol)
    got = read_ct_volume(tmp_path / "v.npy")
    assert got.dtype == np.float32 and got.shape == (3, 9, 9)
    np.testing.assert_array_equal(got, vol.astype(np.float32))


def test_ct_volume_other_key(tmp_path):
    vol = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 4, 4)
    p = _h5(tmp_path / "k.h5", image=vol)
    np.testing.assert_array_equal(read_ct_volume(p, key="image"), vol)


def test_write_ct_volume_rejects_non_3d(tmp_path):
    with pytest.raises(DataFormatError) as exc:
        write_ct_volume(tmp_path / "flat.h5", np.zeros((8, 8), np.float32))
    _assert_names(exc, "flat.h5")
    assert not (tmp_path / "flat.h5").exists()


@pytest.mark.parametrize("name, array", [
    ("two_d.npy", np.zeros((8, 8), np.float32)),
    ("four_d.npy", np.zeros((1, 2, 8, 8), np.float32)),
    ("nonsquare.npy", np.zeros((2, 8, 6), np.float32)),
    ("has_nan.npy", np.where(np.eye(8, dtype=bool)[None], np.nan, 0.5).astype(np.float32)),
    ("has_inf.npy", np.full((2, 4, 4), np.inf, np.float32)),
    ("complex.npy", np.ones((2, 4, 4), np.complex64)),
])
def test_read_ct_volume_bad_npy(tmp_path, name, array):
    p = tmp_path / name
    np.save(p, array)
    with pytest.raises(DataFormatError) as exc:
        read_ct_volume(p)
    _assert_names(exc, p)


def test_read_ct_volume_nan_in_h5(tmp_path):
    vol = np.zeros((2, 4, 4), np.float32)
    vol[1, 2, 3] = np.nan
    p = _h5(tmp_path / "nan.h5", volume=vol)
    with pytest.raises(DataFormatError) as exc:
        read_ct_volume(p)
    _assert_names(exc, p)


def test_read_ct_volume_missing_key(tmp_path):
    p = _h5(tmp_path / "nokey.h5", image=np.zeros((2, 4, 4), np.float32))
    with pytest.raises(DataFormatError) as exc:
        read_ct_volume(p)
    _assert_names(exc, p)
    assert "volume" in str(exc.value)


@pytest.mark.parametrize("name", ["missing.h5", "missing.npy"])
def test_read_ct_volume_missing_file(tmp_path, name):
    with pytest.raises(DataFormatError) as exc:
        read_ct_volume(tmp_path / name)
    _assert_names(exc, name)


@pytest.mark.parametrize("name", ["text.h5", "text.npy"])
def test_read_ct_volume_not_a_data_file(tmp_path, name):
    p = tmp_path / name
    p.write_text("plain text, not data\n")
    with pytest.raises(DataFormatError) as exc:
        read_ct_volume(p)
    _assert_names(exc, p)


def test_read_sinogram_round_trip_and_mismatch(tmp_path):
    rng = np.random.default_rng(4)
    sino = rng.random((2, 5, 7))
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    p = _h5(tmp_path / "s.h5", sinogram=sino, angles=angles)
    s, a = read_sinogram(p)
    assert s.dtype == np.float32 and a.dtype == np.float64
    np.testing.assert_array_equal(s, sino.astype(np.float32))
    np.testing.assert_array_equal(a, angles)
    bad = _h5(tmp_path / "bad_views.h5", sinogram=sino, angles=angles[:4])
    with pytest.raises(DataFormatError) as exc:
        read_sinogram(bad)
    _assert_names(exc, bad)
    nokey = _h5(tmp_path / "no_angles.h5", sinogram=sino)
    with pytest.raises(DataFormatError) as exc:
        read_sinogram(nokey)
    _assert_names(exc, nokey)
    assert "angles" in str(exc.value)


@pytest.mark.parametrize("key", ["volume", "sinogram"])
def test_ct_readers_reject_a_group_in_place_of_a_dataset(tmp_path, key):
    p = tmp_path / f"group_{key}.h5"
    with h5py.File(p, "w") as f:
        f.create_group(key)
        f["angles"] = np.zeros(3)
    with pytest.raises(DataFormatError) as exc:
        (read_ct_volume if key == "volume" else read_sinogram)(p)
    _assert_names(exc, p)


def test_read_sinogram_missing_file(tmp_path):
    with pytest.raises(DataFormatError) as exc:
        read_sinogram(tmp_path / "absent_sino.h5")
    _assert_names(exc, "absent_sino.h5")


def test_read_sinogram_not_hdf5(tmp_path):
    p = tmp_path / "fake_sino.h5"
    p.write_text("not hdf5\n")
    with pytest.raises(DataFormatError) as exc:
        read_sinogram(p)
    _assert_names(exc, p)


# ================================================================== prepare_dataset
def _read_mri(path):
    with h5py.File(path, "r") as f:
        return f["kspace"][()], f["reconstruction_rss"][()], dict(f.attrs)


@pytest.fixture(scope="module")
def mri_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri_demo")
    manifest = prepare_dataset("tiny_brain", dict(TINY_MRI), out, seed=3)
    return out, manifest


@pytest.fixture(scope="module")
def ct_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct_demo")
    manifest = prepare_dataset("tiny_thorax", dict(TINY_CT), out, seed=3)
    return out, manifest


@pytest.mark.parametrize("which, splits", [("mri_demo", {"train", "test"}), ("ct_demo", {"test"})])
def test_prepare_dataset_manifest(request, which, splits):
    out, manifest = request.getfixturevalue(which)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest == load_manifest(out / "manifest.json")
    assert manifest["modality"] == ("mri" if which == "mri_demo" else "ct")
    assert manifest["source"] == "demo"
    assert manifest["seed"] == 3
    assert set(manifest["splits"]) == splits
    for split, files in manifest["splits"].items():
        assert len(files) == 1
        for f in files:
            assert Path(f).is_file()
            assert Path(f).parent == out / split
    assert not list(out.rglob("*.part"))


def test_prepare_dataset_mri_files_are_consistent(mri_demo):
    out, manifest = mri_demo
    for split in ("train", "test"):
        kspace, rss_stored, attrs = _read_mri(manifest["splits"][split][0])
        assert kspace.dtype == np.complex64 and kspace.shape == (2, 8, 32, 32)
        assert rss_stored.dtype == np.float32 and rss_stored.shape == (2, 32, 32)
        coils = _np_ifft2c(kspace.astype(np.complex128))
        rss = np.sqrt((np.abs(coils) ** 2).sum(axis=1))
        np.testing.assert_allclose(rss, rss_stored, atol=1e-5)
        # birdcage maps are RSS-normalised and the magnitude phantom has unit peak, so RSS peaks at 1
        assert rss_stored.max() == pytest.approx(1.0, abs=1e-4)
        assert attrs["max"] == pytest.approx(float(rss_stored.max()))
        # the coils see different parts of the object: coil magnitudes differ between coils
        assert np.ptp(np.abs(coils[0]), axis=0).max() > 0.05
        # coils = image x birdcage maps with sum_c |S_c|^2 = 1, so sum_c conj(S_c) coil_c is the image:
        # its magnitude is the RSS and it carries the demo's smooth, non-zero phase
        maps = birdcage_maps(8, (32, 32)).astype(np.complex128)
        image = (np.conj(maps)[None] * coils).sum(axis=1)
        np.testing.assert_allclose(np.abs(image), rss_stored, atol=1e-5)
        obj = np.abs(image) > 0.1
        assert np.abs(np.angle(image[obj])).max() > 0.1
        assert np.abs(np.diff(np.angle(image), axis=-1))[obj[..., 1:] & obj[..., :-1]].mean() < 0.2   # smooth
    train, test = (_read_mri(manifest["splits"][s][0])[0] for s in ("train", "test"))
    assert not np.array_equal(train, test)


def test_prepare_dataset_ct_volume(ct_demo):
    out, manifest = ct_demo
    vol = read_ct_volume(manifest["splits"]["test"][0])
    assert vol.shape == (27, 32, 32) and vol.dtype == np.float32
    assert vol.min() >= 0 and vol.max() <= 1 and (vol > 0.05).mean() > 0.15


def test_prepare_dataset_is_deterministic_for_a_seed(tmp_path, mri_demo, ct_demo):
    for (ref_out, ref), cfg, name in ((mri_demo, TINY_MRI, "tiny_brain"), (ct_demo, TINY_CT, "tiny_thorax")):
        key = "kspace" if cfg["modality"] == "mri" else "volume"
        same = prepare_dataset(name, dict(cfg), tmp_path / f"{name}_same", seed=3)
        other = prepare_dataset(name, dict(cfg), tmp_path / f"{name}_other", seed=4)
        for split, files in ref["splits"].items():
            with h5py.File(files[0], "r") as a, h5py.File(same["splits"][split][0], "r") as b, \
                    h5py.File(other["splits"][split][0], "r") as c:
                assert a[key][()].tobytes() == b[key][()].tobytes()
                assert not np.array_equal(a[key][()], c[key][()])
                if key == "kspace":
                    assert a["reconstruction_rss"][()].tobytes() == b["reconstruction_rss"][()].tobytes()


def test_prepare_dataset_indexes_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "notes.txt").write_text("x")
    for n in ("c.h5", "a.h5", "b.h5"):         # indexed files are checked: same image grid, readable
        write_volume(data / n, np.ones((1, 2, 4, 4), np.complex64), np.ones((1, 4, 4), np.float32))
    cfg = {"modality": "mri", "source": "files", "files": {"test": str(data / "*.h5"), "train": str(data / "a*.h5")},
           "description": "my scans"}
    manifest = prepare_dataset("mine", cfg, tmp_path / "out")
    assert manifest["source"] == "files" and manifest["description"] == "my scans"
    assert manifest["splits"]["test"] == [str(data / n) for n in ("a.h5", "b.h5", "c.h5")]
    assert manifest["splits"]["train"] == [str(data / "a.h5")]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == manifest


def test_prepare_dataset_empty_glob_names_the_split(tmp_path):
    write_ct_volume(tmp_path / "a.h5", np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 4, 4))
    cfg = {"modality": "ct", "source": "files",
           "files": {"test": str(tmp_path / "*.h5"), "val": str(tmp_path / "nothing_*.npy")}}
    with pytest.raises(FileNotFoundError) as exc:
        prepare_dataset("mine", cfg, tmp_path / "out")
    assert "val" in str(exc.value)
    assert "nothing_*.npy" in str(exc.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_rss_target_wins_over_esc_when_a_file_has_both(tmp_path):
    """fastMRI single-coil knee files carry both reconstruction_esc and reconstruction_rss; the reader
    takes reconstruction_rss (the RSS magnitude of the fully sampled multi-coil data, the images the
    prior is trained on, the same target for single- and multi-coil files)."""
    path = tmp_path / "both.h5"
    ksp = (np.ones((2, 8, 8)) + 1j).astype(np.complex64)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=ksp)
        f.create_dataset("reconstruction_esc", data=np.full((2, 8, 8), 3.0, dtype=np.float32))
        f.create_dataset("reconstruction_rss", data=np.full((2, 8, 8), 2.0, dtype=np.float32))
    vol = read_volume(path)
    assert np.all(vol.target == 2.0)
