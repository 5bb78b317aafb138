"""Fine-z, textured chest CT volumes for the embedded demo (no download, seeded).

A volume ``(depth, size, size)`` in ``[0, 1]`` (attenuation normalised to a display window:
air 0, lung ≈ 0.08, fat ≈ 0.33, soft tissue ≈ 0.45–0.55, bone up to ≈ 0.95) is a chest CT
of ``depth`` axial slices ``spacing`` mm apart over a ``fov`` mm field of view, built in
millimetres so that anatomy keeps its physical size whatever the grid:

* body outline: an ellipse whose half-axes and low-order boundary ripples drift smoothly
  along z; subcutaneous fat of random thickness, a muscle layer inside it;
* lungs from the apex down to a dome-shaped diaphragm, with a parenchyma texture and
  branching vessel trees (tapered capsules from each hilum), a few nodules;
* mediastinum: heart (myocardium and a brighter blood pool) in the lower half, ascending and
  descending aorta, trachea splitting into the main bronchi at the carina, oesophagus;
* spine: vertebral bodies (cortical shell, trabecular interior with texture) separated by
  discs, spinal canal, spinous processes; ribs as oblique arcs along the body wall that
  descend anteriorly, so each rib crosses many slices; sternum;
* below the diaphragm: liver (right) and a gas-filled stomach (left);
* every tissue modulated by a smooth 3-D intensity field (a few %) plus fine texture.

Structures span many slices: at the defaults (3 mm slices, ≈ 6 mm pixels at 64²) a vertebra
covers ≈ 8 slices, the heart ≈ 30, a vessel segment tens — so adjacent and jump-3 slice
triplets are both strongly correlated, as in 1 mm clinical CT at 256².

Families (:data:`FAMILIES`) are different random distributions of the same anatomy:
``train`` (training and validation), ``test`` (the demo's test split: larger patients, more
fat, larger heart, more and larger nodules, stronger texture), ``heldout`` (a third family kept
for checks that are never tuned on: thin patients lying off-centre and rotated, posterior
pleural effusions, emphysematous low-density lungs, a lower diaphragm).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["FAMILIES", "thorax_volume"]

#: family → parameter ranges (uniform draws) of :func:`thorax_volume`
FAMILIES: dict[str, dict] = {
    "train": dict(half_width=(140, 165), half_depth=(95, 115), fat=(8, 20), heart=(0.9, 1.1),
                  nodules=(0, 2), nodule_radius=(3, 6), texture=(0.8, 1.2), lung_density=(0.07, 0.10),
                  offset=(0, 0), rotation=(0, 0), effusion=(0, 0), dome=(0.80, 0.90), vessels=(6, 9)),
    "test": dict(half_width=(160, 180), half_depth=(110, 130), fat=(18, 32), heart=(1.1, 1.3),
                 nodules=(2, 5), nodule_radius=(4, 9), texture=(1.2, 1.6), lung_density=(0.08, 0.11),
                 offset=(0, 8), rotation=(0, 4), effusion=(0, 0), dome=(0.75, 0.85), vessels=(7, 10)),
    "heldout": dict(half_width=(125, 145), half_depth=(85, 100), fat=(2, 8), heart=(0.85, 1.0),
                    nodules=(1, 3), nodule_radius=(3, 7), texture=(0.9, 1.3), lung_density=(0.04, 0.06),
                    offset=(10, 25), rotation=(5, 12), effusion=(15, 35), dome=(0.88, 0.98), vessels=(5, 7)),
}

AIR, LUNG, FAT, MUSCLE, BLOOD, SOFT, LIVER, DISC, TRABECULAR, CORTICAL = (
    0.0, 0.08, 0.33, 0.47, 0.56, 0.50, 0.54, 0.52, 0.68, 0.92)


def _field(rng, shape, sigma_vox, amplitude):
    """Zero-mean smooth random field of unit peak times ``amplitude`` (voxel-unit sigmas)."""
    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma_vox)
    return amplitude * f / (np.abs(f).max() + 1e-12)


def _capsule(Z, Y, X, p0, p1, r0, r1):
    """Voxels within a tapered capsule from ``p0`` to ``p1`` (z, y, x in mm), radius r0 → r1."""
    out = np.zeros(Z.shape, bool)
    lo, hi = np.minimum(p0, p1) - max(r0, r1), np.maximum(p0, p1) + max(r0, r1)
    box = tuple(slice(int(np.searchsorted(ax, lo[i])), int(np.searchsorted(ax, hi[i], side="right")))
                for i, ax in enumerate((Z[:, 0, 0], Y[0, :, 0], X[0, 0, :])))
    if any(b.start >= b.stop for b in box):
        return out
    out[box] = _capsule_dense(Z[box], Y[box], X[box], p0, p1, r0, r1)
    return out


def _capsule_dense(Z, Y, X, p0, p1, r0, r1):
    d = np.subtract(p1, p0, dtype=np.float32)
    length2 = float(d @ d) + 1e-9
    t = ((Z - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (X - p0[2]) * d[2]) / length2
    t = np.clip(t, 0.0, 1.0)
    dist2 = (Z - p0[0] - t * d[0]) ** 2 + (Y - p0[1] - t * d[1]) ** 2 + (X - p0[2] - t * d[2]) ** 2
    return dist2 <= (r0 + t * (r1 - r0)) ** 2


def _vessel_tree(rng, capsule, root, direction, radius, length, levels, out):
    """Branching tapered capsules from ``root`` (mm) along ``direction``; ORs into ``out``."""
    direction = direction / np.linalg.norm(direction)
    end = root + length * direction
    out |= capsule(root, end, radius, 0.8 * radius)
    if levels > 1:
        for _ in range(2):
            turn = rng.normal(0.0, 0.5, 3)
            _vessel_tree(rng, capsule, end, direction + turn, 0.7 * radius, 0.8 * length, levels - 1, out)


def thorax_volume(rng: np.random.Generator, depth: int, size: int, family: str = "train",
                  spacing: float = 3.0, fov: float = 380.0) -> np.ndarray:
    """One random chest CT volume ``(depth, size, size)`` float32 in ``[0, 1]``.

    ``spacing``: slice spacing (mm); ``fov``: in-plane field of view (mm); ``family``: one of
    :data:`FAMILIES`. Rows run anterior → posterior, columns patient right → left (radiological
    display), slices superior → inferior.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown thorax family {family!r} (one of {', '.join(FAMILIES)})")
    p = FAMILIES[family]
    u = lambda key: float(rng.uniform(*p[key]))                      # noqa: E731
    pix = fov / size
    length = depth * spacing
    zs = (np.arange(depth, dtype=np.float32) + 0.5) * spacing         # mm from the top slice
    lin = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * pix
    Z, Y, X = np.meshgrid(zs, lin, lin, indexing="ij")

    Z0, Y0, X0 = Z, Y, X                                             # axis-aligned grid (capsule boxes)
    # patient pose: in-plane offset and rotation (the same for every slice)
    ang = np.deg2rad(u("rotation") * rng.choice([-1, 1]))
    off = u("offset") * rng.uniform(-1, 1, 2)
    c, s = np.cos(ang), np.sin(ang)
    Xp = c * (X - off[1]) + s * (Y - off[0])
    Yp = -s * (X - off[1]) + c * (Y - off[0])
    X, Y = Xp, Yp

    def capsule(p0, p1, r0, r1):
        """A capsule given in patient coordinates (z, y, x), drawn on the grid."""
        def grid(q):
            return np.array([q[0], s * q[2] + c * q[1] + off[0], c * q[2] - s * q[1] + off[1]])
        return _capsule(Z0, Y0, X0, grid(p0), grid(p1), r0, r1)
    zn = Z / length                                                  # 0 at the top, 1 at the bottom

    # body outline: half-axes growing inferiorly, low-order boundary ripples drifting along z
    a0, b0 = u("half_width"), u("half_depth")
    a = a0 * (0.85 + 0.2 * zn) * (1 + 0.03 * np.sin(2 * np.pi * zn * rng.uniform(0.3, 1) + rng.uniform(0, 6)))
    b = b0 * (0.9 + 0.12 * zn)
    theta = np.arctan2(Y, X)
    ripple = 1 + sum(rng.uniform(-0.03, 0.03) * np.cos(k * theta + rng.uniform(0, 6) + 2 * zn) for k in (2, 3, 4))
    rho = np.sqrt((X / a) ** 2 + (Y / b) ** 2) / ripple                 # < 1 inside the body
    body = rho < 1
    fat_t = u("fat")
    inner = np.sqrt((X / (a - fat_t)) ** 2 + (Y / (b - fat_t)) ** 2) / ripple
    inside = inner < 1                                               # inside the subcutaneous fat
    muscle_band = inside & (np.sqrt((X / (a - fat_t - 12)) ** 2 + (Y / (b - fat_t - 12)) ** 2) / ripple >= 1)

    img = np.zeros(X.shape, np.float32)
    img[body] = FAT
    img[inside] = SOFT
    img[muscle_band] = MUSCLE

    # ribs: oblique arcs in the muscle band region, descending anteriorly (one pair every ~22 mm)
    rib_r = np.sqrt((X / (a - fat_t - 6)) ** 2 + (Y / (b - fat_t - 6)) ** 2) / ripple
    phi = np.abs(np.arctan2(-X, Y))                                  # 0 at the back, pi at the front
    ring = np.abs(rib_r - 1) * min(a0, b0) < 5.0
    rib_z0 = np.arange(-40.0, length, 22.0) + rng.uniform(0, 22)
    for z0 in rib_z0:
        zc = z0 + 45.0 * (phi / np.pi) ** 1.5                         # the rib descends towards the front
        img[ring & (np.abs(Z - zc) < 4.5) & (phi < 0.8 * np.pi)] = CORTICAL * 0.95

    # lungs: from the apex to a dome-shaped diaphragm, parenchyma texture
    dome = u("dome") * length
    lungs = np.zeros(X.shape, bool)
    for side in (-1, 1):
        cx = side * 0.45 * a0 + rng.uniform(-5, 5)
        la = 0.34 * a0 * (0.55 + 0.45 * np.sqrt(np.clip(zn * 1.6, 0, 1)))
        lb = 0.70 * b0 * (0.6 + 0.4 * np.sqrt(np.clip(zn * 1.6, 0, 1)))
        r2 = ((X - cx) / la) ** 2 + ((Y - 0.05 * b0) / lb) ** 2
        # the diaphragm dome: highest at the lung's centre, 20 mm lower at its rim
        lungs |= (r2 < 1) & (Z < dome + 20.0 * np.clip(r2, 0, 1) - 20.0) & (Z > 6.0) & inside
    tex = u("texture")
    lung_img = u("lung_density") + _field(rng, X.shape, (0.8, 0.8, 0.8), 0.025 * tex) \
        + _field(rng, X.shape, (3.0, 4.0, 4.0), 0.02)
    img[lungs] = lung_img[lungs]

    # pleural effusion (held-out family): fluid filling the posterior lung bases
    eff = u("effusion")
    if eff > 0:
        img[lungs & (Y > b0 * 0.55 - eff * 0.6) & (Z > dome - 3 * eff)] = SOFT - 0.03

    # vessel trees from each hilum
    vessels = np.zeros(X.shape, bool)
    for side in (-1, 1):
        hilum = np.array([0.45 * length, 0.05 * b0, side * 0.25 * a0])
        for _ in range(int(round(u("vessels")))):
            direction = np.array([rng.uniform(-1, 1), rng.uniform(-0.6, 0.6), side * rng.uniform(0.5, 1.2)])
            _vessel_tree(rng, capsule, hilum + rng.normal(0, 4, 3), direction, rng.uniform(4.5, 6.5),
                         rng.uniform(30, 45), 4, vessels)
    img[vessels & lungs] = BLOOD - 0.08

    # nodules
    for _ in range(int(round(u("nodules")))):
        side = rng.choice([-1, 1])
        centre = np.array([rng.uniform(0.15, 0.7) * length, rng.uniform(-0.3, 0.4) * b0, side * rng.uniform(0.3, 0.6) * a0])
        r = u("nodule_radius")
        img[capsule(centre, centre + rng.normal(0, 1.5, 3), r, r) & lungs] = SOFT

    # mediastinum: heart, aorta, trachea / bronchi, oesophagus
    hz = rng.uniform(0.55, 0.65) * length
    hs = u("heart")
    heart_r = ((X - 0.12 * a0) / (0.36 * a0 * hs)) ** 2 + ((Y + 0.12 * b0) / (0.42 * b0 * hs)) ** 2 \
        + ((Z - hz) / (0.28 * length * hs)) ** 2
    img[(heart_r < 1) & inside] = SOFT + 0.02
    img[(heart_r < 0.45) & inside] = BLOOD + _field(rng, X.shape, (4, 4, 4), 0.015)[(heart_r < 0.45) & inside]
    z_top = hz - 0.28 * length * hs
    desc = (X - 0.12 * a0) ** 2 + (Y - 0.42 * b0) ** 2 < 11.0 ** 2
    img[desc & inside] = BLOOD
    asc = ((X + 0.05 * a0) ** 2 + (Y + 0.18 * b0) ** 2 < 13.0 ** 2) & (Z < z_top + 15)
    img[asc & inside] = BLOOD
    carina = rng.uniform(0.3, 0.4) * length
    trachea = ((X ** 2 + (Y - 0.15 * b0) ** 2) < 8.5 ** 2) & (Z < carina)
    for side in (-1, 1):
        trachea |= capsule((carina, 0.15 * b0, 0), (carina + 45, 0.1 * b0, side * 0.3 * a0), 6.5, 4.5)
    img[trachea & inside] = AIR + 0.02
    oes = ((X - 0.06 * a0) ** 2 + (Y - 0.3 * b0) ** 2) < 6.0 ** 2
    img[oes & inside & ~lungs] = MUSCLE

    # spine: vertebral bodies and discs, canal, spinous processes; sternum
    vy, vr = 0.62 * b0, 17.0
    zcol = (Z + rng.uniform(0, 30)) % 30.0                           # 24 mm body + 6 mm disc
    column = (X ** 2 + (Y - vy) ** 2) < vr ** 2
    img[column] = DISC
    bone = column & (zcol < 24)
    shell = bone & (((X ** 2 + (Y - vy) ** 2) > (vr - 2.5) ** 2) | (zcol < 1.5) | (zcol > 22.5))
    trab = TRABECULAR + _field(rng, X.shape, (0.7, 0.7, 0.7), 0.06 * tex)
    img[bone] = trab[bone]
    img[shell] = CORTICAL
    canal = (X ** 2 + (Y - vy - vr - 8) ** 2) < 7.0 ** 2
    arch = ((X ** 2 + (Y - vy - vr - 8) ** 2) < 12.0 ** 2) & ~canal & (zcol < 24)
    img[arch] = CORTICAL * 0.9
    img[canal] = SOFT - 0.04
    spinous = (np.abs(X) < 3.5) & (Y > vy + vr + 18) & (Y < vy + vr + 40) & (zcol < 20) & inside
    img[spinous] = CORTICAL * 0.9
    sternum = (np.abs(X) < 11) & (np.abs(Y + b - fat_t - 9) < 5) & (Z < 0.8 * length)
    img[sternum & inside] = TRABECULAR

    # below the diaphragm: liver (right) and stomach gas (left)
    below = inside & ~lungs & (Z > dome - 10) & ~column & ~desc
    liver = below & (X < 0.15 * a0) & ~(heart_r < 1)
    img[liver] = LIVER + _field(rng, X.shape, (3, 3, 3), 0.02)[liver]
    stomach = below & (((X - 0.45 * a0) / 35.0) ** 2 + ((Y + 0.1 * b0) / 30.0) ** 2 + ((Z - dome - 30) / 30.0) ** 2 < 1)
    img[stomach] = np.where(Y[stomach] < -0.1 * b0 - 5, AIR + 0.03, SOFT)

    # smooth intensity variation and fine texture on all tissue
    tissue = body & (img > 0.2)
    img += (_field(rng, X.shape, (6, 8, 8), 0.04) + _field(rng, X.shape, (0.6, 0.6, 0.6), 0.012 * tex)) * tissue
    return np.clip(img, 0.0, 1.0).astype(np.float32)
