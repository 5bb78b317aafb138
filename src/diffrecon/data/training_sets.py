"""Training tensors built from a dataset manifest.

* :func:`magnitude_slices` — score-MRI's training set: magnitude images only, each slice
  min-max normalised to [0, 1] (as the original's 320 x 320 training slices), (N, 1, H, W).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from diffrecon.data.fastmri import read_volume


def magnitude_slices(manifest: dict, split: str = "train") -> torch.Tensor:
    """All target magnitudes of ``split`` as (N, 1, h, w) float32 in [0, 1], slice-wise min-max normalised."""
    slices = []
    for path in manifest["splits"][split]:
        vol = read_volume(path)
        if vol.target is None:
            raise ValueError(f"{path}: no reconstruction_rss / reconstruction_esc target to train on")
        for img in vol.target:
            lo, hi = float(img.min()), float(img.max())
            if hi > lo:
                slices.append((img - lo) / (hi - lo))
    if not slices:
        raise ValueError(f"dataset {manifest['name']}: split '{split}' has no usable slices")
    return torch.from_numpy(np.stack(slices)[:, None].astype(np.float32))


def tensor_hash(t: torch.Tensor) -> str:
    """Short content hash of a training tensor (recorded in checkpoint sidecars)."""
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]
