"""Cartesian MRI forward models: single-coil masked Fourier and multi-coil SENSE.

Notation (``F`` = :func:`~diffrecon.physics.fft.fft2c`, unitary and centred;
``M`` = k-space sampling mask of shape ``(H, W)``, applied point-wise):

* single coil:  ``y = M ⊙ F x``,                 ``A^H y = F^{-1}(M ⊙ y)``
* SENSE:        ``y_c = M ⊙ F(S_c ⊙ x)``,         ``A^H y = Σ_c conj(S_c) ⊙ F^{-1}(M ⊙ y_c)``
* data consistency (single coil, ``0 ≤ λ ≤ 1``):
  ``P_λ(x) = F^{-1}[(1 − λM) ⊙ F x + λ y]``; for a 0/1 mask and ``λ = 1`` this is the
  orthogonal projection onto ``{x : M ⊙ F x = y}`` (measured samples replaced by ``y``, the
  others kept), see :meth:`SingleCoilMRI.project`.

Images ``x`` have shape ``(..., H, W)``; single-coil k-space has the same shape,
multi-coil k-space has shape ``(..., C, H, W)``. Leading axes are batch axes: the
single-coil operator applied to ``(S, C, H, W)`` coil images treats every slice and
coil independently; SENSE maps may carry leading axes of their own (one map set per
slice, ``(S, C, H, W)``), broadcast against the batch axes of the image.
Parameters (mask, maps) are stored once and moved/cast on the fly to the
device and precision of the input, so the operators run unchanged on CPU or
CUDA and in single or double precision (complex64 input -> complex64 output,
complex128 -> complex128; real input is promoted to the matching complex type).
"""

from __future__ import annotations

import numpy as np
import torch

from .fft import fft2c, ifft2c
from .operator import LinearOperator

__all__ = ["SingleCoilMRI", "MultiCoilMRI", "rss"]


def _as_mask_tensor(mask) -> torch.Tensor:
    """``(H, W)`` mask (numpy, torch, or an object with an ``.array`` such as ``masks.Mask``) -> float tensor."""
    if hasattr(mask, "array"):
        mask = mask.array
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {tuple(m.shape)}")
    if m.is_complex():
        m = m.real
    if not m.is_floating_point():
        m = m.to(torch.float32)
    return m


def _complex_dtype(t: torch.Tensor) -> torch.dtype:
    """Complex dtype with the precision of ``t`` (float64/complex128 -> complex128, else complex64)."""
    if t.is_complex():
        return t.dtype
    return torch.complex128 if t.dtype == torch.float64 else torch.complex64


def _real_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype in (torch.float64, torch.complex128) else torch.float32


def _check_image_shape(x: torch.Tensor, shape: tuple[int, int], what: str) -> None:
    if tuple(x.shape[-2:]) != shape:
        raise ValueError(f"{what} must end in {shape}, got shape {tuple(x.shape)}")


