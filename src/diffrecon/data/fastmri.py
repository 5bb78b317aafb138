"""Read and write volumes in the fastMRI HDF5 layout.

One file per volume::

    kspace               complex64  (slices, coils, H, W)   multi-coil
                                    (slices, H, W)          single-coil
    reconstruction_rss   float32    (slices, h, w)          multi-coil target (h, w <= H, W)
    reconstruction_esc   float32    (slices, h, w)          single-coil target
    ismrmrd_header       bytes      XML (encoding / recon matrix sizes)
    mask                 float32    (W,)                    prospective (test/challenge) files only:
                                                            the sampled columns; such files have no target
    attrs: acquisition, max, norm, patient_id

Files written here (the demo and the preprocessed store) are chunked one chunk per slice
(``chunks=(1, ...)``), so reading a few slices never reads the whole volume.

The same reader serves the embedded demo and real fastMRI files: k-space is
brought to the image domain with the centred orthonormal inverse FFT and the
coil images are centre-cropped to the target's (h, w), as score-MRI works on
the cropped image grid.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from diffrecon.errors import DataFormatError, one_line  # DataFormatError: re-exported, the readers' error
from diffrecon.io import atomic_path

# Preference order when a file has both (fastMRI single-coil knee files do): the RSS of the fully
# sampled multi-coil data is the magnitude image the prior trains on and the same target for
# single- and multi-coil files; the emulated single-coil (ESC) image is used only without it.
TARGET_KEYS = ("reconstruction_rss", "reconstruction_esc")

_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize></encodedSpace>
    <reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize></reconSpace>
  </encoding>
</ismrmrdHeader>
"""




@contextmanager
def reading(path, what: str = "file"):
    """Turn any error raised while reading ``path`` (a damaged HDF5 / numpy / JSON file) into a
    one-line :class:`DataFormatError` naming it; the project's own errors pass unchanged."""
    try:
        yield
    except DataFormatError:
        raise
    except Exception as exc:            # a damaged file can make any parser fail (numpy's header parser:
        #                                 SyntaxError, tokenize.TokenError); all are the file's fault
        raise DataFormatError(f"{path}: unreadable {what} ({exc.__class__.__name__}: {one_line(exc, 120)})") from None


def check_finite(path, name: str, array: np.ndarray) -> None:
    """:class:`DataFormatError` naming ``path`` and ``name`` if ``array`` holds NaN or infinite values."""
    if array.size and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise DataFormatError(f"{path}: '{name}' holds {bad} NaN or infinite values of {array.size}; "
                              "replace or drop the damaged slices")


def open_h5(path: Path) -> h5py.File:
    """Open an existing HDF5 file for reading, or raise :class:`DataFormatError` naming it."""
    if not path.is_file():
        raise DataFormatError(f"{path}: file not found")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(f"{path}: not an HDF5 file ({exc.__class__.__name__})") from None


def read_dataset(f: h5py.File, path: Path, key: str) -> np.ndarray:
    """``f[key][()]``, or :class:`DataFormatError` naming the file if ``key`` is missing or not a dataset."""
    if key not in f or not isinstance(f[key], h5py.Dataset):
        raise DataFormatError(f"{path}: no '{key}' dataset (keys: {sorted(f.keys())})")
    return f[key][()]


@dataclass
class FastMRIVolume:
    """A volume as stored: raw k-space, target magnitude and file attributes."""

    path: Path
    kspace: np.ndarray                  # (S, C, H, W) complex64 (single-coil files get C = 1)
    target: np.ndarray | None           # (S, h, w) float32, None for test/challenge files
    attrs: dict = field(default_factory=dict)
    multicoil: bool = True
    mask: np.ndarray | None = None      # (W,) sampled columns of a prospective file

    @property
    def prospective(self) -> bool:
        """Undersampled data with its own mask and no target (fastMRI test/challenge files)."""
        return self.mask is not None and self.target is None

    @property
    def n_slices(self) -> int:
        return self.kspace.shape[0]

    @property
    def crop(self) -> tuple[int, int]:
        """Image grid (h, w) of the target, or the k-space grid when there is no target."""
        if self.target is not None:
            return tuple(self.target.shape[-2:])
        return tuple(self.kspace.shape[-2:])


