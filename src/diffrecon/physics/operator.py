"""Linear operator interface shared by every forward model.

An operator maps an image ``x`` (domain) to measurements ``y`` (range):

    y = A x,        A^H : range -> domain,   <A x, y> = <x, A^H y>.

Operators work on torch tensors (CPU or CUDA, real or complex) and carry their
parameters (masks, coil maps, geometry) explicitly as constructor arguments.

Iterative solvers that apply the normal operator ``A^H A`` many times (CG) ask the operator
for it in its preferred *working layout* through :meth:`LinearOperator.gram` (a :class:`Gram`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Gram:
    """The normal operator ``G = A^H A`` of an operator, applied in a working layout.

    A working layout is a fixed rearrangement (a permutation of the entries, possibly with a
    reshape) ``P`` of the image ``x``; solvers move their unknown into it once, iterate there,
    and move it back once::

        w = to_work(x) = P x,     apply(w) = P A^H A P^T w = to_work(A^H A x),
        from_work(to_work(x), x.shape) = x.

    ``P`` is orthogonal, so inner products, norms and the CG iteration are the same in every
    layout (up to the summation order of floating point). ``slice_axis`` is the axis of the
    working array that indexes the slices of a volume (the z axis of an (S, H, W) image), so
    that a solver can apply operators along z (e.g. a z total variation) without knowing
    the layout.

    This base class is the identity layout: the working array is the image itself (for a
    volume (S, H, W): ``slice_axis = 0``) and ``apply = normal``. Operators with a faster
    native layout return a subclass (the sparse-matrix CT backend: slices as columns
    (H·W, S), ``slice_axis = 1``).
    """

    slice_axis: int = 0

    def __init__(self, normal: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self._normal = normal

    def to_work(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> working array (here: the image itself, no copy)."""
        return x

    def from_work(self, w: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Working array -> image of ``shape`` (here: ``w`` itself, viewed with that shape)."""
        return w.reshape(shape)

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """``A^H A`` on a working array; returns a working array."""
        return self._normal(w)


class LinearOperator:
    """Base class: subclasses implement :meth:`A` and :meth:`A_adjoint`.

    ``normal(x) = A^H A x`` and :meth:`gram` (the same in the identity layout) are provided;
    ``A_dagger`` (a pseudo-inverse or a classical direct reconstruction such as FBP) is optional.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (math name)
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``A^H A x``."""
        return self.A_adjoint(self.A(x))

    def gram(self) -> Gram:
        """``A^H A`` in this operator's working layout (see :class:`Gram`); here the identity
        layout, ``apply = normal``, ``slice_axis = 0``."""
        return Gram(self.normal)

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
