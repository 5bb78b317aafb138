"""Classical MRI baselines: zero-filled and total-variation (compressed sensing).

Inputs are the measured (already masked) k-space of one volume:

* ``kspace`` (S, H, W) complex for ``magnitude`` / ``singlecoil``; (S, C, H, W) for ``multicoil``;
* ``mask`` (H, W) 0/1.

Outputs are magnitude volumes (S, H, W) float32, the quantity every MRI metric
is computed on.

TV uses sigpy's ``TotalVariationRecon`` (primal-dual hybrid gradient on
``0.5 ||M F S x - y||^2 + lambda ||grad x||_1``; sigpy's FFT is the same centred
orthonormal DFT as :func:`diffrecon.physics.fft.fft2c`). Multi-coil TV needs coil
maps: they are estimated with ESPIRiT from the calibration region of the
undersampled k-space itself, never from fully sampled data.
"""

from __future__ import annotations

import numpy as np
import torch

from diffrecon.physics.mri import SingleCoilMRI, rss


def zero_filled(kspace: np.ndarray, mask: np.ndarray, coil_mode: str) -> np.ndarray:
    """|A^H y| (single coil) or RSS_c |A^H y_c| (multi-coil), A = M F the single-coil operator.

    For measured data (M ⊙ y = y) and a 0/1 mask, A^H y = F^-1 y: the zero-filled image.
    """
    img = SingleCoilMRI(mask).A_adjoint(torch.from_numpy(np.ascontiguousarray(kspace)))
    out = rss(img, dim=-3) if coil_mode == "multicoil" else img.abs()
    return out.numpy().astype(np.float32)


def total_variation(kspace: np.ndarray, mask: np.ndarray, coil_mode: str, lam: float = 0.01,
                    iterations: int = 300, acs_width: int = 16, seed: int = 0) -> np.ndarray:
    """Slice-wise TV reconstruction; multi-coil maps by ESPIRiT from the ACS of ``kspace``.

    sigpy estimates the step size of its primal-dual solver by power iteration from a random
    start drawn from numpy's global generator; it is seeded with ``seed`` here (and the global
    state restored afterwards), so a reconstruction is the same in every run.
    """
    from sigpy.mri.app import TotalVariationRecon

    from diffrecon.physics.sensitivity import espirit_maps

    out = np.empty((kspace.shape[0],) + kspace.shape[-2:], np.float32)
    weights = mask.astype(np.float32)
    for s in range(kspace.shape[0]):
        if coil_mode == "multicoil":
            y = kspace[s]
            maps = espirit_maps(y, calib_width=acs_width)
        else:
            y = kspace[s][None]
            maps = np.ones_like(y)
        state = np.random.get_state()
        np.random.seed(seed)
        try:
            x = TotalVariationRecon(y, maps, lam, weights=weights, max_iter=iterations, show_pbar=False).run()
        finally:
            np.random.set_state(state)
        out[s] = np.abs(x)
    return out
