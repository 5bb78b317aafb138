"""Backends of :class:`~diffrecon.physics.ct.ParallelBeamCT` (protocol: :mod:`.base`) and the
factory that picks one.

``auto`` picks ``cuda`` when ``astra.use_cuda()``, else ``matrix`` while the estimated size of
the system matrix is at most ``matrix.MATRIX_MAX_NNZ`` entries, else ``cpu`` (:mod:`.slices`).
"""

from __future__ import annotations

import astra
import numpy as np

from diffrecon.physics.ct.backends import matrix
from diffrecon.physics.ct.backends.base import CTBackend
from diffrecon.physics.ct.backends.cuda import CudaBackend
from diffrecon.physics.ct.backends.matrix import MatrixBackend
from diffrecon.physics.ct.backends.slices import SlicesBackend
from diffrecon.physics.ct.geometry import CTGeometry

__all__ = ["BACKENDS", "BACKEND_CLASSES", "CTBackend", "choose_backend", "make_backend"]

BACKEND_CLASSES: dict[str, type] = {"cpu": SlicesBackend, "matrix": MatrixBackend, "cuda": CudaBackend}
BACKENDS = ("auto", *BACKEND_CLASSES)


def choose_backend(geometry: CTGeometry) -> str:
    """The name ``auto`` resolves to for ``geometry`` on this machine."""
    if astra.use_cuda():
        return "cuda"
    return "matrix" if matrix.estimated_nnz(geometry) <= matrix.MATRIX_MAX_NNZ else "cpu"


def make_backend(geometry: CTGeometry, n_threads: int, backend: str = "auto") -> CTBackend:
    """Validate the arguments and build the backend ``backend`` (one of :data:`BACKENDS`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    if backend == "cuda" and not astra.use_cuda():
        raise RuntimeError("backend='cuda' requested but astra.use_cuda() is False (no usable GPU)")
    if backend == "auto":
        backend = choose_backend(geometry)
    return BACKEND_CLASSES[backend](geometry, int(n_threads))
