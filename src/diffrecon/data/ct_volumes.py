"""Read and write CT volumes and sinograms.

Volume file (HDF5), the one layout of the preprocessed store (demo and real data alike)::

    volume        float32 (slices, H, W), values in [0, 1] (attenuation scaled by a window),
                  chunked one chunk per slice, chunks = (1, H, W)
    source_files  optional str (slices,): the source file(s) of each slice, in slice order
    attrs:        spacing_mm = (dz, dy, dx), description, and provenance when converted from
                  DICOM / NIfTI: source_series_uid, source_patient_id, hu_window (lo, hi) or
                  scaling, resized_from (H0, W0), ...

Slices are in anatomical order (index 0 = most inferior for the converted data); ``dz`` is the
slice spacing measured from the slice positions, ``dy, dx`` the pixel spacing after resizing.

``.npy`` volumes of shape (slices, H, W) are accepted on reading. A sinogram
file holds ``sinogram`` (slices, views, detectors) and ``angles`` (radians).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from diffrecon.data.fastmri import DataFormatError, check_finite, open_h5, read_dataset, reading
from diffrecon.io import atomic_path

#: values a volume may take: attenuation scaled to [0, 1], with a margin for resampling overshoot
VALUE_RANGE = (-0.1, 1.5)


def write_ct_volume(path, volume: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), description: str = "",
                    provenance: dict | None = None) -> Path:
    """Write ``volume`` (slices, H, W) to an HDF5 file atomically, one chunk per slice.

    ``provenance`` entries become file attributes (strings, numbers, numeric sequences), except
    ``source_files`` (one entry per slice), which is stored as a string dataset.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if volume.ndim != 3:
        raise DataFormatError(f"{path}: CT volume must be (slices, H, W), got {volume.shape}")
    provenance = dict(provenance or {})
    source_files = provenance.pop("source_files", None)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("volume", data=volume.astype(np.float32), chunks=(1, *volume.shape[1:]))
            f.attrs["spacing_mm"] = np.asarray(spacing_mm, dtype=np.float64)
            f.attrs["description"] = description
            for key, value in provenance.items():
                f.attrs[key] = value
            if source_files is not None:
                f.create_dataset("source_files", data=[str(s) for s in source_files], dtype=h5py.string_dtype())
    return path


