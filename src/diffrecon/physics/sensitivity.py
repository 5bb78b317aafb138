"""Coil sensitivity maps: simulated birdcage maps and ESPIRiT estimates (via sigpy).

Maps are complex64 numpy arrays of shape ``(C, H, W)``. sigpy is imported inside
the functions because its import takes about two seconds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["birdcage_maps", "espirit_maps"]


def birdcage_maps(n_coils: int, shape: tuple[int, int]) -> np.ndarray:
    """Simulated birdcage coil sensitivities, ``(n_coils, H, W)`` complex64.

    The coils sit on a ring around the field of view (``sigpy.mri.birdcage_maps``),
    and the maps are normalised so that ``sqrt(Σ_c |S_c|²) = 1`` at every pixel.
    """
    import sigpy.mri

    if n_coils < 1:
        raise ValueError(f"n_coils must be >= 1, got {n_coils}")
    h, w = (int(s) for s in shape)
    maps = sigpy.mri.birdcage_maps((int(n_coils), h, w), dtype=np.complex128)
    # sigpy already divides by the RSS; redo it so the guarantee does not depend on that.
    maps = maps / np.sqrt(np.sum(np.abs(maps) ** 2, axis=0, keepdims=True))
    return maps.astype(np.complex64)


def espirit_maps(
    kspace,
    calib_width: int,
    kernel_width: int | None = None,
    thresh: float = 0.02,
    crop: float = 0.95,
) -> np.ndarray:
    """Estimate coil maps with ESPIRiT (``sigpy.mri.app.EspiritCalib``), one set of maps.

    Args:
        kspace: ``(C, H, W)`` complex multi-coil k-space in the centred layout of
            :func:`~diffrecon.physics.fft.fft2c` (numpy or torch, any device).
            Typically the undersampled k-space; only its centred
            ``calib_width x calib_width`` block is used, which must be fully sampled
            (see :func:`~diffrecon.physics.masks.acs_width`).
        calib_width: side of the calibration block, ``>= 3``.
        kernel_width: ESPIRiT kernel size; defaults to ``min(6, calib_width // 2)``
            (a kernel close to the calibration width leaves too few rows in the
            calibration matrix and ESPIRiT returns all-zero maps).
        thresh: singular-value threshold (relative to the largest) for the
            calibration matrix null space.
        crop: maps are zeroed where the top eigenvalue of the ESPIRiT operator
            is below ``crop`` (outside the object).

    Returns:
        complex64 ``(C, H, W)`` maps, phase-referenced to coil 0; inside the
        object ``Σ_c |S_c|² ≈ 1``.
    """
    import sigpy.mri.app

    if hasattr(kspace, "detach"):  # torch tensor
        kspace = kspace.detach().cpu().numpy()
    ksp = np.asarray(kspace)
    if ksp.ndim != 3:
        raise ValueError(f"kspace must have shape (C, H, W), got {ksp.shape}")
    calib_width = int(calib_width)
    if calib_width < 3:
        raise ValueError(f"calib_width must be >= 3, got {calib_width}")
    if calib_width > min(ksp.shape[1:]):
        raise ValueError(f"calib_width must be <= min(H, W) = {min(ksp.shape[1:])}, got {calib_width}")
    if kernel_width is None:
        kernel_width = min(6, calib_width // 2)
    if not 1 <= kernel_width <= calib_width:
        raise ValueError(f"kernel_width must be in [1, calib_width={calib_width}], got {kernel_width}")

    ksp = ksp.astype(np.complex64)
    maps = sigpy.mri.app.EspiritCalib(
        ksp,
        calib_width=calib_width,
        thresh=thresh,
        kernel_width=int(kernel_width),
        crop=crop,
        show_pbar=False,
    ).run()
    maps = np.asarray(maps).astype(np.complex64)
    if not np.any(maps):
        raise ValueError(f"ESPIRiT found no sensitivity (calib_width={calib_width}, kernel_width={kernel_width}): "
                         "enlarge the calibration region or shrink the kernel")
    return maps
