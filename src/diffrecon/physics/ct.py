"""2-D parallel-beam CT applied slice by slice, backed by the ASTRA toolbox.

Model
-----
A volume ``x`` of ``D`` axial slices, each ``n x n`` pixels of side 1, is
measured slice by slice with a 2-D parallel-beam geometry (the geometry of the
DiffusionBlend / DDS line of work)::

    y[d, v, t] = (A x)[d, v, t] = integral of x[d] along the ray of angle
                                  theta_v through detector bin t,

with ``V`` angles ``theta_v`` (radians) and ``det_count`` detector bins of
pitch ``det_spacing`` centred on the rotation axis. The operator is the
discretised line integral of the chosen ASTRA projector (``line``, ``strip``
or ``linear`` = Joseph).

* ``A``          volume (D, n, n) -> sinogram (D, V, det_count)
* ``A_adjoint``  unfiltered backprojection A^T: sinogram -> volume; ASTRA's
                 CPU FP/BP pair is an exact matrix transpose pair, so
                 ``<A x, y> = <x, A^T y>`` to float32 rounding.
* ``A_dagger``   filtered backprojection (FBP, Ram-Lak filter), a classical
                 approximate inverse: ``A_dagger(A x) ~ x`` for dense angles.

A single slice may be given as (n, n) / (V, det_count); the result then has
no slice axis either. Computations run in float32 inside ASTRA; torch outputs
come back with the input's dtype and device.

Backends
--------
``cpu``  ASTRA 2-D CPU projectors, one slice at a time, spread over
         ``n_threads`` worker threads (ASTRA releases the GIL while it runs).
         Each worker owns its projector, linked float32 buffers and
         algorithm objects, created once in the constructor, so calls create
         no ASTRA objects.
``matrix`` ASTRA's own sparse system matrix of the chosen 2-D projector
         (``astra.projector.matrix``, the matrix its CPU FP/BP apply),
         stored once as float32 CSR (torch sparse, MKL); ``A`` and ``A^T``
         are then one sparse matrix product for the whole volume,
         W (D, n^2)^T and W^T (D, V det)^T, with no per-slice calls and no
         round trip through numpy for tensors — much faster for the small
         images of the demo and for many angles (limited angle). ``A^T`` is
         the exact transpose by construction. FBP still runs through the
         2-D CPU algorithm. ``auto`` picks it on CPU while the matrix has at
         most ``MATRIX_MAX_NNZ`` entries.
``cuda`` The whole volume at once through ASTRA's 3-D CUDA code with a
         ``parallel3d`` geometry whose detector has one row per slice (row
         pitch 1 = slice thickness). ASTRA's 3-D arrays are (det rows,
         angles, det cols) which, with one row per slice, is already the
         (D, V, det) layout of the CPU path. The 3-D and 2-D code paths of
         ASTRA use separately written geometry conventions, so the in-plane
         orientation is *calibrated* once at construction: a small random
         probe is projected with the 3-D CUDA code and compared with the 2-D
         CPU ``linear`` projector under the 16 axis flips/transposes of the
         volume; the best match (relative error < 10 %, else RuntimeError)
         is applied from then on. This could not be verified on a machine
         with a GPU when written: ``tests/unit/test_ct_physics.py`` has
         GPU-only tests (CPU vs CUDA agreement, dot test) that must be run
         on one. On CUDA the ``projector`` field is ignored (ASTRA 3-D CUDA
         has a single Joseph-type kernel) and its BP is only approximately
         the transpose of its FP. FBP on CUDA uses 2-D ``FBP_CUDA`` per slice.

Never call ASTRA's 3-D GPU functions without CUDA: on a machine without a
GPU they kill the process (SIGFPE). This module only does so after
``astra.use_cuda()`` returned True.
"""

from __future__ import annotations

import itertools
import math
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import astra
import numpy as np
import torch

from diffrecon.physics.operator import LinearOperator

