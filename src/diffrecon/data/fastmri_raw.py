"""Raw fastMRI files (as distributed) → the preprocessed store, as score-MRI prepares them.

Input, one HDF5 file per volume (knee or brain, single- or multi-coil):
``kspace`` (S, C, H, W) or (S, H, W) on the encoded grid with readout oversampling
(knee: 640 × ~368), ``reconstruction_rss`` / ``reconstruction_esc`` (S, 320, 320),
``ismrmrd_header`` (encodedSpace and reconSpace matrix sizes); test/challenge files have
undersampled ``kspace``, a 1-D ``mask`` (W,) over columns and no target.

Conventions (each file, each kept slice):

* FFT: the centred orthonormal 2-D DFT of :mod:`diffrecon.physics.fft` (fastMRI's ``fft2c``).
* Crop: coil images ``ifft2c(kspace)`` are centre-cropped (:func:`~diffrecon.data.fastmri.center_crop`)
  in the image domain to the recon matrix of the header (x = rows = readout, y = columns),
  each side clipped to the image grid; the stored k-space is ``fft2c`` of the crop
  (e.g. 15 × 640 × 368 → 15 × 320 × 320).
* Target: the file's own magnitude target (``reconstruction_rss``, single-coil
  ``reconstruction_esc``), centre-cropped to the same grid, checked against the RSS (single
  coil: the magnitude) of the cropped coil images: relative L2 error per slice at most
  ``target_tolerance``, else the file is rejected.
* Prospective files (``mask``, no target): only the readout is cropped (rows; exact, since every
  acquired column is fully sampled along the readout); the columns and the file's own mask
  are kept, so the data stay a masked Cartesian acquisition.
* Edge slices: ``drop_edge_slices`` = ``[first_n, last_n]`` slices dropped at each end, or a
  fraction ``f`` in [0, 0.5): ``floor(f · S)`` slices dropped at each end (the outer slices of
  fastMRI volumes are mostly noise). At least one slice must remain.
* Normalisation: none in the store (scanner units; k-space and target share one scale). The
  ``simulate`` stage divides each volume by the maximum of its target (score-MRI works on
  [0, 1] magnitudes); prospective measurements by the maximum of the zero-filled magnitude.

The record written to ``manifest.json["preprocessing"]`` names every source file (size and mtime,
or sha256), the crop, the kept slices of each file, the normalisation and package versions.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np

from diffrecon.data.fastmri import (TARGET_KEYS, DataFormatError, center_crop, header_matrices, open_h5,
                                    volume_writer)

log = logging.getLogger("diffrecon")

DEFAULTS = {"drop_edge_slices": [0, 0], "target_tolerance": 0.05, "fingerprint": "size_mtime"}
NORMALISATION = ("none in the store (scanner units); simulate divides each volume by the maximum of its "
                 "target, prospective measurements by the maximum of the zero-filled magnitude")


def kept_slices(n_slices: int, rule) -> range:
    """Slice indices kept by the ``drop_edge_slices`` rule (``[first_n, last_n]`` or a fraction per end)."""
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        if not 0 <= rule < 0.5:
            raise ValueError(f"drop_edge_slices fraction must be in [0, 0.5), got {rule}")
        first = last = int(np.floor(rule * n_slices))
    else:
        first, last = (int(v) for v in rule)
    return range(first, n_slices - last)


def fingerprint(path: Path, how: str = "size_mtime") -> dict:
    """Size and mtime, or size and sha256, of a source file."""
    st = path.stat()
    out = {"size": st.st_size}
    if how == "sha256":
        from diffrecon.io import sha256_file

        out["sha256"] = sha256_file(path)
    else:
        out["mtime"] = st.st_mtime
    return out


def _recon_grid(f, path: Path, image_grid: tuple[int, int], target_shape) -> tuple[int, int]:
    """Recon matrix (rows, columns) from the header (else the target's grid), clipped to the image grid."""
    grid = None
    if "ismrmrd_header" in f:
        try:
            grid = header_matrices(f["ismrmrd_header"][()])["recon"]
        except (ValueError, KeyError, SyntaxError) as exc:
            raise DataFormatError(f"{path}: unreadable ismrmrd_header ({exc})") from None
    elif target_shape is not None:
        grid = tuple(target_shape[-2:])
    if grid is None:
        return image_grid
    return min(grid[0], image_grid[0]), min(grid[1], image_grid[1])


def preprocess_file(src, dst, drop_edge_slices=(0, 0), target_tolerance: float = 0.05) -> dict:
    """Preprocess one raw fastMRI file into ``dst`` (store layout, one chunk per slice).

    Returns the file's record: grid, coils, kept slices, prospective or not, and the largest
    relative error of the target against the RSS of the cropped coil images.
    """
    import torch

    from diffrecon.physics.fft import fft2c, ifft2c

    src, dst = Path(src), Path(dst)
    with open_h5(src) as f:
        if "kspace" not in f:
            raise DataFormatError(f"{src}: no 'kspace' dataset (keys: {sorted(f.keys())})")
        ksp = f["kspace"]
        if ksp.ndim not in (3, 4) or ksp.dtype.kind != "c":
            raise DataFormatError(f"{src}: 'kspace' must be complex (slices, [coils,] H, W), "
                                  f"got {ksp.dtype} {ksp.shape}")
        multicoil = ksp.ndim == 4
        H, W = ksp.shape[-2:]
        tkey = next((k for k in TARGET_KEYS if k in f), None)
        target = f[tkey] if tkey else None
        mask = np.asarray(f["mask"][()], dtype=np.float32).reshape(-1) if "mask" in f else None
        prospective = target is None and mask is not None
        if target is None and mask is None:
            raise DataFormatError(f"{src}: neither a target ({' / '.join(TARGET_KEYS)}) nor a 'mask' "
                                  "(a fully sampled file needs its target, a prospective file its mask)")
        if mask is not None and mask.size != W:
            raise DataFormatError(f"{src}: 'mask' has {mask.size} entries, k-space has {W} columns")
        if target is not None and (target.ndim != 3 or target.shape[0] != ksp.shape[0]):
            raise DataFormatError(f"{src}: target {tkey} shape {target.shape} does not match kspace {ksp.shape}")
        h, w = _recon_grid(f, src, (H, W), None if target is None else target.shape)
        grid = (h, W) if prospective else (h, w)
        if target is not None and (target.shape[1] < h or target.shape[2] < w):
            raise DataFormatError(f"{src}: target {target.shape[1:]} smaller than the recon matrix {(h, w)}")
        keep = kept_slices(ksp.shape[0], drop_edge_slices)
        if len(keep) < 1:
            raise DataFormatError(f"{src}: drop_edge_slices {drop_edge_slices} leaves no slice of {ksp.shape[0]}")
        slice_shape = (ksp.shape[1], *grid) if multicoil else grid
        attrs = {k: v for k, v in f.attrs.items() if k in ("acquisition", "patient_id", "acceleration",
                                                            "num_low_frequency")}
        attrs.update(source=src.name, source_slices=np.asarray(list(keep), dtype=np.int32))
        worst = 0.0
        with volume_writer(dst, len(keep), slice_shape, None if prospective else (h, w), attrs,
                           mask=mask if prospective else None) as (kout, tout):
            for i, s in enumerate(keep):
                img = center_crop(ifft2c(torch.from_numpy(np.ascontiguousarray(ksp[s]))).numpy(), grid)
                kout[i] = fft2c(torch.from_numpy(np.ascontiguousarray(img))).numpy().astype(np.complex64)
                if prospective:
                    continue
                mag = np.sqrt((np.abs(img) ** 2).sum(axis=0)) if multicoil else np.abs(img)
                t = center_crop(np.asarray(target[s], dtype=np.float32), (h, w))
                err = float(np.linalg.norm(t - mag) / max(np.linalg.norm(t), 1e-30))
                if err > target_tolerance:
                    raise DataFormatError(
                        f"{src}: slice {s}: target {tkey} differs from the RSS of the cropped coil images by "
                        f"{err:.1%} (target_tolerance {target_tolerance:.1%})")
                worst = max(worst, err)
                tout[i] = t
    return {"coils": int(ksp.shape[1]) if multicoil else 1, "multicoil": multicoil,
            "source_grid": [int(H), int(W)], "grid": [int(g) for g in grid], "prospective": prospective,
            "n_source_slices": int(ksp.shape[0]), "slices": list(keep), "target": tkey,
            "target_max_rel_error": None if prospective else worst}


def is_prospective_file(path) -> bool:
    """Whether ``path`` is an HDF5 file with a ``mask`` and no target (False for anything unreadable)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return "mask" in f and not any(k in f for k in TARGET_KEYS)
    except OSError:
        return False


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("diffrecon", "numpy", "h5py", "torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def prepare_fastmri(name: str, cfg: dict, outdir) -> tuple[dict, dict]:
    """Preprocess every file of every split of a ``source: fastmri`` dataset into ``outdir/<split>/``.

    Returns ``(splits, record)``: the store files per split and the preprocessing record.
    A prospective file in a dataset not marked ``prospective: true`` (or the reverse, in its
    test split) is an error naming the file.
    """
    outdir = Path(outdir)
    opts = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    flagged = bool(cfg.get("prospective", False))
    splits, files = {}, {}
    for split, pattern in cfg["files"].items():
        matches = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
        if not matches:
            raise FileNotFoundError(f"datasets: {name}: split '{split}' pattern '{Path(pattern).name}' "
                                    f"in {Path(pattern).parent} matches no file")
        splits[split], files[split] = [], []
        for src in map(Path, matches):
            dst = outdir / split / f"{src.stem}.h5"
            rec = preprocess_file(src, dst, opts["drop_edge_slices"], opts["target_tolerance"])
            if rec["prospective"] and not flagged:
                dst.unlink(missing_ok=True)
                raise DataFormatError(f"{src}: has a 'mask' and no target (a test/challenge file): "
                                      f"set datasets.{name}.prospective: true")
            if flagged and split == "test" and not rec["prospective"]:
                dst.unlink(missing_ok=True)
                raise DataFormatError(f"{src}: dataset {name} is prospective but this file has a target and no mask")
            log.info("%s/%s: %s -> %d slices", name, split, src.name, len(rec["slices"]))
            splits[split].append(str(dst))
            files[split].append({"source": str(src), **fingerprint(src, opts["fingerprint"]), "store": str(dst), **rec})
    record = {
        "source": "fastmri",
        "fft": "centred orthonormal 2-D DFT (diffrecon.physics.fft)",
        "crop": "image-domain centre crop of the coil images to the header's recon matrix (rows x columns); "
                "k-space recomputed from the crop; prospective files: rows (readout) only",
        "target": f"the file's own target, checked against the RSS of the cropped coil images "
                  f"(relative L2 <= {opts['target_tolerance']})",
        "drop_edge_slices": opts["drop_edge_slices"],
        "normalisation": NORMALISATION,
        "fingerprint": opts["fingerprint"],
        "files": files,
        "versions": _versions(),
    }
    return splits, record
