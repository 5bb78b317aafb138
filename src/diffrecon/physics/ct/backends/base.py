"""The protocol every backend of :class:`~diffrecon.physics.ct.ParallelBeamCT` implements.

A backend applies the slice-wise 2-D parallel-beam projector ``A`` of one
:class:`~diffrecon.physics.ct.CTGeometry` (n x n slices, V angles, ``det`` bins) to stacks of
D >= 1 slices. The operator validates shapes and types, adds the slice axis for single
slices and converts dtype and device, so a backend only ever sees **float32, CPU,
C-contiguous torch tensors with a leading slice axis** and returns float32 CPU tensors:

* ``forward(x)``  x (D, n, n)   -> A x       (D, V, det)   line integrals, slice by slice
* ``adjoint(y)``  y (D, V, det) -> A^T y     (D, n, n)     unfiltered backprojection
* ``fbp(y)``      y (D, V, det) -> FBP(y)    (D, n, n)     Ram-Lak filtered backprojection
* ``gram()``      ``A^T A`` in the backend's native working layout as a
  :class:`~diffrecon.physics.operator.Gram`, or ``None`` for the operator's default identity
  (volume) layout
* ``close()``     delete every ASTRA object the backend made (idempotent); no other method
  may be called afterwards (the operator checks).

Attributes: ``name`` (``"cpu"``, ``"matrix"`` or ``"cuda"``, what ``ParallelBeamCT.backend``
reports) and ``n_threads`` (CPU worker threads actually used).

Backends are built by :func:`diffrecon.physics.ct.backends.make_backend`, each from
``(geometry, n_threads)``. Never call ASTRA's 3-D GPU functions unless ``astra.use_cuda()`` is
True: without a GPU they kill the process (SIGFPE).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from diffrecon.physics.operator import Gram


@runtime_checkable
class CTBackend(Protocol):
    """Slice-wise parallel-beam projector on float32 CPU tensors (see the module docstring)."""

    name: str
    n_threads: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``A x``: (D, n, n) -> (D, V, det)."""
        ...

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``: (D, V, det) -> (D, n, n)."""
        ...

    def fbp(self, y: torch.Tensor) -> torch.Tensor:
        """FBP (Ram-Lak): (D, V, det) -> (D, n, n)."""
        ...

    def gram(self) -> Gram | None:
        """``A^T A`` in the native working layout, or None for the identity (volume) layout."""
        ...

    def close(self) -> None:
        """Release every ASTRA object (idempotent)."""
        ...