__all__ = ["CTGeometry", "ParallelBeamCT", "fbp"]

_PROJECTORS = ("line", "strip", "linear")
_BACKENDS = ("auto", "cpu", "matrix", "cuda")
MATRIX_MAX_NNZ = 50_000_000  # ~400 MB as float32 CSR; larger problems use the per-slice CPU path


# --------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------
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
        if self.projector not in _PROJECTORS:
            raise ValueError(f"projector must be one of {_PROJECTORS}, got {self.projector!r}")

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


# --------------------------------------------------------------------------
# per-thread ASTRA state (2-D)
# --------------------------------------------------------------------------
class _SliceWorker:
    """One 2-D projector with persistent linked buffers and FP/BP/FBP algorithms.

    Not thread-safe by itself: the operator hands each worker to one thread at
    a time through a queue.
    """

    def __init__(self, geom: CTGeometry, gpu: bool = False) -> None:
        self.ids_proj: list[int] = []
        self.ids_data: list[int] = []
        self.ids_alg: list[int] = []
        try:
            vg = geom.astra_vol_geom()
            pg = geom.astra_proj_geom()
            proj_type = "cuda" if gpu else geom.projector
            self.proj = astra.create_projector(proj_type, pg, vg)
            self.ids_proj.append(self.proj)
            self.vol = np.zeros(geom.image_shape, dtype=np.float32)
            self.sino = np.zeros(geom.sino_shape, dtype=np.float32)
            vid = astra.data2d.link("-vol", vg, self.vol)
            self.ids_data.append(vid)
            sid = astra.data2d.link("-sino", pg, self.sino)
            self.ids_data.append(sid)
            suffix = "_CUDA" if gpu else ""
            self.fp = self._alg("FP" + suffix, ProjectionDataId=sid, VolumeDataId=vid)
            self.bp = self._alg("BP" + suffix, ProjectionDataId=sid, ReconstructionDataId=vid)
            # FBP (CPU default filter is Ram-Lak); FBP_CUDA defaults to ram-lak too.
            self.fbp = self._alg("FBP" + suffix, ProjectionDataId=sid, ReconstructionDataId=vid)
        except Exception:
            self.release()
            raise

    def _alg(self, kind: str, **ids) -> int:
        cfg = astra.astra_dict(kind)
        cfg.update(ids)
        cfg["ProjectorId"] = self.proj
        aid = astra.algorithm.create(cfg)
        self.ids_alg.append(aid)
        return aid

    # each method: copy input into the linked buffer, run, copy result out
    def forward(self, img: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.vol, img)
        astra.algorithm.run(self.fp)
        np.copyto(out, self.sino)

    def adjoint(self, sino: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.sino, sino)
        astra.algorithm.run(self.bp)
        np.copyto(out, self.vol)

    def filtered_bp(self, sino: np.ndarray, out: np.ndarray) -> None:
        np.copyto(self.sino, sino)
        astra.algorithm.run(self.fbp)
        np.copyto(out, self.vol)

    def release(self) -> None:
        if self.ids_alg:
            astra.algorithm.delete(self.ids_alg)
        if self.ids_data:
            astra.data2d.delete(self.ids_data)
        if self.ids_proj:
            for pid in self.ids_proj:
                astra.projector.delete(pid)
        self.ids_alg, self.ids_data, self.ids_proj = [], [], []


# --------------------------------------------------------------------------
# CUDA orientation calibration (pure numpy, testable without a GPU)
# --------------------------------------------------------------------------
# A candidate is (transpose_hw, flip_d, flip_h, flip_w) applied to a (D, H, W)
# volume before the 3-D projector. All are permutations, so their adjoint is
# their inverse.
_Orientation = tuple[bool, bool, bool, bool]
_IDENTITY: _Orientation = (False, False, False, False)


