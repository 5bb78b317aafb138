"""Training tensors built from a dataset manifest.

* :func:`magnitude_slices` — score-MRI's training set: magnitude images only, each slice
  min-max normalised to [0, 1] (as the original's 320 x 320 training slices; a constant slice
  becomes zeros), (N, 1, H, W).
* :func:`ct_slices` — the 2-D CT priors' set (DDS, DiffusionMBIR): axial slices (N, 1, H, W).
* :func:`ct_patches` — DiffusionBlend's set: every 3-slice patch {j, j+k, j+2k} of every
  training volume for each configured spacing k, (N, 3, H, W), with the spacing as label (N,).

CT volumes are used in their stored [0, 1] scale (clipped).

These hold the whole set in memory (the ``memory`` loader); :mod:`diffrecon.data.streaming` reads
the same samples one at a time (the ``stream`` loader).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch

from diffrecon.data.fastmri import read_volume
from diffrecon.data.streaming import normalise_slice


def magnitude_slices(manifest: dict, split: str = "train") -> torch.Tensor:
    """All target magnitudes of ``split`` as (N, 1, h, w) float32 in [0, 1], slice-wise min-max normalised
    (:func:`~diffrecon.data.streaming.normalise_slice`)."""
    slices = []
    for path in manifest["splits"][split]:
        vol = read_volume(path)
        if vol.target is None:
            raise ValueError(f"{path}: no reconstruction_rss / reconstruction_esc target to train on")
        slices.extend(normalise_slice(img) for img in vol.target)
    if not slices:
        raise ValueError(f"dataset {manifest['name']}: split '{split}' has no usable slices")
    return torch.from_numpy(np.stack(slices)[:, None].astype(np.float32))


def tensor_hash(t: torch.Tensor) -> str:
    """Short content hash of a training tensor (the supervised baselines' sidecars record it; the
    priors record :meth:`diffrecon.data.streaming.StreamingSet.data_hash`)."""
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def _ct_volumes(manifest: dict, split: str):
    from diffrecon.data.ct_volumes import read_ct_volume

    files = manifest["splits"].get(split) or []
    if not files:
        raise ValueError(f"dataset {manifest['name']}: split '{split}' has no volumes")
    for path in files:
        yield np.clip(read_ct_volume(path), 0.0, 1.0).astype(np.float32)


def ct_slices(manifest: dict, split: str = "train") -> torch.Tensor:
    """All axial slices of ``split``, (N, 1, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.concatenate([v[:, None] for v in _ct_volumes(manifest, split)]))


def ct_patches(manifest: dict, spacings=(1, 3), split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """3-slice patches of every spacing in ``spacings``: ((N, 3, H, W) in [0, 1], labels (N,) int64)."""
    patches, labels = [], []
    for vol in _ct_volumes(manifest, split):
        for k in spacings:
            for j in range(vol.shape[0] - 2 * k):
                patches.append(vol[[j, j + k, j + 2 * k]])
                labels.append(k)
    if not patches:
        raise ValueError(f"dataset {manifest['name']}: volumes too short for spacings {tuple(spacings)}")
    return torch.from_numpy(np.stack(patches)), torch.tensor(labels, dtype=torch.int64)


def ct_perpendicular_slices(manifest: dict, window: int, split: str = "train", stride: int = 1) -> torch.Tensor:
    """TPDM's auxiliary training set: slices that contain z, in z windows of ``window`` slices.

    Every volume v (S, H, W) gives, at each window start z0 = 0, ``stride``, 2·``stride``, … and
    S − ``window``, its coronal
    slices v[z0:z0+window, h, :] (H of them) and sagittal slices v[z0:z0+window, :, w] (W),
    each (1, window, side) (side = W resp. H; square slices H = W). Returns (N, 1, window, side)
    float32 in [0, 1]. Volumes with fewer than ``window`` slices are left out (logged; real
    scans differ in length); a ValueError when none is long enough.
    """
    out, short = [], []
    for vol in _ct_volumes(manifest, split):
        if vol.shape[0] < window:
            short.append(vol.shape[0])
            continue
        if vol.shape[1] != vol.shape[2]:
            raise ValueError(f"dataset {manifest['name']}: perpendicular slices need square axial slices, "
                             f"got {vol.shape[1]} x {vol.shape[2]}")
        starts = sorted(set(range(0, vol.shape[0] - window + 1, max(1, int(stride)))) | {vol.shape[0] - window})
        for z0 in starts:
            part = vol[z0:z0 + window]
            out += [part.transpose(1, 0, 2), part.transpose(2, 0, 1)]      # coronal (H, win, W), sagittal
    if short:
        msg = (f"dataset {manifest['name']}: {len(short)} volume(s) with fewer slices than the z window of "
               f"{window} ({', '.join(map(str, sorted(set(short))))} slices)")
        if not out:
            raise ValueError(f"{msg}: no {split} volume is long enough for the perpendicular prior")
        logging.getLogger("diffrecon").warning("%s left out of the perpendicular prior's training set", msg)
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(out)[:, None]))
