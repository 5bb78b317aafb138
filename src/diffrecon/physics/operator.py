"""Linear operator interface shared by every forward model.

An operator maps an image ``x`` (domain) to measurements ``y`` (range):

    y = A x,        A^H : range -> domain,   <A x, y> = <x, A^H y>.

Operators work on torch tensors (CPU or CUDA, real or complex) and carry their
parameters (masks, coil maps, geometry) explicitly as constructor arguments.
"""

from __future__ import annotations

import torch


class LinearOperator:
    """Base class: subclasses implement :meth:`A` and :meth:`A_adjoint`.

    ``normal(x) = A^H A x`` is provided; ``A_dagger`` (a pseudo-inverse or a
    classical direct reconstruction such as FBP) is optional.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (math name)
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``A^H A x``."""
        return self.A_adjoint(self.A(x))

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError(f"{type(self).__name__} defines no A_dagger")


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real part of the Hermitian inner product ``sum(conj(a) * b)``, accumulated in float64/complex128."""
    if a.is_complex() or b.is_complex():
        a = a.to(torch.complex128)
        b = b.to(torch.complex128)
        return torch.sum(torch.conj(a) * b).real
    return torch.sum(a.to(torch.float64) * b.to(torch.float64))


def dot_test(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> float:
    """Relative adjoint mismatch ``|<Ax, y> - <x, A^H y>| / (|<Ax,y>| + |<x,A^H y>|)``.

    ``x`` must be in the operator's domain and ``y`` in its range. For an exact
    adjoint pair evaluated in float64 the result is at rounding level (~1e-15);
    float32 kernels (ASTRA) give ~1e-7.
    """
    lhs = inner(op.A(x), y)
    rhs = inner(x, op.A_adjoint(y))
    denom = lhs.abs() + rhs.abs()
    return float((lhs - rhs).abs() / denom) if float(denom) > 0 else 0.0
