"""2-D parallel-beam CT applied slice by slice (ASTRA toolbox), as a :class:`LinearOperator`.

Model
-----
A volume ``x`` of ``D`` axial slices, each ``n x n`` pixels of side 1, is measured slice by
slice with a 2-D parallel-beam geometry (the geometry of the DiffusionBlend / DDS line of
work)::

    y[d, v, t] = (A x)[d, v, t] = integral of x[d] along the ray of angle
                                  theta_v through detector bin t,

with ``V`` angles ``theta_v`` (radians) and ``det_count`` detector bins of pitch
``det_spacing`` centred on the rotation axis (:class:`CTGeometry`), discretised by the chosen
ASTRA projector (``line``, ``strip`` or ``linear`` = Joseph).

* ``A``          volume (D, n, n) -> sinogram (D, V, det_count)
* ``A_adjoint``  unfiltered backprojection A^T: sinogram -> volume
* ``A_dagger``   filtered backprojection (FBP, Ram-Lak), a classical approximate inverse
* ``gram()``     A^T A in the backend's working layout (:class:`~diffrecon.physics.operator.Gram`)

A single slice may be given as (n, n) / (V, det_count); the result then has no slice axis
either. Computations run in float32 inside ASTRA / on the CPU; torch outputs come back with the
input's dtype and device. The arithmetic is done by one backend chosen at construction
(:mod:`diffrecon.physics.ct.backends`: ``cpu``, ``matrix``, ``cuda``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from diffrecon.physics.ct.backends import make_backend
from diffrecon.physics.ct.geometry import CTGeometry
from diffrecon.physics.operator import Gram, LinearOperator

__all__ = ["ParallelBeamCT", "fbp"]


class _ForwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, op: "ParallelBeamCT") -> torch.Tensor:
        ctx.op = op
        return op._apply(op._backend.forward, x, op.geometry.image_shape, "volume")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return _AdjointFn.apply(grad_out, ctx.op), None


class _AdjointFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, op: "ParallelBeamCT") -> torch.Tensor:
        ctx.op = op
        return op._apply(op._backend.adjoint, y, op.geometry.sino_shape, "sinogram")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        return _ForwardFn.apply(grad_out, ctx.op), None


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
        self._closed = False
        self._lock = threading.Lock()
        if not isinstance(geometry, CTGeometry):
            raise TypeError(f"geometry must be a CTGeometry, got {type(geometry).__name__}")
        self.geometry = geometry
        self._backend = make_backend(geometry, max(1, torch.get_num_threads()) if n_threads is None else n_threads,
                                     backend)

    # -- properties / lifecycle ----------------------------------------------
    @property
    def backend(self) -> str:
        """Name of the backend in use: ``"cpu"``, ``"matrix"`` or ``"cuda"``."""
        return self._backend.name

    @property
    def n_threads(self) -> int:
        """CPU worker threads of the backend (1 on CUDA)."""
        return self._backend.n_threads

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the backend: thread pool and every ASTRA object this operator made (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()

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

    # -- torch API -----------------------------------------------------------
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Forward projection ``y = A x``: (D, n, n) -> (D, V, det) or (n, n) -> (V, det)."""
        _check_tensor(x, "x")
        return _ForwardFn.apply(x, self)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Unfiltered backprojection ``A^T y``: (D, V, det) -> (D, n, n) or (V, det) -> (n, n)."""
        _check_tensor(y, "y")
        return _AdjointFn.apply(y, self)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """FBP (Ram-Lak) per slice: (D, V, det) -> (D, n, n); not tracked by autograd."""
        _check_tensor(y, "y")
        return self._apply(self._backend.fbp, y, self.geometry.sino_shape, "sinogram")

    def gram(self) -> Gram:
        """``A^T A`` in the backend's working layout (see :class:`~diffrecon.physics.operator.Gram`):
        the column layout (n², S) of the system matrix for ``matrix`` (``slice_axis = 1``), the
        identity (volume) layout (S, n, n) with ``apply = normal`` otherwise (``slice_axis = 0``)."""
        self._check_open()
        g = self._backend.gram()
        return super().gram() if g is None else g

    # -- numpy API (float32 in, float32 out) ---------------------------------
    def forward_np(self, x: np.ndarray) -> np.ndarray:
        """``A x`` on a numpy array (D, n, n) or (n, n); returns float32 (D, V, det) or (V, det)."""
        return self._apply_np(self._backend.forward, x, self.geometry.image_shape, "volume")

    def adjoint_np(self, y: np.ndarray) -> np.ndarray:
        """``A^T y`` (unfiltered backprojection) on a numpy array; returns float32 (D, n, n) or (n, n)."""
        return self._apply_np(self._backend.adjoint, y, self.geometry.sino_shape, "sinogram")

    def fbp_np(self, y: np.ndarray) -> np.ndarray:
        """FBP (Ram-Lak) per slice on a numpy array; returns float32 (D, n, n) or (n, n)."""
        return self._apply_np(self._backend.fbp, y, self.geometry.sino_shape, "sinogram")

    # -- internals -----------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ParallelBeamCT is closed")

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor, hw: tuple[int, int],
               what: str) -> torch.Tensor:
        """Backend method ``fn`` on the tensor ``t`` (D, *hw) or (*hw): float32 CPU in, ``t``'s dtype
        and device out."""
        self._check_open()
        squeeze = _check_stack_shape(tuple(t.shape), hw, what)
        src = t.detach()
        if src.device.type != "cpu" or src.dtype != torch.float32:
            src = src.to(device="cpu", dtype=torch.float32)
        src = src.contiguous()
        res = fn(src[None] if squeeze else src)
        res = res[0] if squeeze else res
        if res.dtype != t.dtype or res.device != t.device:
            res = res.to(device=t.device, dtype=t.dtype)
        return res

    def _apply_np(self, fn: Callable[[torch.Tensor], torch.Tensor], a, hw: tuple[int, int], what: str) -> np.ndarray:
        self._check_open()
        a = np.asarray(a)
        if np.iscomplexobj(a):
            raise TypeError(f"{what} must be real")
        squeeze = _check_stack_shape(tuple(a.shape), hw, what)
        out = fn(torch.from_numpy(np.ascontiguousarray(a[None] if squeeze else a, dtype=np.float32))).numpy()
        return out[0] if squeeze else out


def _check_tensor(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got {t.dtype}")


def _check_stack_shape(shape: tuple[int, ...], hw: tuple[int, int], what: str) -> bool:
    """Validate a (D, *hw) or (*hw) shape; returns whether it is a single slice."""
    if len(shape) not in (2, 3):
        raise ValueError(f"{what} must have 2 or 3 dims, got shape {shape}")
    if tuple(shape[-2:]) != tuple(hw):
        raise ValueError(f"{what} slices must have shape {hw}, got {tuple(shape[-2:])}")
    return len(shape) == 2


def fbp(sino, geometry: CTGeometry, n_threads: int | None = None):
    """One-shot FBP (Ram-Lak) of a sinogram stack (D, V, det) or (V, det), numpy or torch.

    Returns the same kind of array (torch: input dtype/device; numpy: float32).
    """
    with ParallelBeamCT(geometry, n_threads=n_threads) as op:
        if isinstance(sino, torch.Tensor):
            return op.A_dagger(sino)
        return op.fbp_np(sino)
