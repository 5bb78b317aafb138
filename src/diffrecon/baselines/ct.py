"""Classical CT baseline: filtered backprojection (ASTRA, ram-lak filter), slice by slice."""

from __future__ import annotations

import numpy as np
import torch

from diffrecon.physics.ct import CTGeometry, ParallelBeamCT


def fbp(sinogram: np.ndarray, geometry: CTGeometry, n_threads: int | None = None) -> np.ndarray:
    """FBP of a (slices, views, det) sinogram → (slices, n, n) float32 volume (not clipped)."""
    with ParallelBeamCT(geometry, n_threads=n_threads) as op:
        return op.A_dagger(torch.from_numpy(np.ascontiguousarray(sinogram, dtype=np.float32))).numpy()