def _orient(vol: np.ndarray, o: _Orientation) -> np.ndarray:
    """Apply orientation ``o`` (transpose H/W first, then flips)."""
    transpose, fd, fh, fw = o
    if transpose:
        vol = vol.swapaxes(1, 2)
    axes = tuple(ax for ax, f in zip((0, 1, 2), (fd, fh, fw)) if f)
    return np.flip(vol, axes) if axes else vol


def _orient_inverse(vol: np.ndarray, o: _Orientation) -> np.ndarray:
    """Inverse (= transpose) of :func:`_orient`: flips first, then transpose."""
    transpose, fd, fh, fw = o
    axes = tuple(ax for ax, f in zip((0, 1, 2), (fd, fh, fw)) if f)
    if axes:
        vol = np.flip(vol, axes)
    return vol.swapaxes(1, 2) if transpose else vol


def _select_orientation(fp_candidate: Callable[[np.ndarray], np.ndarray],
                        fp_reference: Callable[[np.ndarray], np.ndarray],
                        probe: np.ndarray, tol: float = 0.1) -> tuple[_Orientation, float]:
    """Find ``o`` with ``fp_candidate(_orient(x, o)) ~ fp_reference(x)``.

    ``fp_candidate`` is called once, on ``probe``; then, with ``x' = _orient(x, o)``,
    the condition reads ``fp_candidate(x') ~ fp_reference(_orient_inverse(x', o))``.
    Returns the best orientation and its relative error; RuntimeError if above ``tol``.
    """
    got = np.asarray(fp_candidate(probe), dtype=np.float64)
    best, best_err = _IDENTITY, math.inf
    for o in itertools.product((False, True), repeat=4):
        ref = np.asarray(fp_reference(np.ascontiguousarray(_orient_inverse(probe, o))), dtype=np.float64)
        if ref.shape != got.shape:
            continue
        err = float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30))
        if err < best_err:
            best, best_err = o, err
    if not best_err < tol:
        raise RuntimeError(f"ASTRA 3-D CUDA projector does not match the 2-D CPU convention under any "
                           f"axis flip/transpose (best relative error {best_err:.3g})")
    return best, best_err


# --------------------------------------------------------------------------
# autograd glue
# --------------------------------------------------------------------------
class _ForwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, op: "ParallelBeamCT") -> torch.Tensor:
        ctx.op = op
        if op.backend == "matrix":
            return op._matmul_torch(op._Wt, x, op.geometry.image_shape, op.geometry.sino_shape, "volume")
        return op._apply_np(op.forward_np, x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return _AdjointFn.apply(grad_out, ctx.op), None


class _AdjointFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, op: "ParallelBeamCT") -> torch.Tensor:
        ctx.op = op
        if op.backend == "matrix":
            return op._matmul_torch(op._WTt, y, op.geometry.sino_shape, op.geometry.image_shape, "sinogram")
        return op._apply_np(op.adjoint_np, y)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return _ForwardFn.apply(grad_out, ctx.op), None