class SingleCoilMRI(LinearOperator):
    """Masked centred Fourier transform ``y = M ⊙ F x``.

    Args:
        mask: ``(H, W)`` sampling mask (numpy array, torch tensor or ``Mask``);
            stored as a real floating tensor (float32 unless already floating).

    ``A``: ``(..., H, W) -> (..., H, W)`` complex. ``A_adjoint(y) = F^{-1}(M ⊙ y)``.
    For a 0/1 mask ``A A^H A = A`` and ``A^H`` is the Moore-Penrose
    pseudo-inverse, so ``A_dagger = A_adjoint`` (the zero-filled reconstruction;
    for already masked data ``M ⊙ y = y``, so it is ``F^{-1} y``).
    :meth:`project` is the data-consistency step of the MRI samplers.
    """

    def __init__(self, mask):
        self.mask = _as_mask_tensor(mask)

    @property
    def shape(self) -> tuple[int, int]:
        """Image / k-space shape ``(H, W)``."""
        return tuple(self.mask.shape)

    def to(self, device) -> "SingleCoilMRI":
        """Return a copy whose mask lives on ``device``."""
        return type(self)(self.mask.to(device))

    def _mask_for(self, t: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=t.device, dtype=_real_dtype(t))

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        _check_image_shape(x, self.shape, "x")
        k = fft2c(x)
        return self._mask_for(k) * k

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        _check_image_shape(y, self.shape, "y")
        y = y.to(_complex_dtype(y))
        return ifft2c(self._mask_for(y) * y)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Pseudo-inverse; equals :meth:`A_adjoint` for a binary mask (zero-filled reconstruction)."""
        return self.A_adjoint(y)

    def project(self, x: torch.Tensor, y: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
        """Data consistency ``F^{-1}[(1 − λM) ⊙ F x + λ y]`` of complex images ``x`` with k-space ``y``.

        ``x`` and ``y`` have the same shape ``(..., H, W)`` (slices, coils, samples as leading
        batch axes; every image is treated independently). ``y`` is measured k-space
        (``M ⊙ y = y``). For a 0/1 mask and ``λ = 1`` the result is the orthogonal projection of
        ``x`` onto ``{x : M ⊙ F x = y}``: measured frequencies are replaced by ``y``, unmeasured
        ones kept, and ``project(project(x)) = project(x)``; ``λ < 1`` moves the measured
        frequencies only the fraction ``λ`` of the way to ``y``. The mask takes the precision of
        ``y`` (``y.real.dtype``) and is evaluated as ``k − λ M k + λ y`` with ``k = F x``.
        """
        _check_image_shape(x, self.shape, "x")
        _check_image_shape(y, self.shape, "y")
        k = fft2c(x)
        return ifft2c(k - lam * self._mask_for(y) * k + lam * y)


class MultiCoilMRI(LinearOperator):
    """SENSE forward model ``y_c = M ⊙ F(S_c ⊙ x)``, ``c = 1..C``.

    Args:
        maps: ``(C, H, W)`` complex coil sensitivities ``S`` (numpy or torch);
            kept at their own complex precision (real maps become complex64).
            Maps of shape ``(..., C, H, W)`` (e.g. one map set per slice,
            ``(S, C, H, W)``) broadcast their leading axes against the batch axes
            of the images (``(S, H, W)`` images then use the maps of their slice).
        mask: ``(H, W)`` sampling mask shared by all coils.

    ``A``: ``(..., H, W) -> (..., C, H, W)``;
    ``A_adjoint``: ``(..., C, H, W) -> (..., H, W)``,
    ``A^H y = Σ_c conj(S_c) ⊙ F^{-1}(M ⊙ y_c)``.
    :meth:`coil_images` (``S ⊙ x``) and :meth:`coil_combine` (``Σ_c conj(S_c) ⊙ x_c``)
    are the image-domain halves of ``A`` and ``A^H``.
    If the maps are RSS-normalised (``Σ_c |S_c|² = 1``) and the mask is full,
    ``A^H A = I``.
    """

    def __init__(self, maps, mask):
        s = maps if isinstance(maps, torch.Tensor) else torch.as_tensor(np.asarray(maps))
        if s.ndim < 3:
            raise ValueError(f"maps must have shape (..., C, H, W), got {tuple(s.shape)}")
        if not s.is_complex():
            s = s.to(torch.complex64)
        self.maps = s
        self.mask = _as_mask_tensor(mask).to(s.device)
        if tuple(self.mask.shape) != tuple(s.shape[-2:]):
            raise ValueError(
                f"mask shape {tuple(self.mask.shape)} does not match maps shape {tuple(s.shape[-2:])}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)``."""
        return tuple(self.mask.shape)

    @property
    def n_coils(self) -> int:
        return int(self.maps.shape[-3])

    def to(self, device) -> "MultiCoilMRI":
        """Return a copy whose maps and mask live on ``device``."""
        return type(self)(self.maps.to(device), self.mask.to(device))

    def _maps_for(self, t: torch.Tensor) -> torch.Tensor:
        return self.maps.to(device=t.device, dtype=_complex_dtype(t))

    def _mask_for(self, t: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=t.device, dtype=_real_dtype(t))

    def coil_images(self, x: torch.Tensor) -> torch.Tensor:
        """``S ⊙ x``: ``(..., H, W) -> (..., C, H, W)``."""
        _check_image_shape(x, self.shape, "x")
        return self._maps_for(x) * x.unsqueeze(-3)

    def coil_combine(self, x: torch.Tensor) -> torch.Tensor:
        """``Σ_c conj(S_c) ⊙ x_c``: ``(..., C, H, W) -> (..., H, W)`` (the adjoint of :meth:`coil_images`)."""
        _check_image_shape(x, self.shape, "x")
        if x.ndim < 3 or x.shape[-3] != self.n_coils:
            raise ValueError(f"x must have shape (..., {self.n_coils}, H, W), got {tuple(x.shape)}")
        return torch.sum(torch.conj(self._maps_for(x)) * x, dim=-3)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        k = fft2c(self.coil_images(x))
        return self._mask_for(k) * k

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        _check_image_shape(y, self.shape, "y")
        if y.ndim < 3 or y.shape[-3] != self.n_coils:
            raise ValueError(f"y must have shape (..., {self.n_coils}, H, W), got {tuple(y.shape)}")
        y = y.to(_complex_dtype(y))
        imgs = ifft2c(self._mask_for(y) * y)
        return torch.sum(torch.conj(self._maps_for(y)) * imgs, dim=-3)


def rss(coil_images, dim: int = -3):
    """Root-sum-of-squares magnitude combine ``sqrt(Σ_c |x_c|²)`` along ``dim``.

    Accepts a torch tensor or numpy array (returns the same kind, real-valued).
    This is the magnitude RSS used by fastMRI, not the complex ``sqrt(Σ_c x_c²)``.
    """
    if isinstance(coil_images, torch.Tensor):
        return torch.sqrt(torch.sum(torch.abs(coil_images) ** 2, dim=dim))
    a = np.asarray(coil_images)
    return np.sqrt(np.sum(np.abs(a) ** 2, axis=dim))
