"""Read and write volumes in the fastMRI HDF5 layout.

One file per volume::

    kspace               complex64  (slices, coils, H, W)   multi-coil
                                    (slices, H, W)          single-coil
    reconstruction_rss   float32    (slices, h, w)          multi-coil target (h, w <= H, W)
    reconstruction_esc   float32    (slices, h, w)          single-coil target
    ismrmrd_header       bytes      XML (encoding / recon matrix sizes)
    attrs: acquisition, max, norm, patient_id

The same reader serves the embedded demo and real fastMRI files: k-space is
brought to the image domain with the centred orthonormal inverse FFT and the
coil images are centre-cropped to the target's (h, w), as score-MRI works on
the cropped image grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

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


class DataFormatError(ValueError):
    """A data file does not follow the expected layout; the message names the file and the problem."""


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

    @property
    def n_slices(self) -> int:
        return self.kspace.shape[0]

    @property
    def crop(self) -> tuple[int, int]:
        """Image grid (h, w) of the target, or the k-space grid when there is no target."""
        if self.target is not None:
            return tuple(self.target.shape[-2:])
        return tuple(self.kspace.shape[-2:])


def write_volume(path, kspace: np.ndarray, target: np.ndarray, attrs: dict | None = None) -> Path:
    """Write one volume. ``kspace`` (S, C, H, W) → multi-coil file with ``reconstruction_rss``;
    ``kspace`` (S, H, W) → single-coil file with ``reconstruction_esc``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    multicoil = kspace.ndim == 4
    if kspace.ndim not in (3, 4) or target.ndim != 3:
        raise DataFormatError(f"{path}: kspace must be 3-D or 4-D and target 3-D, got {kspace.shape}, {target.shape}")
    tmp = path.with_suffix(path.suffix + ".part")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64))
        f.create_dataset(TARGET_KEYS[0] if multicoil else TARGET_KEYS[1], data=target.astype(np.float32))
        H, W = kspace.shape[-2:]
        h, w = target.shape[-2:]
        f.create_dataset("ismrmrd_header", data=np.bytes_(_HEADER.format(H=H, W=W, h=h, w=w)))
        f.attrs["max"] = float(target.max())
        f.attrs["norm"] = float(np.linalg.norm(target))
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    tmp.replace(path)
    return path


def read_volume(path) -> FastMRIVolume:
    """Read a fastMRI-layout file; raise :class:`DataFormatError` naming the file on any layout problem."""
    path = Path(path)
    with open_h5(path) as f:
        kspace = read_dataset(f, path, "kspace")
        if not np.iscomplexobj(kspace):
            raise DataFormatError(f"{path}: 'kspace' must be complex, got {kspace.dtype}")
        if kspace.ndim not in (3, 4):
            raise DataFormatError(f"{path}: 'kspace' must be (slices, [coils,] H, W), got shape {kspace.shape}")
        target = None
        for key in TARGET_KEYS:
            if key in f:
                target = read_dataset(f, path, key).astype(np.float32)
                break
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    multicoil = kspace.ndim == 4
    if not multicoil:
        kspace = kspace[:, None]
    if target is not None:
        if target.ndim != 3 or target.shape[0] != kspace.shape[0]:
            raise DataFormatError(f"{path}: target shape {target.shape} does not match kspace {kspace.shape}")
        if target.shape[1] > kspace.shape[2] or target.shape[2] > kspace.shape[3]:
            raise DataFormatError(f"{path}: target {target.shape[1:]} larger than k-space grid {kspace.shape[2:]}")
    return FastMRIVolume(path, kspace.astype(np.complex64), target, attrs, multicoil)


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