def read_ct_volume(path, key: str = "volume") -> np.ndarray:
    """Read a (slices, H, W) float32 volume from ``.h5`` (dataset ``key``) or ``.npy``.

    Checked (:class:`DataFormatError` naming the file): rank 3 with at least one slice, square
    slices, real floating-point values, all finite, within :data:`VALUE_RANGE` (attenuation scaled
    to [0, 1]: HU, raw counts and 8-bit images must be converted first), not constant.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    with reading(path, "CT volume file"):
        if path.suffix == ".npy":
            vol = np.load(path, allow_pickle=False)
            if not isinstance(vol, np.ndarray):
                raise DataFormatError(f"{path}: not a numpy array file")
        else:
            with open_h5(path) as f:
                vol = read_dataset(f, path, key)
    if vol.ndim != 3:
        raise DataFormatError(f"{path}: expected a (slices, H, W) volume, got shape {vol.shape}")
    if min(vol.shape) == 0:
        raise DataFormatError(f"{path}: empty volume (shape {vol.shape})")
    if vol.shape[1] != vol.shape[2]:
        raise DataFormatError(f"{path}: slices must be square (H == W), got {vol.shape[1:]}")
    if np.iscomplexobj(vol):
        raise DataFormatError(f"{path}: volume must be real, got {vol.dtype} (store the attenuation magnitude)")
    if not np.issubdtype(vol.dtype, np.number) or vol.dtype == np.bool_:
        raise DataFormatError(f"{path}: volume must be numeric, got {vol.dtype}")
    check_finite(path, "volume", vol)
    lo, hi = float(vol.min()), float(vol.max())
    if np.issubdtype(vol.dtype, np.integer) and hi > 1:
        raise DataFormatError(f"{path}: integer volume ({vol.dtype}, values {lo:g}…{hi:g}) looks like an 8-bit image, "
                              "HU or raw counts: convert to [0, 1] attenuation as float32 (source: dicom does this)")
    if lo < VALUE_RANGE[0] or hi > VALUE_RANGE[1]:
        raise DataFormatError(f"{path}: values {lo:g}…{hi:g} look like HU or raw counts: convert to [0, 1] "
                              "attenuation (source: dicom does this)")
    if lo == hi:
        raise DataFormatError(f"{path}: volume is constant (every value {lo:g}): nothing to reconstruct, "
                              "PSNR/SSIM undefined")
    return vol.astype(np.float32)


def ct_volume_shape(path, key: str = "volume") -> tuple[int, int, int]:
    """(slices, H, W) of a volume file (``.h5`` dataset ``key`` or ``.npy``), read from its header
    only; checked as :func:`read_ct_volume` checks the shape and type (:class:`DataFormatError` naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    with reading(path, "CT volume file"):
        if path.suffix == ".npy":
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            shape, dtype = arr.shape, arr.dtype
        else:
            with open_h5(path) as f:
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise DataFormatError(f"{path}: no '{key}' dataset (keys: {sorted(f.keys())})")
                shape, dtype = f[key].shape, f[key].dtype
    if len(shape) != 3:
        raise DataFormatError(f"{path}: expected a (slices, H, W) volume, got shape {shape}")
    if min(shape) == 0:
        raise DataFormatError(f"{path}: empty volume (shape {shape})")
    if shape[1] != shape[2]:
        raise DataFormatError(f"{path}: slices must be square (H == W), got {shape[1:]}")
    if np.issubdtype(dtype, np.complexfloating) or not np.issubdtype(dtype, np.number) or dtype == np.bool_:
        raise DataFormatError(f"{path}: volume must be real numbers, got {dtype}")
    return tuple(int(n) for n in shape)


def read_ct_slices(source, path, indices, key: str = "volume") -> np.ndarray:
    """Slices ``indices`` (increasing) of a volume as (len(indices), H, W) float32, reading only those.

    ``source`` is an open :class:`h5py.File` or a memory-mapped ``.npy`` array of the file ``path``
    (named in errors). Checked per read: finite values within :data:`VALUE_RANGE`.
    """
    with reading(path, "CT volume file"):
        data = source[key] if isinstance(source, h5py.File) else source
        out = np.asarray(data[list(indices)])
    if np.iscomplexobj(out) or not np.issubdtype(out.dtype, np.number):
        raise DataFormatError(f"{path}: volume must be real numbers, got {out.dtype}")
    if out.size and not np.isfinite(out).all():
        raise DataFormatError(f"{path}: slices {list(indices)} hold NaN or infinite values; replace or drop them")
    lo, hi = float(out.min()), float(out.max())
    if np.issubdtype(out.dtype, np.integer) and hi > 1 or lo < VALUE_RANGE[0] or hi > VALUE_RANGE[1]:
        raise DataFormatError(f"{path}: slices {list(indices)} have values {lo:g}…{hi:g}, outside [0, 1] "
                              "attenuation: convert HU / raw counts first (source: dicom does this)")
    return out.astype(np.float32)


def read_sinogram(path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``sinogram`` (slices, views, det) and ``angles`` (radians) from an HDF5 file; both real
    and finite, one angle per view."""
    path = Path(path)
    with reading(path, "sinogram file"), open_h5(path) as f:
        sino, angles = read_dataset(f, path, "sinogram"), read_dataset(f, path, "angles")
    if sino.ndim != 3 or angles.ndim != 1 or sino.shape[1] != angles.shape[0]:
        raise DataFormatError(f"{path}: sinogram {sino.shape} must be (slices, views, det) with views = len(angles) = {angles.shape}")
    if min(sino.shape) == 0:
        raise DataFormatError(f"{path}: empty sinogram (shape {sino.shape})")
    for name, arr in (("sinogram", sino), ("angles", angles)):
        if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
            raise DataFormatError(f"{path}: '{name}' must be real numbers, got {arr.dtype}")
        check_finite(path, name, arr)
    if len(np.unique(angles)) != len(angles):
        raise DataFormatError(f"{path}: 'angles' repeat a view angle")
    return sino.astype(np.float32), angles.astype(np.float64)
