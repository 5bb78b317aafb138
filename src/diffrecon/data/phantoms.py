"""Parametric head phantoms for MRI (no download, seeded, fast).

:func:`head_volume` sums random ellipsoids on a normalised grid ``[-1, 1]^3``, so
neighbouring slices are continuous and every draw is a plausible "patient" of the same
family: skull shell, brain with grey/white-matter contrast, two ventricles, a few lesions, a
smooth intensity bias and a low amplitude smooth texture. Magnitude in ``[0, 1]``, shape
``(slices, H, W)`` float32. Synthetic: the layout of anatomy, not its real texture (real
anatomy: :mod:`diffrecon.data.anatomy`; chest CT: :mod:`diffrecon.data.thorax`).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def _grid(depth: int, size: int, z_extent: float):
    """Normalised coordinates: x, y in [-1, 1] (in-plane), z in [-z_extent, z_extent]."""
    lin = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    zs = np.linspace(-z_extent, z_extent, depth, dtype=np.float32) if depth > 1 else np.zeros(1, np.float32)
    z, y, x = np.meshgrid(zs, lin, lin, indexing="ij")
    return z, y, x


def ellipsoid(z, y, x, centre, radii, angle=0.0):
    """Boolean mask of an ellipsoid rotated by ``angle`` (radians) in the axial plane.

    ``((x'-cx)/rx)^2 + ((y'-cy)/ry)^2 + ((z-cz)/rz)^2 <= 1`` with (x', y') the rotated
    in-plane coordinates.
    """
    cz, cy, cx = centre
    rz, ry, rx = radii
    c, s = np.cos(angle), np.sin(angle)
    xr = c * (x - cx) + s * (y - cy)
    yr = -s * (x - cx) + c * (y - cy)
    return (xr / rx) ** 2 + (yr / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


def _smooth_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Zero-mean, unit-peak smooth random field (Gaussian-filtered white noise)."""
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma)
    return field / (np.abs(field).max() + 1e-12)


def head_volume(rng: np.random.Generator, depth: int, size: int, ood: bool = False) -> np.ndarray:
    """One random head-like magnitude volume ``(depth, size, size)`` in ``[0, 1]``.

    ``ood=True`` draws from a shifted family (inverted lesion contrast, larger
    ventricles, elongated head) for out-of-distribution robustness checks.
    """
    z, y, x = _grid(depth, size, z_extent=0.25)
    u = rng.uniform
    angle = u(-0.3, 0.3)
    ax, ay = u(0.70, 0.82), u(0.80, 0.92)
    if ood:
        ax, ay = ax * 0.85, min(ay * 1.05, 0.95)
    img = np.zeros_like(x)
    head = ellipsoid(z, y, x, (0, 0, 0), (1.2, ay, ax), angle)
    brain = ellipsoid(z, y, x, (0, 0.0, 0), (1.1, ay - 0.08, ax - 0.08), angle)
    img[head] = 0.85                                   # scalp / skull marrow (bright on T1)
    img[head & ~ellipsoid(z, y, x, (0, 0, 0), (1.15, ay - 0.04, ax - 0.04), angle)] = 0.95
    img[brain] = 0.45                                  # grey matter
    white = brain & ellipsoid(z, y, x, (0, u(-0.05, 0.05), 0), (1.0, ay - 0.25, ax - 0.22), angle)
    img[white] = 0.65                                  # white matter
    # gyri-like modulation of the grey/white boundary
    img[brain] += 0.08 * _smooth_field(rng, img.shape, sigma=size / 24)[brain]
    vent_scale = 1.6 if ood else 1.0
    for side in (-1, 1):                               # lateral ventricles (dark, CSF)
        vr = (0.6, u(0.16, 0.24) * vent_scale, u(0.05, 0.08) * vent_scale)
        img[ellipsoid(z, y, x, (0, u(-0.12, 0.0), side * u(0.10, 0.16)), vr, angle + side * 0.2)] = 0.12
    for _ in range(rng.integers(1, 4)):                # lesions
        r = u(0.04, 0.10)
        centre = (u(-0.15, 0.15), u(-0.5, 0.5) * ay, u(-0.5, 0.5) * ax)
        lesion = ellipsoid(z, y, x, centre, (r * 1.5, r, r * u(0.7, 1.3)), u(0, np.pi)) & brain
        img[lesion] = 0.25 if ood else u(0.80, 0.95)
    img += 0.03 * _smooth_field(rng, img.shape, sigma=1.0) * (img > 0)   # fine texture
    bias = 1.0 + 0.15 * _smooth_field(rng, img.shape, sigma=size / 4)   # coil-independent bias
    img = np.clip(img * bias, 0.0, None)
    return (img / img.max()).astype(np.float32)


def smooth_phase(rng: np.random.Generator, shape, max_rad: float = np.pi / 2) -> np.ndarray:
    """Smooth phase map ``(slices, H, W)`` in radians: a random low-order field, |phase| <= max_rad."""
    return (max_rad * _smooth_field(rng, shape, sigma=shape[-1] / 6)).astype(np.float32)
