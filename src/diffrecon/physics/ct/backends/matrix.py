"""``matrix`` backend: ASTRA's own sparse system matrix as a torch CSR tensor.

``W`` (V·det, n²) is the matrix of the geometry's 2-D projector (``astra.projector.matrix``,
what ASTRA's CPU FP/BP apply), stored once as float32 CSR (int64 indices) together with its
exact transpose ``W^T``. With the slices of a stack as the columns of X (n², D)::

    A x   = (W   X)^T  reshaped to (D, V, det),
    A^T y = (W^T Y)^T  reshaped to (D, n, n),     Y (V·det, D) the sinograms as columns,

one sparse product (MKL, torch's threads) for the whole stack and no per-slice calls: much
faster than per-slice ASTRA for small images and many angles. ``A^T`` is the exact transpose
by construction. FBP runs through the 2-D CPU pool of :mod:`.slices`.

The native layout of ``A^T A`` is the column layout X (n², D): :class:`ColumnGram` applies
``W^T (W X)`` with no transposes. The factory picks this backend on CPU while
:func:`estimated_nnz` <= ``MATRIX_MAX_NNZ``.
"""

from __future__ import annotations

import math
import warnings

import astra
import numpy as np
import torch

from diffrecon.physics.ct.backends.slices import SlicesBackend
from diffrecon.physics.ct.geometry import CTGeometry
from diffrecon.physics.operator import Gram

MATRIX_MAX_NNZ = 50_000_000  # ~400 MB as float32 CSR; larger problems use the per-slice CPU path


def estimated_nnz(geom: CTGeometry) -> int:
    """Upper estimate of the system matrix entries: every ray crosses at most ~2 sqrt(2) n pixels."""
    return int(geom.n_views * geom.det_count * 2 * math.ceil(math.sqrt(2.0) * geom.n))


def torch_csr(m) -> torch.Tensor:
    """A scipy CSR matrix as a torch sparse CSR tensor (float32; int64 indices, faster than int32 here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data.astype(np.float32)), size=m.shape,
                                       check_invariants=False)


def _stack_product(m: torch.Tensor, t: torch.Tensor, hw_out: tuple[int, int]) -> torch.Tensor:
    """``m`` (CSR, (P_out, P_in)) on every slice of ``t`` (D, *hw_in): (m @ T^T)^T, T = t as (D, P_in)."""
    src = t.reshape(t.shape[0], -1)
    return (m @ src.T.contiguous()).T.reshape(src.shape[0], *hw_out).contiguous()


class MatrixBackend:
    """The ``matrix`` backend (see the module docstring)."""

    name = "matrix"

    def __init__(self, geometry: CTGeometry, n_threads: int) -> None:
        self.geometry = geometry
        self.n_threads = int(n_threads)
        self.closed = False
        self._slices = SlicesBackend(geometry, n_threads)     # FBP, and the projector of W
        try:
            mid = astra.projector.matrix(self._slices.workers[0].proj)
            try:
                w = astra.matrix.get(mid)
            finally:
                astra.matrix.delete(mid)
            w = w.astype(np.float32).tocsr()
            self.W, self.WT = torch_csr(w), torch_csr(w.T.tocsr())
        except Exception:
            self.close()
            raise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _stack_product(self.W, x, self.geometry.sino_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return _stack_product(self.WT, y, self.geometry.image_shape)

    def fbp(self, y: torch.Tensor) -> torch.Tensor:
        return self._slices.fbp(y)

    def gram(self) -> "ColumnGram":
        return ColumnGram(self)

    def close(self) -> None:
        self.closed = True
        self.W = self.WT = None
        self._slices.close()


class ColumnGram(Gram):
    """``A^T A`` in the column layout of the system matrix.

    Working array: the slices of a volume u (S, H, W) as the columns of U (H·W, S);
    ``apply(U) = W^T (W U)`` (two sparse products in float32 on the CPU, returned in U's dtype
    and device; not tracked by autograd); ``slice_axis = 1``.
    """

    slice_axis = 1

    def __init__(self, backend: MatrixBackend) -> None:
        self._backend = backend

    def to_work(self, x: torch.Tensor) -> torch.Tensor:
        """(S, H, W) -> (H·W, S), contiguous."""
        return x.reshape(x.shape[0], -1).T.contiguous()

    def from_work(self, w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """(H·W, S) -> (S, H, W) = ``shape``, contiguous."""
        return w.T.reshape(shape).contiguous()

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """``W^T W U``: (n², S) -> (n², S)."""
        b = self._backend
        if not isinstance(w, torch.Tensor) or not w.is_floating_point():
            raise TypeError(f"w must be a real floating-point torch.Tensor, got {getattr(w, 'dtype', type(w))}")
        if b.closed:
            raise RuntimeError("ParallelBeamCT is closed")
        n2 = b.geometry.n ** 2
        if w.ndim != 2 or w.shape[0] != n2:
            raise ValueError(f"w must have shape ({n2}, S), got {tuple(w.shape)}")
        src = w.detach().to(device="cpu", dtype=torch.float32).contiguous()
        return (b.WT @ (b.W @ src)).to(device=w.device, dtype=w.dtype)
