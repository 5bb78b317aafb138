"""MRI data from real anatomy that ships inside installed packages (no download).

Sources (both in nibabel's test data, covered by nibabel's MIT licence — its COPYING lists
third-party data separately, and these two files are not among them):

* ``example4d.nii.gz``: a real brain EPI (T2*-weighted fMRI), 128 × 96 × 24 voxels of
  2 × 2 × 2.2 mm, 2 frames — the **training, validation and test** source. Axial slices
  z < :data:`TRAIN_Z` (inferior to mid brain) give training and validation volumes; the
  superior slices z ≥ :data:`TRAIN_Z` are **held out** for the test split (anatomy the prior
  never saw, same contrast).
* ``anatomical.nii``: a real brain T1-weighted volume, 33 × 41 × 25 voxels of 2 mm, a crop of
  the central brain — the **shifted** split ``test_ood`` (another contrast and field of view).

A volume (S, size, size) in [0, 1] is S consecutive axial slices of one source, the brain
cropped to its bounding box, padded to a square and resampled to ``size`` (linear).
Training and validation volumes are **augmented** (one random transform per volume, the same
for its slices, from the dataset seed): left–right flip (p = ½), rotation U(−12°, 12°), scale
U(0.9, 1.1), shift U(−4, 4) % of the side, a smooth elastic warp (Gaussian-smoothed random
displacements, σ = size/8, amplitude ≤ 2 % of the side), an intensity gamma U(0.8, 1.25) and a
smooth multiplicative bias field (1 ± 0.15, linear + quadratic in x, y). Test volumes are the
held-out slices unaugmented (windows spread over the held-out range, frames alternating);
``test_ood`` volumes are windows of the T1 volume, unaugmented.

The images then go through the same acquisition model as the phantom demo
(:mod:`diffrecon.data.datasets`): a smooth random phase, ``coils`` birdcage receive maps,
noise-free k-space, fastMRI multi-coil layout.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["SOURCES", "TRAIN_Z", "anatomy_volume", "source_path"]

#: source name → (file in nibabel's test data, contrast)
SOURCES = {"epi": ("example4d.nii.gz", "EPI (T2*)"), "t1": ("anatomical.nii", "T1")}
#: EPI slices z < TRAIN_Z: training / validation; z >= TRAIN_Z: the held-out test range
TRAIN_Z = 16


def source_path(source: str) -> str:
    """Path of a source file inside the installed nibabel package."""
    import nibabel

    path = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data", SOURCES[source][0])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: nibabel's bundled {SOURCES[source][0]} is missing "
                                "(install nibabel with its test data)")
    return path


def _load(source: str) -> np.ndarray:
    """(frames, z, y, x) float64 magnitude of a source, axial slices with anterior up."""
    import nibabel

    data = np.asanyarray(nibabel.load(source_path(source)).dataobj).astype(np.float64)
    if data.ndim == 3:
        data = data[..., None]
    data = np.clip(data, 0.0, None)
    return np.transpose(data, (3, 2, 1, 0))[:, :, ::-1, :]          # (t, z, y, x), y flipped: anterior up


def _square_crop(vol: np.ndarray, size: int) -> np.ndarray:
    """The brain's bounding box (over all slices), padded to a square, resampled to size × size."""
    from scipy.ndimage import zoom

    proj = vol.max(axis=0)
    mask = proj > 0.1 * proj.max()
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = vol[:, y0:y1, x0:x1]
    side = int(max(crop.shape[1:]) * 1.08) + 2                       # a small margin of background
    out = np.zeros((vol.shape[0], side, side))
    oy, ox = (side - crop.shape[1]) // 2, (side - crop.shape[2]) // 2
    out[:, oy:oy + crop.shape[1], ox:ox + crop.shape[2]] = crop
    return zoom(out, (1, size / side, size / side), order=1)[:, :size, :size]


def _augment(vol: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random spatial and intensity transform, the same for every slice (module docstring)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    s, n = vol.shape[0], vol.shape[1]
    if rng.random() < 0.5:
        vol = vol[:, :, ::-1]
    ang = np.deg2rad(rng.uniform(-12, 12))
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.04, 0.04, size=2) * n
    c = (n - 1) / 2
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    # inverse map: output pixel → input coordinate
    yr, xr = (yy - c - shift[0]) / scale, (xx - c - shift[1]) / scale
    ys = np.cos(ang) * yr - np.sin(ang) * xr + c
    xs = np.sin(ang) * yr + np.cos(ang) * xr + c
    amp = rng.uniform(0, 0.02) * n
    for grid in (ys, xs):
        field = gaussian_filter(rng.standard_normal((n, n)), sigma=n / 8)
        grid += amp * field / (np.abs(field).max() + 1e-12)
    out = np.stack([map_coordinates(sl, [ys, xs], order=1, mode="constant", cval=0.0) for sl in vol])
    u, v = (yy - c) / n, (xx - c) / n
    coef = rng.uniform(-0.15, 0.15, size=5)
    bias = 1 + coef[0] * u + coef[1] * v + coef[2] * u * u + coef[3] * v * v + coef[4] * u * v
    out = np.clip(out, 0, None) ** rng.uniform(0.8, 1.25) * np.clip(bias, 0.5, 1.5)
    return out


def _normalise(vol: np.ndarray) -> np.ndarray:
    hi = np.percentile(vol, 99.5)
    return np.clip(vol / hi, 0.0, 1.0) if hi > 0 else vol


def anatomy_volume(rng: np.random.Generator, split: str, index: int, count: int, n_slices: int,
                   size: int) -> tuple[np.ndarray, str]:
    """Volume ``index`` of ``count`` of ``split``: (n_slices, size, size) in [0, 1] and its acquisition label."""
    source = "t1" if split == "test_ood" else "epi"
    data = _load(source)                                              # (t, z, y, x)
    frames, depth = data.shape[:2]
    if split in ("train", "val"):
        lo, hi = 0, TRAIN_Z
    elif split == "test":
        lo, hi = TRAIN_Z, depth
    else:
        lo, hi = min(6, depth - n_slices), depth
    if hi - lo < n_slices:
        raise ValueError(f"anatomy source {SOURCES[source][0]}: split {split} has {hi - lo} slices, "
                         f"fewer than the {n_slices} slices per volume asked for")
    if split in ("train", "val"):
        frame = int(rng.integers(frames))
        z0 = int(rng.integers(lo, hi - n_slices + 1))
    else:                                                             # spread windows, frames alternate
        starts = np.linspace(lo, hi - n_slices, max(count, 1)).round().astype(int)
        frame, z0 = index % frames, int(starts[index % len(starts)])
    vol = _square_crop(data[frame, z0:z0 + n_slices], size)
    if split in ("train", "val"):
        vol = _augment(vol, rng)
    label = f"ANATOMY_{source.upper()}_z{z0}-{z0 + n_slices - 1}_t{frame}"
    return _normalise(vol).astype(np.float32), label
