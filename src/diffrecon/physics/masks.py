"""Cartesian k-space sampling masks.

A mask is a float32 array of shape ``(H, W)`` with entries in {0, 1}, laid out
in centred k-space (DC at ``(H//2, W//2)``, as produced by
:func:`~diffrecon.physics.fft.fft2c`). The phase-encode direction is the last
axis (columns).

Kinds
-----
``gaussian1d`` / ``uniform1d``
    Whole columns. A centred ACS block of ``n_acs = round(W * acs_fraction)``
    columns (indices ``W//2 - n_acs//2 ... + n_acs - 1``) is always sampled; the
    remaining ``round(W / R) - n_acs`` columns are drawn *without replacement*
    from the other columns, with probability proportional to a Gaussian in the
    column index (mean ``W/2``, std ``W * 15/128``) or uniformly. Every row of
    the mask is identical.
``gaussian2d`` / ``uniform2d``
    Single k-space points. A centred ``c x c`` calibration square,
    ``c = round(min(H, W) * acs_fraction)``, is always sampled; the remaining
    ``round(H * W / R) - c²`` points are drawn without replacement, with
    probability proportional to an isotropic Gaussian centred at
    ``(H/2, W/2)`` with std ``min(H, W) * sqrt(1.5/128)`` pixels, or uniformly.
``poisson``
    Variable-density Poisson-disc sampling from ``sigpy.mri.poisson`` with a
    ``c x c`` calibration region (same ``c`` as above; the centred square is
    additionally forced to 1 so that all 2-D kinds share the same calibration
    region). Its effective acceleration is only within sigpy's tolerance
    (0.1 absolute) of the target.

``random`` / ``equispaced`` / ``equispacedfraction``
    fastMRI's own column masks (``fastmri.data.subsample`` ``RandomMaskFunc``,
    ``EquiSpacedMaskFunc``, ``EquispacedMaskFractionFunc``), reimplemented exactly
    (same ``numpy.random.RandomState`` draws, tested against the package): a
    centred block of ``round(W * acs_fraction)`` columns starting at
    ``(W - n_acs + 1) // 2``, plus, for ``random``, every column with probability
    ``(W/R - n_acs) / (W - n_acs)``; for ``equispaced``, every ``R``-th column
    from a random offset in ``[0, R)`` (``R`` must be an integer); for
    ``equispacedfraction``, columns at the rounded positions of
    ``arange(offset, W - 1, R')`` with ``R'`` chosen so that the ACS block plus
    these columns give ``W/R`` columns on average. The number of sampled columns
    of ``random`` is random (its effective acceleration is close to ``R``). ``R = 1``
    gives the full mask.

Design note: the original score-MRI mask code draws the extra lines/points
*with* replacement, so duplicates are lost and the effective acceleration
``H*W / (number sampled)`` ends up larger than the nominal ``R``. Here draws are
*without* replacement, so the exact-count kinds sample exactly
``round(W/R)`` columns or ``round(H*W/R)`` points and hit the target ``R`` up to
rounding. Weighted sampling without replacement uses the Gumbel-top-k trick
(equivalent to drawing one item at a time proportional to its weight among the
items not yet drawn).

Every kind is deterministic given ``seed`` (``numpy.random.default_rng(seed)``;
for ``poisson`` the seed is passed to sigpy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["MASK_KINDS", "Mask", "make_mask", "acs_width", "fastmri_columns", "mask_from_columns", "measured_acs_width"]

MASK_KINDS = ("gaussian1d", "uniform1d", "gaussian2d", "uniform2d", "poisson",
              "random", "equispaced", "equispacedfraction")
_KINDS_FASTMRI = ("random", "equispaced", "equispacedfraction")
_KINDS_1D = ("gaussian1d", "uniform1d") + _KINDS_FASTMRI

# Gaussian widths relative to the matrix size (std = W*15/128 columns for 1-D,
# std = min(H,W)*sqrt(1.5/128) pixels for 2-D).
_STD_1D = 15.0 / 128.0
_STD_2D = math.sqrt(1.5 / 128.0)


@dataclass
class Mask:
    """A sampling mask and the parameters that produced it.

    Attributes:
        array: float32 ``(H, W)`` array of 0/1 (1 = sampled).
        kind: one of :data:`MASK_KINDS`.
        acceleration: nominal acceleration ``R`` requested.
        acs_fraction: requested ACS/calibration size as a fraction of the matrix.
        seed: random seed used.
    """

    array: np.ndarray
    kind: str
    acceleration: float
    acs_fraction: float
    seed: int | None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.array.shape)

    @property
    def n_sampled(self) -> int:
        return int(np.count_nonzero(self.array))

    @property
    def effective_acceleration(self) -> float:
        """``1 / mean(array)`` = ``H*W / number of sampled points``."""
        return float(self.array.size / self.n_sampled) if self.n_sampled else math.inf

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable metadata (no array)."""
        return {
            "kind": self.kind,
            "shape": [int(s) for s in self.array.shape],
            "acceleration": float(self.acceleration),
            "effective_acceleration": self.effective_acceleration,
            "acs_fraction": float(self.acs_fraction),
            "acs_width": acs_width(self),
            "n_sampled": self.n_sampled,
            "seed": None if self.seed is None else int(self.seed),
        }


