"""Classical MRI baselines: reproducibility of the TV solver."""

from __future__ import annotations

import numpy as np

from diffrecon.baselines.mri import total_variation
from diffrecon.physics.fft import fft2c


def _measured(seed: int = 0):
    rng = np.random.default_rng(seed)
    img = np.zeros((1, 24, 24), np.complex64)
    img[0, 6:18, 8:16] = 1.0 + 0.2 * rng.random((12, 8))
    mask = (rng.random((24, 24)) < 0.4).astype(np.float32)
    mask[:, 10:14] = 1
    import torch

    ksp = fft2c(torch.from_numpy(img)).numpy() * mask
    return ksp, mask


def test_tv_does_not_depend_on_numpy_global_state_and_restores_it():
    ksp, mask = _measured()
    np.random.seed(1)
    a = total_variation(ksp, mask, "singlecoil", iterations=20)
    state = np.random.get_state()
    b = total_variation(ksp, mask, "singlecoil", iterations=20)
    after = np.random.get_state()
    np.random.seed(99)
    c = total_variation(ksp, mask, "singlecoil", iterations=20)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(state[1], after[1])           # the caller's global generator is left alone
    d = total_variation(ksp, mask, "singlecoil", iterations=20, seed=5)
    assert not np.array_equal(a, d)                      # the seed does reach the solver