# --------------------------------------------------------------------------
# the operator
# --------------------------------------------------------------------------
class ParallelBeamCT(LinearOperator):
    """Slice-wise 2-D parallel-beam projector ``A`` with ``A^T`` and FBP.

    Parameters
    ----------
    geometry : :class:`CTGeometry` (n x n slices, V angles, det_count bins).
    n_threads : CPU worker threads (default ``torch.get_num_threads()``);
        1 runs inline in the calling thread with no pool.
    backend : ``"auto"`` (CUDA when ``astra.use_cuda()``, else ``matrix`` when its
        estimated size is at most ``MATRIX_MAX_NNZ`` entries, else ``cpu``),
        ``"cpu"``, ``"matrix"`` or ``"cuda"`` (RuntimeError when ASTRA has no usable GPU).

    Shapes: volume ``(D, n, n)`` or ``(n, n)``; sinogram ``(D, V, det_count)``
    or ``(V, det_count)``. ``A`` and ``A_adjoint`` are differentiable (each
    one's backward is the other); ``A_dagger`` (FBP) is not tracked by
    autograd. Release the ASTRA objects with :meth:`close` or a ``with`` block.
    """

    def __init__(self, geometry: CTGeometry, n_threads: int | None = None, backend: str = "auto") -> None:
        if not isinstance(geometry, CTGeometry):
            raise TypeError(f"geometry must be a CTGeometry, got {type(geometry).__name__}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if n_threads is None:
            n_threads = max(1, torch.get_num_threads())
        if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
            raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
        if backend == "cuda" and not astra.use_cuda():
            raise RuntimeError("backend='cuda' requested but astra.use_cuda() is False (no usable GPU)")
        self.geometry = geometry
        if backend == "auto":
            backend = "cuda" if astra.use_cuda() else (
                "matrix" if _estimated_nnz(geometry) <= MATRIX_MAX_NNZ else "cpu")
        self.backend = backend
        self.n_threads = int(n_threads) if self.backend in ("cpu", "matrix") else 1
        self._Wt = self._WTt = None
        self._closed = False
        self._workers: list[_SliceWorker] = []
        self._idle: queue.SimpleQueue[_SliceWorker] = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._orientation: _Orientation = _IDENTITY
        try:
            for _ in range(self.n_threads):
                w = _SliceWorker(geometry, gpu=self.backend == "cuda")
                self._workers.append(w)
                self._idle.put(w)
            if self.n_threads > 1:
                self._pool = ThreadPoolExecutor(max_workers=self.n_threads, thread_name_prefix="astra-ct")
            if self.backend == "cuda":
                self._init_cuda()
            if self.backend == "matrix":
                self._init_matrix()
        except Exception:
            self.close()
            raise

    # -- lifecycle -----------------------------------------------------------
    def close(self) -> None:
        """Shut the thread pool and delete every ASTRA object this operator made (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for w in self._workers:
            w.release()
        self._workers = []

    def __enter__(self) -> "ParallelBeamCT":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: astra may already be gone
            pass

    def __repr__(self) -> str:
        g = self.geometry
        return (f"ParallelBeamCT(n={g.n}, views={g.n_views}, det={g.det_count}, projector={g.projector!r}, "
                f"backend={self.backend!r}, n_threads={self.n_threads})")

    @property
    def closed(self) -> bool:
        return self._closed

    # -- torch API -----------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Forward projection ``y = A x``: (D, n, n) -> (D, V, det) or (n, n) -> (V, det)."""
        self._check_tensor(x, "x")
        return _ForwardFn.apply(x, self)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Unfiltered backprojection ``A^T y``: (D, V, det) -> (D, n, n) or (V, det) -> (n, n)."""
        self._check_tensor(y, "y")
        return _AdjointFn.apply(y, self)

    def normal_columns(self, cols: torch.Tensor) -> torch.Tensor:
        """``A^T A`` on slices stored as columns: (n^2, D) -> (n^2, D), not tracked by autograd.
        The matrix backend's native layout (two sparse products, no transposes); the other
        backends reshape to (D, n, n) and back."""
        self._check_tensor(cols, "cols")
        self._check_open()
        n2 = self.geometry.n ** 2
        if cols.ndim != 2 or cols.shape[0] != n2:
            raise ValueError(f"cols must have shape ({n2}, D), got {tuple(cols.shape)}")
        if self.backend != "matrix":
            vol = cols.detach().T.reshape(cols.shape[1], *self.geometry.image_shape)
            return self.normal(vol).reshape(cols.shape[1], -1).T.contiguous()
        src = cols.detach().to(device="cpu", dtype=torch.float32).contiguous()
        return (self._WTt @ (self._Wt @ src)).to(device=cols.device, dtype=cols.dtype)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """FBP (Ram-Lak) per slice: (D, V, det) -> (D, n, n); not tracked by autograd."""
        self._check_tensor(y, "y")
        return self._apply_np(self.fbp_np, y.detach())

    # -- numpy API (float32 in ASTRA, float32 out) ---------------------------
    def forward_np(self, x: np.ndarray) -> np.ndarray:
        """``A x`` on a numpy array (D, n, n) or (n, n); returns float32 (D, V, det) or (V, det)."""
        vol, squeeze = self._as_stack(x, self.geometry.image_shape, "volume")
        if self.backend == "cuda":
            out = self._fp3d(vol)
        elif self.backend == "matrix":
            out = self._matmul_torch(self._Wt, torch.from_numpy(vol), self.geometry.image_shape,
                                     self.geometry.sino_shape, "volume").numpy()
        else:
            out = np.empty((vol.shape[0], *self.geometry.sino_shape), dtype=np.float32)
            self._run_slices("forward", vol, out)
        return out[0] if squeeze else out

    def adjoint_np(self, y: np.ndarray) -> np.ndarray:
        """``A^T y`` (unfiltered backprojection) on a numpy array; returns float32 (D, n, n) or (n, n)."""
        sino, squeeze = self._as_stack(y, self.geometry.sino_shape, "sinogram")
        if self.backend == "cuda":
            out = self._bp3d(sino)
        elif self.backend == "matrix":
            out = self._matmul_torch(self._WTt, torch.from_numpy(sino), self.geometry.sino_shape,
                                     self.geometry.image_shape, "sinogram").numpy()
        else:
            out = np.empty((sino.shape[0], *self.geometry.image_shape), dtype=np.float32)
            self._run_slices("adjoint", sino, out)
        return out[0] if squeeze else out

    def fbp_np(self, y: np.ndarray) -> np.ndarray:
        """FBP (Ram-Lak) per slice on a numpy array; returns float32 (D, n, n) or (n, n)."""
        sino, squeeze = self._as_stack(y, self.geometry.sino_shape, "sinogram")
        out = np.empty((sino.shape[0], *self.geometry.image_shape), dtype=np.float32)
        self._run_slices("filtered_bp", sino, out)
        return out[0] if squeeze else out

    # -- internals -----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ParallelBeamCT is closed")

    @staticmethod
    def _check_tensor(t: torch.Tensor, name: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a real floating-point tensor, got {t.dtype}")

    def _as_stack(self, a, hw: tuple[int, int], what: str) -> tuple[np.ndarray, bool]:
        self._check_open()
        a = np.asarray(a)
        if np.iscomplexobj(a):
            raise TypeError(f"{what} must be real")
        squeeze = self._check_stack_shape(tuple(a.shape), hw, what)
        return np.ascontiguousarray(a[None] if squeeze else a, dtype=np.float32), squeeze

    @staticmethod
    def _check_stack_shape(shape: tuple[int, ...], hw: tuple[int, int], what: str) -> bool:
        """Validate a (D, *hw) or (*hw) shape; returns whether it is a single slice."""
        if len(shape) not in (2, 3):
            raise ValueError(f"{what} must have 2 or 3 dims, got shape {shape}")
        if tuple(shape[-2:]) != tuple(hw):
            raise ValueError(f"{what} slices must have shape {hw}, got {tuple(shape[-2:])}")
        return len(shape) == 2

    @staticmethod
    def _apply_np(fn: Callable[[np.ndarray], np.ndarray], t: torch.Tensor) -> torch.Tensor:
        src = t.detach()
        if src.device.type != "cpu" or src.dtype != torch.float32:
            src = src.to(device="cpu", dtype=torch.float32)
        res = torch.from_numpy(fn(src.contiguous().numpy()))
        if res.dtype != t.dtype or res.device != t.device:
            res = res.to(device=t.device, dtype=t.dtype)
        return res

    def _run_slices(self, method: str, src: np.ndarray, out: np.ndarray) -> None:
        n_slices = src.shape[0]
        n_jobs = min(self.n_threads, n_slices)

        def job(lo: int, hi: int) -> None:
            worker = self._idle.get()
            try:
                fn = getattr(worker, method)
                for i in range(lo, hi):
                    fn(src[i], out[i])
            finally:
                self._idle.put(worker)

        if n_jobs <= 1 or self._pool is None:
            job(0, n_slices)
            return
        bounds = np.linspace(0, n_slices, n_jobs + 1).round().astype(int)
        futures = [self._pool.submit(job, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        for f in futures:
            f.result()

    # -- sparse-matrix path -------------------------------------------------
    def _init_matrix(self) -> None:
        """``W`` (V det, n^2) float32 CSR from ASTRA's projector, and ``W^T`` (exact transpose), as
        torch CSR tensors."""
        mid = astra.projector.matrix(self._workers[0].proj)
        try:
            w = astra.matrix.get(mid)
        finally:
            astra.matrix.delete(mid)
        w = w.astype(np.float32).tocsr()
        self._Wt, self._WTt = _torch_csr(w), _torch_csr(w.T.tocsr())

    def _matmul_torch(self, m: torch.Tensor, t: torch.Tensor, hw_in: tuple[int, int], hw_out: tuple[int, int],
                      what: str) -> torch.Tensor:
        """``m`` (torch CSR) applied to every slice of the tensor ``t`` (D, *hw_in) in one sparse
        product (MKL, torch's threads): (m @ X^T)^T with X = t as (D, prod(hw_in)), in float32 on
        the CPU; returned in ``t``'s dtype and device, shape (D, *hw_out) (no D for one slice)."""
        self._check_open()
        squeeze = self._check_stack_shape(tuple(t.shape), hw_in, what)
        src = t.detach().to(device="cpu", dtype=torch.float32)
        src = src.reshape(1 if squeeze else src.shape[0], -1)
        out = (m @ src.T.contiguous()).T.reshape(src.shape[0], *hw_out)
        out = out[0] if squeeze else out.contiguous()
        return out.to(device=t.device, dtype=t.dtype)

    # -- CUDA (3-D) path: only reached when astra.use_cuda() is True ----------
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

    def _fp3d(self, vol: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._raw_fp3d(_orient(vol, self._orientation)), dtype=np.float32)

    def _bp3d(self, sino: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(_orient_inverse(self._raw_bp3d(sino), self._orientation), dtype=np.float32)

    def _init_cuda(self) -> None:
        """Calibrate the 3-D CUDA in-plane/slice orientation against the 2-D CPU ``linear`` projector."""
        g = self.geometry
        n_probe = min(g.n, 32)
        probe_geom = CTGeometry(n=n_probe, angles=g.angles, det_spacing=g.det_spacing, projector="linear")
        rng = np.random.default_rng(1234)
        probe = rng.random((3, n_probe, n_probe)).astype(np.float32)
        probe[:, : n_probe // 3, : n_probe // 2] += 2.0  # break symmetries on purpose
        with ParallelBeamCT(probe_geom, n_threads=1, backend="cpu") as ref:
            self._orientation, self._cuda_calibration_error = _select_orientation(
                lambda v: self._raw_fp3d(v, n=n_probe, det_count=probe_geom.det_count), ref.forward_np, probe)


def _torch_csr(m) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32; int64 indices, faster than int32 here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data.astype(np.float32)), size=m.shape,
                                       check_invariants=False)


def _estimated_nnz(geom: CTGeometry) -> int:
    """Upper estimate of the system matrix entries: every ray crosses at most ~2 sqrt(2) n pixels."""
    return int(geom.n_views * geom.det_count * 2 * math.ceil(math.sqrt(2.0) * geom.n))


def fbp(sino, geometry: CTGeometry, n_threads: int | None = None):
    """One-shot FBP (Ram-Lak) of a sinogram stack (D, V, det) or (V, det), numpy or torch.

    Returns the same kind of array (torch: input dtype/device; numpy: float32).
    """
    with ParallelBeamCT(geometry, n_threads=n_threads) as op:
        if isinstance(sino, torch.Tensor):
            return op.A_dagger(sino)
        return op.fbp_np(sino)
