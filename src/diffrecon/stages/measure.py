"""Stage ``measure``: the measurements file of prospective data, from its own k-space and mask.

Prospective (test / challenge) fastMRI files hold undersampled k-space and the 1-D column
``mask`` (W,) it was acquired with, and no target. Nothing is simulated here: each volume's
k-space is multiplied by its mask (broadcast over rows; entries outside it are zero already),
divided by the maximum of its zero-filled magnitude (the scale is stored per case, as in
``simulate``), and written in the measurements layout of :mod:`diffrecon.io` with the case's own
mask (``cases/<case>/mask``; the root ``mask`` is the first case's). The setting is named
``prospective-<coil_mode>``: ``multicoil`` keeps the coils (S, C, H, W); ``singlecoil`` needs a
one-coil file and stores (S, H, W). There is no target file, so no metrics.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from diffrecon.io import CaseWriter
from diffrecon.settings import prospective_setting
from diffrecon.stages.simulate import _case_name, _central, _split_files

log = logging.getLogger("diffrecon")


def load_mask_file(path, n_cols: int, n_rows: int, data_name: str = "the data", allow_2d: bool = False) -> np.ndarray:
    """A user mask (``.npy``, or ``.h5`` with a ``mask`` dataset) as (W,) columns of 0/1.

    Accepts (W,), (1, W) or an (H, W) mask whose rows are all equal; with ``allow_2d`` any
    (H, W) mask is returned as is. Anything else is a ``ValueError`` naming the file and the
    expected shape.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask file not found")
    try:
        if path.suffix == ".npy":
            m = np.load(path, allow_pickle=False)
        else:
            import h5py

            with h5py.File(path, "r") as f:
                if "mask" not in f:
                    raise ValueError(f"{path}: no 'mask' dataset (keys: {sorted(f.keys())})")
                m = f["mask"][()]
    except (OSError, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a .npy or HDF5 mask file ({exc.__class__.__name__})") from None
    m = np.asarray(m)
    if m.ndim == 2 and m.shape == (n_rows, n_cols) and np.all(m == m[:1]):
        m = m[0]
    if m.ndim == 2 and m.shape[0] == 1:
        m = m[0]
    if allow_2d and m.shape == (n_rows, n_cols):
        return (m.astype(float) > 0).astype(np.float32)
    if m.ndim != 1 or m.size != n_cols or not np.isfinite(m.astype(float)).all():
        raise ValueError(f"{path}: mask shape {m.shape} does not fit {data_name}: expected ({n_cols},) columns "
                         f"or ({n_rows}, {n_cols}){'' if allow_2d else ' with equal rows'}")
    return (m.astype(float) > 0).astype(np.float32)


def measure_prospective(manifest: dict, out_measurements, coil_mode: str = "multicoil", split: str = "test",
                        max_cases: int | None = None, central_slices: int | None = None,
                        name: str | None = None, mask_file=None) -> dict:
    """Write the measurements of a prospective split with each file's own mask (or ``mask_file``)."""
    import torch

    from diffrecon.data.fastmri import DataFormatError, read_volume
    from diffrecon.physics.fft import ifft2c
    from diffrecon.physics.masks import mask_from_columns

    if coil_mode not in ("multicoil", "singlecoil"):
        raise ValueError(f"prospective data: coil mode must be multicoil or singlecoil, got '{coil_mode}'")
    files = _split_files(manifest, split, max_cases)
    first = None
    with CaseWriter(out_measurements, compress=("kspace",)) as fm:
        for path in files:
            vol = read_volume(path)
            H, W = vol.kspace.shape[-2:]
            if mask_file is not None:
                cols = load_mask_file(mask_file, W, H, f"{path} (k-space {H} x {W})")
            elif vol.mask is None:
                raise DataFormatError(f"{path}: no 'mask' dataset: not a prospective file (give a mask file)")
            else:
                cols = vol.mask
            mask = mask_from_columns(cols, H, kind="file" if mask_file is None else "mask_file")
            if coil_mode == "singlecoil" and vol.kspace.shape[1] != 1:
                raise DataFormatError(f"{path}: {vol.kspace.shape[1]} coils; coil mode singlecoil needs a single-coil file")
            sl = _central(vol.n_slices, central_slices)
            ksp = vol.kspace[sl] * mask.array
            zf = ifft2c(torch.from_numpy(np.ascontiguousarray(ksp))).numpy()
            scale = float(np.sqrt((np.abs(zf) ** 2).sum(axis=1)).max()) or 1.0
            data = (ksp / scale).astype(np.complex64)
            if coil_mode == "singlecoil":
                data = data[:, 0]
            fm.add(_case_name(path), {"scale": scale, "source": str(path), "slices": f"{sl.start}:{sl.stop}",
                                      "mask": json.dumps(mask.to_dict())}, kspace=data, mask=mask.array)
            first = first or mask
        meta = first.to_dict()
        fm.finish({"modality": "mri", "dataset": name or manifest["name"], "setting": prospective_setting(coil_mode),
                   "split": split, "coil_mode": coil_mode, "mask": json.dumps(meta), "prospective": True},
                  mask=first.array)
    log.info("measured %d prospective cases (%s), effective R of the first = %.2f", len(files), coil_mode,
             first.effective_acceleration)
    return meta
