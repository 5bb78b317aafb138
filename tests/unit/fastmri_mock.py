"""Mock raw fastMRI files at the real dimensions (no licence-bound data).

Multi-coil: ``kspace`` (S, 15, 640, 368) with 2x readout oversampling, ``reconstruction_rss``
(S, 320, 320) = RSS of the centre-cropped coil images, ``ismrmrd_header`` with encodedSpace
640 x 368 and reconSpace 320 x 320. Single-coil: ``kspace`` (S, 640, 368), ``reconstruction_esc``.
Prospective: undersampled ``kspace``, 1-D ``mask`` (368,), attrs ``acceleration`` and
``num_low_frequency``, no target.
"""

from __future__ import annotations

import h5py
import numpy as np
import torch

from diffrecon.physics.fft import fft2c

H, W, RECON = 640, 368, (320, 320)

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
    <trajectory>cartesian</trajectory>
  </encoding>
</ismrmrdHeader>
"""


def coil_images(n_slices: int, n_coils: int, seed: int = 0) -> np.ndarray:
    """(S, C, 640, 368) complex64: an ellipse object in the central half of the readout, smooth
    phase, Gaussian coil sensitivities around it."""
    rng = np.random.default_rng(seed)
    y, x = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    out = np.empty((n_slices, n_coils, H, W), np.complex64)
    for s in range(n_slices):
        a, b = 0.38 + 0.05 * rng.random(), 0.6 + 0.1 * rng.random()
        obj = ((y / a) ** 2 + (x / b) ** 2 < 1).astype(float) * (0.6 + 0.4 * np.cos(3 * x + s))
        obj += 0.5 * (((y - 0.1) / 0.1) ** 2 + ((x + 0.2) / 0.2) ** 2 < 1)
        img = obj * np.exp(1j * (0.5 * x + 0.3 * y + rng.random()))
        for c in range(n_coils):
            t = 2 * np.pi * c / n_coils
            sens = np.exp(-((y - 0.4 * np.cos(t)) ** 2 + (x - 0.8 * np.sin(t)) ** 2) / 0.5) * np.exp(1j * t)
            out[s, c] = img * sens
    return out


def centre(x: np.ndarray, shape=RECON) -> np.ndarray:
    h, w = shape
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top:top + h, left:left + w]


def fastmri_column_mask(acceleration: int = 4, center_fraction: float = 0.08, seed: int = 0) -> np.ndarray:
    from diffrecon.physics.masks import fastmri_columns

    return fastmri_columns("random", W, acceleration, center_fraction, seed)


def write_raw(path, n_slices: int = 3, multicoil: bool = True, prospective: bool = False, n_coils: int = 15,
              seed: int = 0, target_scale: float = 1.0, header: bool = True) -> dict:
    """Write one mock raw fastMRI file; returns the arrays it was made from."""
    imgs = coil_images(n_slices, n_coils if multicoil else 1, seed)
    kspace = fft2c(torch.from_numpy(imgs)).numpy()
    crop = centre(imgs)
    target = (np.sqrt((np.abs(crop) ** 2).sum(axis=1)) if multicoil else np.abs(crop[:, 0])) * target_scale
    mask = None
    if prospective:
        mask = fastmri_column_mask(seed=seed)
        kspace = kspace * mask
    if not multicoil:
        kspace = kspace[:, 0]
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64))
        if header:
            f.create_dataset("ismrmrd_header", data=np.bytes_(HEADER.format(H=H, W=W, h=RECON[0], w=RECON[1])))
        if prospective:
            f.create_dataset("mask", data=mask.astype(bool))
            f.attrs["acceleration"] = 4
            f.attrs["num_low_frequency"] = int(round(W * 0.08))
        else:
            f.create_dataset("reconstruction_rss" if multicoil else "reconstruction_esc",
                             data=target.astype(np.float32))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["patient_id"] = f"mock{seed}"
    return {"images": imgs, "crop": crop, "target": target, "mask": mask, "kspace": kspace}
