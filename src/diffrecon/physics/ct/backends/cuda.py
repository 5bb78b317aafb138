"""``cuda`` backend: the whole volume at once through ASTRA's 3-D CUDA code.

A ``parallel3d`` geometry whose detector has one row per slice (row pitch 1 = slice
thickness): ASTRA's 3-D arrays are (det rows, angles, det cols), which with one row per slice
is already the (D, V, det) layout of the 2-D backends. ASTRA's 3-D and 2-D code paths use
separately written geometry conventions, so the in-plane orientation is *calibrated* once at
construction: a small random probe is projected with the 3-D CUDA code and compared with the
2-D CPU ``linear`` projector under the 16 axis flips/transposes of the volume
(:func:`select_orientation`, pure numpy); the best match (relative error < 10 %, else
RuntimeError) is applied from then on::

    A x   = FP3D(orient(x, o)),       A^T y = orient_inverse(BP3D(y), o).

The geometry's ``projector`` is ignored (ASTRA 3-D CUDA has a single Joseph-type kernel) and
its BP is only approximately the transpose of its FP. FBP uses 2-D ``FBP_CUDA`` per slice.

Never call ASTRA's 3-D GPU functions without CUDA (SIGFPE on a machine without a GPU): the
constructor refuses to run unless ``astra.use_cuda()`` is True.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import astra
import numpy as np
import torch

from diffrecon.physics.ct.backends.slices import SlicesBackend
from diffrecon.physics.ct.geometry import CTGeometry

# A candidate is (transpose_hw, flip_d, flip_h, flip_w) applied to a (D, H, W) volume before
# the 3-D projector. All are permutations, so their adjoint is their inverse.
Orientation = tuple[bool, bool, bool, bool]
IDENTITY: Orientation = (False, False, False, False)


def orient(vol: np.ndarray, o: Orientation) -> np.ndarray:
    """Apply orientation ``o`` to a (D, H, W) array (transpose H/W first, then flips)."""
    transpose, fd, fh, fw = o
    if transpose:
        vol = vol.swapaxes(1, 2)
    axes = tuple(ax for ax, f in zip((0, 1, 2), (fd, fh, fw)) if f)
    return np.flip(vol, axes) if axes else vol


def orient_inverse(vol: np.ndarray, o: Orientation) -> np.ndarray:
    """Inverse (= transpose) of :func:`orient`: flips first, then transpose."""
    transpose, fd, fh, fw = o
    axes = tuple(ax for ax, f in zip((0, 1, 2), (fd, fh, fw)) if f)
    if axes:
        vol = np.flip(vol, axes)
    return vol.swapaxes(1, 2) if transpose else vol


def select_orientation(fp_candidate: Callable[[np.ndarray], np.ndarray],
                       fp_reference: Callable[[np.ndarray], np.ndarray],
                       probe: np.ndarray, tol: float = 0.1) -> tuple[Orientation, float]:
    """Find ``o`` with ``fp_candidate(orient(x, o)) ~ fp_reference(x)``.

    ``fp_candidate`` is called once, on ``probe``; then, with ``x' = orient(x, o)``, the
    condition reads ``fp_candidate(x') ~ fp_reference(orient_inverse(x', o))``. Returns the
    best orientation and its relative error ‖got − ref‖/‖ref‖; RuntimeError if above ``tol``.
    """
    got = np.asarray(fp_candidate(probe), dtype=np.float64)
    best, best_err = IDENTITY, math.inf
    for o in itertools.product((False, True), repeat=4):
        ref = np.asarray(fp_reference(np.ascontiguousarray(orient_inverse(probe, o))), dtype=np.float64)
        if ref.shape != got.shape:
            continue
        err = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
        if err < best_err:
            best, best_err = o, err
    if not best_err < tol:
        raise RuntimeError(f"ASTRA 3-D CUDA projector does not match the 2-D CPU convention under any "
                           f"axis flip/transpose (best relative error {best_err:.3g})")
    return best, best_err


class CudaBackend:
    """The ``cuda`` backend (see the module docstring); ``n_threads`` is ignored (always 1)."""

    name = "cuda"
    n_threads = 1

    def __init__(self, geometry: CTGeometry, n_threads: int = 1) -> None:
        if not astra.use_cuda():
            raise RuntimeError("backend='cuda' requested but astra.use_cuda() is False (no usable GPU)")
        self.geometry = geometry
        self.orientation: Orientation = IDENTITY
        self._slices = SlicesBackend(geometry, 1, gpu=True)     # 2-D FBP_CUDA
        try:
            self.orientation, self.calibration_error = self._calibrate()
        except Exception:
            self.close()
            raise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vol = x.numpy()
        return torch.from_numpy(np.ascontiguousarray(self._raw_fp3d(orient(vol, self.orientation)),
                                                     dtype=np.float32))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        vol = orient_inverse(self._raw_bp3d(y.numpy()), self.orientation)
        return torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))

    def fbp(self, y: torch.Tensor) -> torch.Tensor:
        return self._slices.fbp(y)

    def gram(self) -> None:
        return None

    def close(self) -> None:
        self._slices.close()

    # -- ASTRA 3-D calls (only reached when astra.use_cuda() is True) --------
    def _geoms3d(self, n_slices: int, n: int | None = None, det_count: int | None = None) -> tuple[dict, dict]:
        g = self.geometry
        n = g.n if n is None else n
        det = g.det_count if det_count is None else det_count
        vg = astra.create_vol_geom(n, n, n_slices)  # array shape (slices, rows, cols)
        pg = astra.create_proj_geom("parallel3d", g.det_spacing, 1.0, n_slices, det,
                                    np.asarray(g.angles, dtype=np.float64))  # (rows=slices, angles, cols)
        return vg, pg

    def _raw_fp3d(self, vol: np.ndarray, n: int | None = None, det_count: int | None = None) -> np.ndarray:
        assert astra.use_cuda()
        vg, pg = self._geoms3d(vol.shape[0], n, det_count)
        sid, sino = astra.create_sino3d_gpu(np.ascontiguousarray(vol, dtype=np.float32), pg, vg)
        astra.data3d.delete(sid)
        return sino

    def _raw_bp3d(self, sino: np.ndarray) -> np.ndarray:
        assert astra.use_cuda()
        vg, pg = self._geoms3d(sino.shape[0])
        vid, vol = astra.create_backprojection3d_gpu(np.ascontiguousarray(sino, dtype=np.float32), pg, vg)
        astra.data3d.delete(vid)
        return vol

    def _calibrate(self) -> tuple[Orientation, float]:
        """Orientation of the 3-D CUDA code against the 2-D CPU ``linear`` projector (small probe)."""
        g = self.geometry
        n_probe = min(g.n, 32)
        probe_geom = CTGeometry(n=n_probe, angles=g.angles, det_spacing=g.det_spacing, projector="linear")
        rng = np.random.default_rng(1234)
        probe = rng.random((3, n_probe, n_probe)).astype(np.float32)
        probe[:, : n_probe // 3, : n_probe // 2] += 2.0  # break symmetries on purpose
        ref = SlicesBackend(probe_geom, 1)
        try:
            def reference(v: np.ndarray) -> np.ndarray:
                return ref.forward(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))).numpy()

            return select_orientation(lambda v: self._raw_fp3d(v, n=n_probe, det_count=probe_geom.det_count),
                                      reference, probe)
        finally:
            ref.close()