def _centre_slice(n: int, width: int) -> slice:
    """Slice of ``width`` indices centred on ``n // 2`` (the DC index of centred k-space)."""
    start = n // 2 - width // 2
    return slice(start, start + width)


def _calib_width_2d(shape: tuple[int, int], acs_fraction: float) -> int:
    return int(round(min(shape) * acs_fraction))


def acs_width(mask_or_shape, acs_fraction: float | None = None) -> int:
    """Side, in pixels, of the fully sampled centred calibration square.

    Args:
        mask_or_shape: a :class:`Mask` or an ``(H, W)`` shape.
        acs_fraction: ACS fraction; defaults to ``mask.acs_fraction`` for a Mask.

    For a 1-D mask this is ``min(round(W * acs_fraction), H)`` (the ACS block
    spans all rows); for 2-D kinds and ``poisson`` it is
    ``round(min(H, W) * acs_fraction)``. Given only a shape, the 2-D value is
    returned, which is never larger than the 1-D one and so is a valid
    calibration width for every kind (e.g. for ESPIRiT's ``calib_width``).
    """
    if isinstance(mask_or_shape, Mask):
        frac = mask_or_shape.acs_fraction if acs_fraction is None else acs_fraction
        h, w = mask_or_shape.shape
        if mask_or_shape.kind in _KINDS_1D:
            return min(int(round(w * frac)), h)
        return _calib_width_2d((h, w), frac)
    if acs_fraction is None:
        raise ValueError("acs_fraction is required when a shape (not a Mask) is given")
    h, w = (int(s) for s in mask_or_shape)
    return _calib_width_2d((h, w), acs_fraction)


def _draw_without_replacement(
    rng: np.random.Generator, candidates: np.ndarray, log_weights: np.ndarray | None, k: int
) -> np.ndarray:
    """Draw ``k`` distinct entries of ``candidates``, uniformly or with probability ∝ ``exp(log_weights)``."""
    if k <= 0:
        return candidates[:0]
    if log_weights is None:
        return rng.choice(candidates, size=k, replace=False)
    # Gumbel-top-k: the k largest log(w) + Gumbel noise == k successive weighted draws
    # without replacement. Log-weights avoid underflow in the Gaussian tails.
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    top = np.argpartition(-keys, k - 1)[:k]
    return candidates[top]


def _mask_1d(kind: str, shape: tuple[int, int], acceleration: float, acs_fraction: float, rng) -> np.ndarray:
    h, w = shape
    n_acs = int(round(w * acs_fraction))
    n_total = int(round(w / acceleration))
    if n_acs > n_total:
        raise ValueError(
            f"acs_fraction={acs_fraction} gives {n_acs} ACS columns, more than the "
            f"{n_total} columns allowed by acceleration={acceleration}; lower acs_fraction or acceleration"
        )
    cols = np.zeros(w, dtype=bool)
    cols[_centre_slice(w, n_acs)] = True
    free = np.flatnonzero(~cols)
    log_w = None
    if kind == "gaussian1d":
        std = w * _STD_1D
        log_w = -0.5 * ((free - w / 2.0) / std) ** 2
    cols[_draw_without_replacement(rng, free, log_w, n_total - n_acs)] = True
    return np.broadcast_to(cols[None, :], (h, w)).astype(np.float32)


