"""Centred, orthonormal 2-D discrete Fourier transform on torch tensors.

For an image ``x`` of shape ``(..., H, W)`` (k-space DC at index ``(H//2, W//2)``,
image centre at the same index) the transforms are

    fft2c(x)  = fftshift( D  ifftshift(x) ) / sqrt(H W)
    ifft2c(k) = fftshift( D^H ifftshift(k) ) / sqrt(H W)

with ``(D x)[u, v] = sum_{m,n} x[m, n] exp(-2 pi i (u m / H + v n / W))``
(the unnormalised 2-D DFT); the shifts act on the last two axes only. Both maps
are unitary (``torch.fft`` with ``norm="ortho"``), so ``ifft2c = fft2c^H =
fft2c^{-1}`` and ``||fft2c(x)|| = ||x||``. All leading axes are batch axes; the
output has the input's shape and a complex dtype (real inputs are promoted by
``torch.fft``). Works on whatever device the input lives on.
"""

from __future__ import annotations

import torch

_DIMS = (-2, -1)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal forward 2-D DFT over the last two axes: ``(..., H, W) -> (..., H, W)``."""
    x = torch.fft.ifftshift(x, dim=_DIMS)
    k = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(k, dim=_DIMS)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D DFT over the last two axes: ``(..., H, W) -> (..., H, W)``."""
    k = torch.fft.ifftshift(k, dim=_DIMS)
    x = torch.fft.ifft2(k, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)