@contextmanager
def volume_writer(path, n_slices: int, kspace_shape: tuple, target_shape: tuple | None,
                  attrs: dict | None = None, mask: np.ndarray | None = None):
    """Create one volume file slice by slice: yields ``(kspace, target)`` HDF5 datasets of
    ``n_slices`` slices, chunked one chunk per slice (``target`` is None without ``target_shape``).

    ``kspace_shape`` is one slice's ``([C,] H, W)``: 3-D → multi-coil file (target
    ``reconstruction_rss``), 2-D → single-coil file (``reconstruction_esc``). The header gives the
    stored grids; ``max`` and ``norm`` of the target are set when the block ends. Written to
    ``<name>.part`` and renamed on success (nothing half-written).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kspace_shape = tuple(int(n) for n in kspace_shape)
    if len(kspace_shape) not in (2, 3) or (target_shape is not None and len(target_shape) != 2):
        raise DataFormatError(f"{path}: kspace slices must be 2-D or 3-D and target slices 2-D, "
                              f"got {kspace_shape}, {target_shape}")
    multicoil = len(kspace_shape) == 3
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            ksp = f.create_dataset("kspace", (n_slices, *kspace_shape), dtype=np.complex64,
                                   chunks=(1, *kspace_shape))
            tgt = None
            H, W = kspace_shape[-2:]
            h, w = target_shape if target_shape is not None else (H, W)
            if target_shape is not None:
                tgt = f.create_dataset(TARGET_KEYS[0] if multicoil else TARGET_KEYS[1], (n_slices, h, w),
                                       dtype=np.float32, chunks=(1, h, w))
            if mask is not None:
                f.create_dataset("mask", data=np.asarray(mask, dtype=np.float32))
            f.create_dataset("ismrmrd_header", data=np.bytes_(_HEADER.format(H=H, W=W, h=h, w=w)))
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            yield ksp, tgt
            if tgt is not None:
                peak, sq = 0.0, 0.0
                for s in range(n_slices):
                    t = tgt[s]
                    peak, sq = max(peak, float(t.max())), sq + float(np.sum(t.astype(np.float64) ** 2))
                f.attrs["max"], f.attrs["norm"] = peak, float(np.sqrt(sq))


def write_volume(path, kspace: np.ndarray, target: np.ndarray, attrs: dict | None = None) -> Path:
    """Write one volume. ``kspace`` (S, C, H, W) → multi-coil file with ``reconstruction_rss``;
    ``kspace`` (S, H, W) → single-coil file with ``reconstruction_esc`` (one chunk per slice)."""
    path = Path(path)
    if kspace.ndim not in (3, 4) or target.ndim != 3:
        raise DataFormatError(f"{path}: kspace must be 3-D or 4-D and target 3-D, got {kspace.shape}, {target.shape}")
    with volume_writer(path, kspace.shape[0], kspace.shape[1:], target.shape[1:], attrs) as (ksp, tgt):
        ksp[...] = kspace.astype(np.complex64)
        tgt[...] = target.astype(np.float32)
    return path


def header_matrices(xml) -> dict:
    """``{"encoded": (x, y), "recon": (x, y)}`` matrix sizes of an ISMRMRD header (XML text or bytes).

    In fastMRI files ``x`` is the readout (rows of ``kspace``, 640 with 2x oversampling for knee)
    and ``y`` the phase encoding (columns); the recon matrix is the 320 x 320 target grid.
    """
    if isinstance(xml, (bytes, np.bytes_)):
        xml = bytes(xml).decode("utf-8", errors="replace")
    root = ET.fromstring(str(xml))
    out = {}
    for name, tag in (("encoded", "encodedSpace"), ("recon", "reconSpace")):
        node = next((n for n in root.iter() if n.tag.split("}")[-1] == tag), None)
        size = None if node is None else next((n for n in node.iter() if n.tag.split("}")[-1] == "matrixSize"), None)
        if size is None:
            raise ValueError(f"no {tag}/matrixSize in the ISMRMRD header")
        vals = {c.tag.split("}")[-1]: int(c.text) for c in size}
        out[name] = (vals["x"], vals["y"])
    return out


def read_volume(path) -> FastMRIVolume:
    """Read a fastMRI-layout file; raise :class:`DataFormatError` naming the file on any layout problem.

    Checked: complex k-space of rank 3 or 4 with at least one slice, finite values; a target
    (if any) of the same number of slices, finite, no larger than the k-space grid; a prospective
    ``mask`` with one finite 0/1 entry per k-space column.
    """
    path = Path(path)
    with reading(path, "fastMRI HDF5 file"), open_h5(path) as f:
        kspace = read_dataset(f, path, "kspace")
        if not np.iscomplexobj(kspace):
            raise DataFormatError(f"{path}: 'kspace' must be complex, got {kspace.dtype} "
                                  "(store k-space as complex64, not magnitudes or real/imaginary pairs)")
        if kspace.ndim not in (3, 4):
            raise DataFormatError(f"{path}: 'kspace' must be (slices, [coils,] H, W), got shape {kspace.shape}")
        if min(kspace.shape) == 0:
            raise DataFormatError(f"{path}: 'kspace' is empty (shape {kspace.shape}): no slice to use")
        check_finite(path, "kspace", kspace)
        target = None
        for key in TARGET_KEYS:
            if key in f:
                target = read_dataset(f, path, key)
                if np.iscomplexobj(target) or not np.issubdtype(target.dtype, np.number):
                    raise DataFormatError(f"{path}: '{key}' must be a real magnitude image, got {target.dtype}")
                target = target.astype(np.float32)
                check_finite(path, key, target)
                target_key = key
                break
        attrs = {k: (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        mask = read_dataset(f, path, "mask") if "mask" in f else None
    multicoil = kspace.ndim == 4
    if not multicoil:
        kspace = kspace[:, None]
    if target is not None:
        if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
            raise DataFormatError(f"{path}: target shape {target.shape} does not match kspace {kspace.shape}")
        if target.shape[1] > kspace.shape[2] or target.shape[2] > kspace.shape[3]:
            raise DataFormatError(f"{path}: target {target.shape[1:]} larger than k-space grid {kspace.shape[2:]}")
    if mask is not None:
        if np.iscomplexobj(mask) or not np.issubdtype(mask.dtype, np.number):
            raise DataFormatError(f"{path}: 'mask' must be real 0/1 values, got {mask.dtype}")
        mask = mask.astype(np.float32).reshape(-1)
        if mask.size != kspace.shape[-1]:
            raise DataFormatError(f"{path}: 'mask' has {mask.size} entries, k-space has {kspace.shape[-1]} columns")
        if not np.isin(mask, (0.0, 1.0)).all():
            raise DataFormatError(f"{path}: 'mask' must hold 0/1 values only")
        if not mask.any():
            raise DataFormatError(f"{path}: 'mask' samples no column")
    if not kspace.any():
        raise DataFormatError(f"{path}: 'kspace' is all zero (no signal)")
    if target is not None and not target.max() > 0:
        raise DataFormatError(f"{path}: '{target_key}' has no positive value (an all-zero target: "
                              "PSNR/SSIM would be undefined)")
    return FastMRIVolume(path, kspace.astype(np.complex64), target, attrs, multicoil, mask)


def center_crop(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre-crop the last two axes of ``x`` to ``shape`` (fastMRI convention for odd offsets)."""
    h, w = shape
    H, W = x.shape[-2:]
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top:top + h, left:left + w]


def coil_images(volume: FastMRIVolume, slices=None) -> np.ndarray:
    """Fully sampled coil images ``(S, C, h, w)`` complex64: centred ifft of k-space, cropped to the target grid."""
    import torch

    from diffrecon.physics.fft import ifft2c

    ksp = volume.kspace if slices is None else volume.kspace[slices]
    img = ifft2c(torch.from_numpy(np.ascontiguousarray(ksp))).numpy()
    return center_crop(img, volume.crop).astype(np.complex64)
