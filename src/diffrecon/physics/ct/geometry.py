"""2-D parallel-beam CT geometry shared by every slice of a volume (ASTRA conventions).

A volume of D axial slices, each n x n pixels of side 1, is measured slice by slice: V
projection angles theta_v (radians) and ``det_count`` detector bins of pitch ``det_spacing``
centred on the rotation axis. Per slice the image is (n, n) and the sinogram (V, det_count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import astra
import numpy as np

__all__ = ["CTGeometry", "PROJECTORS"]

PROJECTORS = ("line", "strip", "linear")   # ASTRA 2-D CPU projectors (``linear`` = Joseph)


def _default_det_count(n: int) -> int:
    return int(math.ceil(math.sqrt(2.0) * n))


@dataclass(frozen=True)
class CTGeometry:
    """2-D parallel-beam geometry shared by every slice.

    Attributes
    ----------
    n : image side in pixels (slices are n x n, pixel size 1).
    angles : projection angles in radians (tuple of floats).
    det_count : number of detector bins; default ``ceil(sqrt(2) * n)``.
    det_spacing : detector pitch in pixel units (default 1).
    projector : ASTRA CPU projector: ``"line"``, ``"strip"`` or ``"linear"``.
    """

    n: int
    angles: tuple[float, ...]
    det_count: int | None = None
    det_spacing: float = 1.0
    projector: str = "linear"

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {self.n!r}")
        object.__setattr__(self, "n", int(self.n))
        try:
            angles = tuple(float(a) for a in np.asarray(self.angles, dtype=np.float64).reshape(-1))
        except (TypeError, ValueError):
            raise ValueError(f"angles must be a sequence of numbers, got {self.angles!r}") from None
        if len(angles) == 0:
            raise ValueError("angles must not be empty")
        if not all(math.isfinite(a) for a in angles):
            raise ValueError("angles must be finite")
        object.__setattr__(self, "angles", angles)
        det = _default_det_count(self.n) if self.det_count is None else self.det_count
        if isinstance(det, bool) or not isinstance(det, (int, np.integer)) or det < 1:
            raise ValueError(f"det_count must be a positive integer, got {det!r}")
        object.__setattr__(self, "det_count", int(det))
        sp = self.det_spacing
        if isinstance(sp, bool) or not isinstance(sp, (int, float, np.floating, np.integer)) \
                or not math.isfinite(sp) or sp <= 0:
            raise ValueError(f"det_spacing must be a positive finite number, got {sp!r}")
        object.__setattr__(self, "det_spacing", float(sp))
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")

    # -- constructors ------------------------------------------------------
    @classmethod
    def sparse_view(cls, n: int, n_views: int, **kwargs) -> "CTGeometry":
        """``n_views`` angles uniform over [0, pi), endpoint excluded."""
        if isinstance(n_views, bool) or not isinstance(n_views, (int, np.integer)) or n_views < 1:
            raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
        angles = np.linspace(0.0, np.pi, int(n_views), endpoint=False)
        return cls(n=n, angles=tuple(angles.tolist()), **kwargs)

    @classmethod
    def limited_angle(cls, n: int, n_views: int = 90, step_deg: float = 1.0, **kwargs) -> "CTGeometry":
        """``n_views`` angles ``0, step, 2 step, ...`` degrees (default 0..89 deg); span must stay below 180 deg."""
        if isinstance(n_views, bool) or not isinstance(n_views, (int, np.integer)) or n_views < 1:
            raise ValueError(f"n_views must be a positive integer, got {n_views!r}")
        if not isinstance(step_deg, (int, float, np.integer, np.floating)) or not math.isfinite(step_deg) \
                or step_deg <= 0:
            raise ValueError(f"step_deg must be a positive finite number, got {step_deg!r}")
        if (int(n_views) - 1) * float(step_deg) >= 180.0:
            raise ValueError(f"limited-angle span (n_views-1)*step_deg must be < 180 deg, got "
                             f"{(int(n_views) - 1) * float(step_deg)}")
        angles = np.deg2rad(np.arange(int(n_views), dtype=np.float64) * float(step_deg))
        return cls(n=n, angles=tuple(angles.tolist()), **kwargs)

    # -- derived -------------------------------------------------------------
    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def angles_deg(self) -> np.ndarray:
        return np.rad2deg(np.asarray(self.angles, dtype=np.float64))

    @property
    def image_shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def sino_shape(self) -> tuple[int, int]:
        """Per-slice sinogram shape (V, det_count)."""
        return (self.n_views, self.det_count)

    def astra_vol_geom(self) -> dict:
        return astra.create_vol_geom(self.n, self.n)

    def astra_proj_geom(self) -> dict:
        return astra.create_proj_geom("parallel", self.det_spacing, self.det_count,
                                      np.asarray(self.angles, dtype=np.float64))
