"""CT series from a DICOM directory tree (AAPM Low-Dose CT, LIDC-IDRI, any axial CT).

Conventions
-----------
* Grouping: image slices are grouped by ``SeriesInstanceUID``; file names play no role.
* Order: the slice normal is n = r x c (``ImageOrientationPatient`` row and column
  cosines); slices are sorted by ``ImagePositionPatient . n``. The volume is then laid out
  canonically: slice 0 is the most inferior (patient z increasing, DICOM LPS), rows increase
  towards posterior and columns towards the patient's left (the standard axial display); a
  series stored with flipped cosines is flipped to this layout.
* Spacing: ``dz`` is the most frequent step between the sorted positions (not ``SliceThickness``);
  ``dy, dx`` are ``PixelSpacing`` times the resize factor.
* Intensity: HU = RescaleSlope * stored value + RescaleIntercept; the HU window [lo, hi] maps
  to [0, 1] by clip((HU - lo) / (hi - lo), 0, 1) (linear attenuation up to an offset), then each
  slice is resized with anti-aliasing (scikit-image) and clipped to [0, 1] again.
* Skipped with a logged note: files that are not DICOM, non-image objects (SEG, RTDOSE,
  RTSTRUCT, ... : no pixel data or no slice position), other modalities, localisers / scouts
  (``ImageType`` containing LOCALIZER) and non-axial slices (|n_z| < ``AXIAL_COS``),
  multi-frame images.
* Errors (:class:`DataFormatError`, one line naming the series and the file): duplicate slice
  positions, missing slices or irregular spacing beyond ``spacing_tolerance`` mm, mixed
  orientations, pixel spacings or sizes within a series, compressed pixel data without an
  installed decoder, pixel data that do not match the header.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffrecon.data.fastmri import DataFormatError

log = logging.getLogger("diffrecon.data")

AXIAL_COS = 0.9            # |n . z| below this: not an axial slice (> ~26 degrees of tilt)
DEFAULT_WINDOW = (-1024.0, 3072.0)
NON_IMAGE_MODALITIES = {"SEG", "RTDOSE", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG"}


@dataclass
class SliceHeader:
    """What is needed of one image file to group, order and check it (pixel data not read)."""

    path: Path
    series_uid: str
    patient_id: str
    position: np.ndarray           # ImagePositionPatient (mm, LPS)
    orientation: np.ndarray        # ImageOrientationPatient: row cosines, column cosines
    shape: tuple[int, int]         # (Rows, Columns)
    pixel_spacing: tuple[float, float]   # (between rows, between columns), mm
    transfer_syntax: str
    description: str = ""

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])


@dataclass
class Series:
    """One checked series: files in slice order and the geometry of the canonical volume."""

    uid: str
    patient_id: str
    files: list[Path]
    positions: np.ndarray          # projection on the normal, sorted (mm)
    spacing_mm: tuple[float, float, float]   # (dz, dy, dx) before resizing
    shape: tuple[int, int]
    orientation: np.ndarray
    description: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.files)


def _read_header(path: Path, modalities) -> SliceHeader | str:
    """The header of an axial image file, or a note saying why the file is skipped."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError) as exc:
        return f"{path}: not a DICOM file ({exc.__class__.__name__}), skipped"
    modality = str(ds.get("Modality", ""))
    if modality in NON_IMAGE_MODALITIES:
        return f"{path}: {modality} object (not an image), skipped"
    if modalities and modality not in modalities:
        return f"{path}: modality {modality or '?'} not in {list(modalities)}, skipped"
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or "Rows" not in ds:
        return f"{path}: no image position/orientation (not a cross-sectional image), skipped"
    if "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]:
        return f"{path}: localiser (ImageType {list(ds.ImageType)}), skipped"
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return f"{path}: multi-frame image, not supported, skipped"
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
    header = SliceHeader(
        path=path, series_uid=str(ds.get("SeriesInstanceUID", "")), patient_id=str(ds.get("PatientID", "")),
        position=np.asarray(ds.ImagePositionPatient, dtype=np.float64), orientation=orientation,
        shape=(int(ds.Rows), int(ds.Columns)),
        pixel_spacing=tuple(float(v) for v in ds.get("PixelSpacing", (1.0, 1.0))),
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")),
        description=str(ds.get("SeriesDescription", "")))
    if abs(header.normal[2]) < AXIAL_COS:
        return f"{path}: not axial (slice normal {np.round(header.normal, 3).tolist()}), skipped"
    return header


