"""Volumes from NIfTI files (CT in HU, or MR magnitude) in the store's canonical layout.

Conventions
-----------
* Orientation: the image is first brought to the closest canonical orientation
  (``nibabel.as_closest_canonical``, RAS+: i -> Right, j -> Anterior, k -> Superior), then laid
  out as the DICOM path lays out CT: (slices, rows, columns) = (k, j reversed, i reversed), i.e.
  slice 0 most inferior, rows towards posterior, columns towards the patient's left (the
  standard axial display). Oblique affines are rounded to the closest axes (no resampling).
* Spacing: (dz, dy, dx) = header zooms of (k, j, i) after reorientation, times the resize
  factor in-plane.
* Intensity: ``window`` [lo, hi] (CT: in HU, after the header's scl_slope / scl_inter, which
  nibabel applies) maps to [0, 1] by clipping, as for DICOM; ``normalize: minmax`` scales each
  volume by its own minimum and maximum instead, which is the choice for MR magnitude images
  (no absolute unit). Slices are then resized with anti-aliasing.
* A 4-D file is accepted only with one volume (trailing singleton axes are dropped).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffrecon.data.dicom import DEFAULT_WINDOW, hu_to_unit, resize_slices
from diffrecon.data.fastmri import DataFormatError


def canonical_axial(img) -> tuple[np.ndarray, tuple[float, float, float]]:
    """(slices, rows, columns) float64 array of a nibabel image and its (dz, dy, dx) in mm."""
    import nibabel as nib

    canon = nib.as_closest_canonical(img)
    data = np.asarray(canon.dataobj, dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {data.shape}")
    zooms = canon.header.get_zooms()[:3]
    volume = np.transpose(data, (2, 1, 0))[:, ::-1, ::-1]
    return np.ascontiguousarray(volume), (float(zooms[2]), float(zooms[1]), float(zooms[0]))


def load_nifti(path, window=DEFAULT_WINDOW, normalize: str = "window", size: int | None = 256):
    """The canonical (slices, H, W) float32 volume in [0, 1] of a NIfTI file and its spacing (dz, dy, dx)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        volume, (dz, dy, dx) = canonical_axial(img)
    except (nib.filebasedimages.ImageFileError, ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a usable NIfTI volume ({str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__})") from None
    if not np.isfinite(volume).all():
        raise DataFormatError(f"{path}: volume has non-finite values")
    if normalize == "minmax":
        lo, hi = float(volume.min()), float(volume.max())
        if hi <= lo:
            raise DataFormatError(f"{path}: constant volume, cannot min-max scale")
        volume = ((volume - lo) / (hi - lo)).astype(np.float32)
    else:
        volume = hu_to_unit(volume, window)
    rows, cols = volume.shape[1:]
    if size is None and rows != cols:
        raise DataFormatError(f"{path}: slices are {rows} x {cols}; set a square target size")
    out = resize_slices(volume, size)
    if size is not None:
        dy, dx = dy * rows / size, dx * cols / size
    return out, (dz, dy, dx)