def _mask_2d(kind: str, shape: tuple[int, int], acceleration: float, acs_fraction: float, rng) -> np.ndarray:
    h, w = shape
    c = _calib_width_2d(shape, acs_fraction)
    n_total = int(round(h * w / acceleration))
    if c * c > n_total:
        raise ValueError(
            f"acs_fraction={acs_fraction} gives a {c}x{c} calibration square ({c * c} points), more than the "
            f"{n_total} points allowed by acceleration={acceleration}; lower acs_fraction or acceleration"
        )
    m = np.zeros((h, w), dtype=bool)
    m[_centre_slice(h, c), _centre_slice(w, c)] = True
    free = np.flatnonzero(~m.ravel())
    log_w = None
    if kind == "gaussian2d":
        std = min(h, w) * _STD_2D
        rows, cols = np.divmod(free, w)
        log_w = -0.5 * ((rows - h / 2.0) ** 2 + (cols - w / 2.0) ** 2) / std**2
    m.ravel()[_draw_without_replacement(rng, free, log_w, n_total - c * c)] = True
    return m.astype(np.float32)


def fastmri_columns(kind: str, n_cols: int, acceleration: float, center_fraction: float, seed) -> np.ndarray:
    """The (W,) float32 column mask fastMRI's mask function of ``kind`` gives for ``seed``.

    Same arithmetic and the same ``RandomState`` draws, in the same order, as
    ``fastmri.data.subsample`` 0.3 (a one-element ``randint`` for the choice of the
    (centre fraction, acceleration) pair, then the mask's own draws).
    """
    rng = np.random.RandomState(seed)
    rng.randint(1)                                      # fastmri picks one of its (fraction, R) pairs
    n_low = round(n_cols * center_fraction)
    cols = np.zeros(n_cols, dtype=np.float32)
    pad = (n_cols - n_low + 1) // 2
    cols[pad:pad + n_low] = 1
    if kind == "random":
        prob = (n_cols / acceleration - n_low) / (n_cols - n_low)
        cols[rng.uniform(size=n_cols) < prob] = 1
    elif kind == "equispaced":
        if float(acceleration) != int(acceleration):
            raise ValueError(f"mask 'equispaced' needs an integer acceleration, got {acceleration}")
        acc = int(acceleration)
        offset = rng.randint(0, high=round(acc))
        cols[offset::acc] = 1
    else:
        adjusted = (acceleration * (n_low - n_cols)) / (n_low * acceleration - n_cols)
        offset = rng.randint(0, high=round(adjusted))
        cols[np.around(np.arange(offset, n_cols - 1, adjusted)).astype(np.uint)] = 1
    return cols


def _mask_fastmri(kind: str, shape: tuple[int, int], acceleration: float, acs_fraction: float, seed) -> np.ndarray:
    h, w = shape
    if round(w * acs_fraction) > w / acceleration:
        raise ValueError(
            f"acs_fraction={acs_fraction} gives {round(w * acs_fraction)} ACS columns, more than the "
            f"{w / acceleration:.0f} columns allowed by acceleration={acceleration}; lower acs_fraction or acceleration"
        )
    if acceleration == 1:               # no acceleration: every column (fastMRI's fraction mask would miss the last)
        return np.ones((h, w), dtype=np.float32)
    cols = fastmri_columns(kind, w, acceleration, acs_fraction, seed)
    return np.broadcast_to(cols[None, :], (h, w)).astype(np.float32)


def _mask_poisson(shape: tuple[int, int], acceleration: float, acs_fraction: float, seed) -> np.ndarray:
    import sigpy.mri  # lazy: sigpy takes ~2 s to import

    h, w = shape
    c = _calib_width_2d(shape, acs_fraction)
    if c * c > h * w / acceleration:
        raise ValueError(
            f"acs_fraction={acs_fraction} gives a {c}x{c} calibration square, more than the "
            f"{h * w / acceleration:.0f} points allowed by acceleration={acceleration}; lower acs_fraction or acceleration"
        )
    if acceleration == 1:  # sigpy requires accel > 1
        return np.ones((h, w), dtype=np.float32)
    m = sigpy.mri.poisson((h, w), accel=acceleration, calib=(c, c), seed=seed)
    m = (np.abs(m) > 0.5).astype(np.float32)
    m[_centre_slice(h, c), _centre_slice(w, c)] = 1.0
    return m