def _selected(path: Path, root: Path, header: SliceHeader, series_filter: dict | None) -> bool:
    """``series_filter``: {"path": glob on the path relative to root, <DICOM keyword>: glob}."""
    for key, pattern in (series_filter or {}).items():
        value = str(path.relative_to(root)) if key == "path" else getattr(header, {
            "SeriesDescription": "description", "PatientID": "patient_id", "SeriesInstanceUID": "series_uid"}[key])
        if not fnmatch.fnmatch(value, pattern):
            return False
    return True


def scan_tree(root, modalities=("CT",), series_filter: dict | None = None) -> tuple[dict[str, list[SliceHeader]], list[str]]:
    """Headers of the axial image files under ``root`` grouped by series UID, and the skip notes."""
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(f"{root}: DICOM root is not a directory")
    groups: dict[str, list[SliceHeader]] = {}
    notes = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        header = _read_header(path, modalities)
        if isinstance(header, str):
            notes.append(header)
            log.info(header)
            continue
        if not _selected(path, root, header, series_filter):
            continue
        groups.setdefault(header.series_uid, []).append(header)
    return groups, notes


def _check_decoder(series_uid: str, header: SliceHeader) -> None:
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(header.transfer_syntax)
    if not uid.is_compressed:
        return
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise DataFormatError(f"series {series_uid}: {header.path}: pixel data compressed as '{uid.name}' and no "
                              "decoder is installed (pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)")


def _typical_step(steps: np.ndarray, tolerance: float) -> float:
    """The most frequent step (ties: the smallest), averaged over the steps within ``tolerance`` of it.

    Unlike the median it stays the slice spacing when few slices are left around a gap.
    """
    values, counts = np.unique(np.round(steps, 2), return_counts=True)
    mode = values[np.argmax(counts)]               # np.unique sorts: argmax takes the smallest of ties
    close = np.abs(steps - mode) <= max(tolerance, 0.005)
    return float(steps[close].mean())


def order_series(uid: str, headers: list[SliceHeader], spacing_tolerance: float = 0.05) -> Series:
    """Check one series and order its slices along the normal (see the module conventions)."""
    first = headers[0]
    for h in headers[1:]:
        if not np.allclose(h.orientation, first.orientation, atol=1e-3):
            raise DataFormatError(f"series {uid}: mixed orientations ({h.path} differs from {first.path})")
        if h.shape != first.shape:
            raise DataFormatError(f"series {uid}: mixed slice sizes ({h.path}: {h.shape}, {first.path}: {first.shape})")
        if not np.allclose(h.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise DataFormatError(f"series {uid}: mixed pixel spacings ({h.path}: {h.pixel_spacing}, "
                                  f"{first.path}: {first.pixel_spacing})")
        if h.patient_id != first.patient_id:
            raise DataFormatError(f"series {uid}: mixed patient IDs ({h.path}: {h.patient_id}, {first.path}: {first.patient_id})")
    _check_decoder(uid, first)
    if len(headers) < 2:
        raise DataFormatError(f"series {uid}: a single slice ({first.path}), not a volume")
    normal = first.normal
    z = np.array([h.position @ normal for h in headers])
    order = np.argsort(z, kind="stable")
    z, files = z[order], [headers[i].path for i in order]
    steps = np.diff(z)
    dup = np.flatnonzero(steps < 1e-3)
    if dup.size:
        i = dup[0]
        raise DataFormatError(f"series {uid}: duplicate slice position {z[i]:.3f} mm ({files[i]} and {files[i + 1]})")
    dz = _typical_step(steps, spacing_tolerance)
    bad = np.flatnonzero(np.abs(steps - dz) > spacing_tolerance)
    if bad.size:
        i = bad[0]
        kind = "missing slice(s)" if steps[i] > 1.5 * dz else "irregular spacing"
        raise DataFormatError(f"series {uid}: {kind}: step {steps[i]:.3f} mm between {files[i]} and {files[i + 1]}, "
                              f"spacing {dz:.3f} mm, tolerance {spacing_tolerance} mm")
    dy, dx = first.pixel_spacing
    return Series(uid=uid, patient_id=first.patient_id, files=files, positions=z, spacing_mm=(dz, dy, dx),
                  shape=first.shape, orientation=first.orientation, description=first.description)


def hu_to_unit(hu: np.ndarray, window) -> np.ndarray:
    """clip((HU - lo) / (hi - lo), 0, 1) as float32."""
    lo, hi = float(window[0]), float(window[1])
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def resize_slices(volume: np.ndarray, size: int | None) -> np.ndarray:
    """Resize each (H, W) slice to (size, size) with anti-aliasing (linear), kept in [0, 1]."""
    if size is None or volume.shape[1:] == (size, size):
        return volume.astype(np.float32)
    from skimage.transform import resize

    out = np.empty((volume.shape[0], size, size), dtype=np.float32)
    for i, sl in enumerate(volume):
        out[i] = resize(sl, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return np.clip(out, 0.0, 1.0)


def load_series(series: Series, window=DEFAULT_WINDOW, size: int | None = 256) -> tuple[np.ndarray, tuple]:
    """The canonical (slices, H, W) volume in [0, 1] of a checked series, and its spacing (dz, dy, dx)."""
    import pydicom

    rows, cols = series.shape
    slices = np.empty((series.n_slices, rows, cols), dtype=np.float32)
    for i, path in enumerate(series.files):
        try:
            ds = pydicom.dcmread(path)
            stored = ds.pixel_array
        except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one line naming the file
            raise DataFormatError(f"series {series.uid}: {path}: cannot decode pixel data ({exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if stored.shape != (rows, cols):
            raise DataFormatError(f"series {series.uid}: {path}: pixel data {stored.shape} do not match Rows x Columns {(rows, cols)}")
        hu = float(ds.get("RescaleSlope", 1) or 1) * stored.astype(np.float64) + float(ds.get("RescaleIntercept", 0) or 0)
        slices[i] = hu_to_unit(hu, window)
    row_cos, col_cos = series.orientation[:3], series.orientation[3:]
    if row_cos[int(np.argmax(np.abs(row_cos)))] < 0:       # columns run towards patient right: flip
        slices = slices[:, :, ::-1]
    if col_cos[int(np.argmax(np.abs(col_cos)))] < 0:       # rows run towards anterior: flip
        slices = slices[:, ::-1, :]
    if np.cross(row_cos, col_cos)[2] < 0:                   # sorted superior -> inferior: reverse
        slices = slices[::-1]
    if size is None and rows != cols:
        raise DataFormatError(f"series {series.uid}: slices are {rows} x {cols}; set a square target size")
    volume = resize_slices(np.ascontiguousarray(slices), size)
    dz, dy, dx = series.spacing_mm
    if size is not None:
        dy, dx = dy * rows / size, dx * cols / size
    return volume, (dz, dy, dx)


def files_in_volume_order(series: Series) -> list[Path]:
    """The source files in the order of the stored volume's slices."""
    return list(series.files if np.cross(series.orientation[:3], series.orientation[3:])[2] >= 0 else series.files[::-1])


def read_series_tree(root, modalities=("CT",), series_filter=None, spacing_tolerance: float = 0.05,
                     skip_bad: bool = False) -> tuple[list[Series], list[str]]:
    """Scan, group and check every series under ``root``; ``skip_bad`` turns series errors into notes."""
    groups, notes = scan_tree(root, modalities, series_filter)
    series = []
    for uid, headers in sorted(groups.items(), key=lambda kv: (kv[1][0].patient_id, kv[0])):
        try:
            series.append(order_series(uid, headers, spacing_tolerance))
        except DataFormatError as exc:
            if not skip_bad:
                raise
            notes.append(f"{exc} (series skipped)")
            log.warning("%s (series skipped)", exc)
    return series, notes