def mask_problem(kind: str, shape: tuple[int, int], acceleration: float, acs_fraction: float) -> str | None:
    """Why :func:`make_mask` would reject these arguments (its ACS and acceleration checks, no
    drawing), or None. Lets a config be checked before any job runs."""
    h, w = (int(s) for s in shape)
    if kind in _KINDS_1D:
        n_acs = int(round(w * acs_fraction))
        allowed = w / acceleration if kind in _KINDS_FASTMRI else int(round(w / acceleration))
        if n_acs > allowed:
            return (f"acs_fraction={acs_fraction:g} gives {n_acs} ACS columns of {w}, more than the {allowed:.0f} "
                    f"allowed by acceleration={acceleration:g}")
        if kind == "equispaced" and float(acceleration) != int(acceleration):
            return f"mask 'equispaced' needs an integer acceleration, got {acceleration:g}"
        return None
    c = _calib_width_2d((h, w), acs_fraction)
    allowed = h * w / acceleration if kind == "poisson" else int(round(h * w / acceleration))
    if c * c > allowed:
        return (f"acs_fraction={acs_fraction:g} gives a {c}x{c} calibration square, more than the {allowed:.0f} "
                f"points of {h}x{w} allowed by acceleration={acceleration:g}")
    return None


def make_mask(
    kind: str,
    shape: tuple[int, int],
    acceleration: float,
    acs_fraction: float,
    seed: int | None = 0,
) -> Mask:
    """Build a k-space sampling mask (see the module docstring for each kind).

    Args:
        kind: one of :data:`MASK_KINDS`.
        shape: ``(H, W)``; phase encoding along ``W``.
        acceleration: nominal acceleration ``R >= 1``.
        acs_fraction: fully sampled centre size as a fraction of ``W`` (1-D)
            or of ``min(H, W)`` (2-D, poisson), in ``[0, 1)``.
        seed: random seed.

    Returns:
        :class:`Mask` with a float32 ``(H, W)`` 0/1 array.
    """
    if kind not in MASK_KINDS:
        raise ValueError(f"kind must be one of {MASK_KINDS}, got {kind!r}")
    if not (np.isfinite(acceleration) and acceleration >= 1):
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration}")
    if not (0 <= acs_fraction < 1):
        raise ValueError(f"acs_fraction must be in [0, 1), got {acs_fraction}")
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be a positive (H, W) pair, got {shape}")
    shape = (int(shape[0]), int(shape[1]))

    if kind == "poisson":
        array = _mask_poisson(shape, acceleration, acs_fraction, seed)
    elif kind in _KINDS_FASTMRI:
        array = _mask_fastmri(kind, shape, acceleration, acs_fraction, seed)
    else:
        rng = np.random.default_rng(seed)
        build = _mask_1d if kind in _KINDS_1D else _mask_2d
        array = build(kind, shape, acceleration, acs_fraction, rng)
    return Mask(array=array, kind=kind, acceleration=acceleration, acs_fraction=acs_fraction, seed=seed)


def mask_from_columns(cols: np.ndarray, n_rows: int, kind: str = "file", seed: int | None = None) -> Mask:
    """A :class:`Mask` from a given (W,) column mask (a file's own ``mask``), broadcast over ``n_rows`` rows.

    ``acceleration`` is the effective one and ``acs_fraction`` the measured centre block
    (:func:`measured_acs_width`) over ``W``.
    """
    cols = (np.asarray(cols).reshape(-1) > 0).astype(np.float32)
    array = np.broadcast_to(cols[None, :], (int(n_rows), cols.size)).astype(np.float32)
    n = int(cols.sum())
    acc = cols.size / n if n else math.inf
    return Mask(array=array, kind=kind, acceleration=acc,
                acs_fraction=measured_acs_width(array) / cols.size, seed=seed)


def measured_acs_width(array: np.ndarray) -> int:
    """Width of the fully sampled block of columns around the centre column ``W // 2`` of a
    (H, W) mask (every row sampled in those columns); 0 when the centre column is not sampled."""
    full = np.all(np.asarray(array) > 0, axis=0)
    c = full.size // 2
    if not full[c]:
        return 0
    lo = c
    while lo > 0 and full[lo - 1]:
        lo -= 1
    hi = c
    while hi + 1 < full.size and full[hi + 1]:
        hi += 1
    return hi - lo + 1
