"""The data term of DPS and DiffPIR: ‖y − A u‖ per slice, its gradient, and the proximal step.

The samplers hold a network batch x (B, 1, H, W) in the network's scale, B = S·P: S slices,
P = 1 (a real image per slice) or P = 2 (the real and imaginary parts of a complex image, as
the MRI prior sees them). :class:`LinearData` maps it to the image u of each slice in the data's
scale and back,

    u_s = r_s ⊙ (a·x_s + b)       (P = 2: x_s = x_{2s} + i·x_{2s+1}),

with a, b the network → data scale (VP CT prior: a = 1/2, b = 1/2; MRI prior: 1, 0) and r an
optional fixed reference of unit modulus per pixel (the MRI phase reference, so that the
sampled variable is close to real and non-negative), and evaluates, per slice s,

* :meth:`LinearData.norm_grad`: f_s = ‖y_s − A u_s‖ and ∇_x Σ_s f_s. With
  ∇_u f_s = −Aᴴ(y_s − A u_s) / f_s (complex u: the gradient ∂/∂Re + i ∂/∂Im; real u: its real
  part), ∇_x = a · unpack(conj(r) ⊙ ∇_u f).
* :meth:`LinearData.prox`: DiffPIR's data step û = argmin_u ‖y − A u‖² + ρ ‖u − u0‖², i.e.
  (AᴴA + ρ I) û = Aᴴ y + ρ u0 (real images: Re of both operators; ρ = 0: the least-squares
  limit of noise-free data), by ``cg_iter`` iterations
  of conjugate gradients per slice (per-slice step sizes; warm start u0), then mapped back to x.
  |r| = 1 makes the step in u the same as in the sampled variable.

``op`` acts on images (S, H, W) → data (S, …) (the project's operators: ``SingleCoilMRI``,
``MultiCoilMRI``, ``ParallelBeamCT``); :meth:`select` restricts everything to slices lo … hi−1
(``sub_op(lo, hi)`` gives the operator of those slices when it carries per-slice parameters,
e.g. one coil-map set per slice).
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["LinearData", "batched_cg"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Re Σ conj(a) b per slice (leading axis), shape (S,)."""
    p = (a.conj() * b).real if a.is_complex() else a * b
    return p.reshape(p.shape[0], -1).sum(1)


def batched_cg(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, x: torch.Tensor,
               n_iter: int) -> torch.Tensor:
    """``n_iter`` CG iterations on M x = b for every slice (leading axis) on its own (M
    Hermitian positive definite and block-diagonal over slices); ``x`` the start."""
    r = b - apply(x)
    p = r.clone()
    rr = _dot(r, r)
    view = (-1,) + (1,) * (b.dim() - 1)
    for _ in range(int(n_iter)):
        mp = apply(p)
        pmp = _dot(p, mp)
        alpha = torch.where(pmp > 0, rr / pmp.clamp_min(1e-300), torch.zeros_like(rr))
        x = x + alpha.view(view) * p
        r = r - alpha.view(view) * mp
        rr_new = _dot(r, r)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-300), torch.zeros_like(rr))
        p = r + beta.view(view) * p
        rr = rr_new
    return x


class LinearData:
    """‖y − A u‖ of S slices (see the module docstring). ``y`` (S, …) data; ``parts`` P (1, 2);
    ``scale``, ``offset``: a, b; ``ref`` (S, H, W) complex of unit modulus, or None."""

    def __init__(self, op, y: torch.Tensor, parts: int = 1, scale: float = 1.0, offset: float = 0.0,
                 ref: torch.Tensor | None = None, cg_iter: int = 5,
                 sub_op: Callable[[int, int], object] | None = None):
        if parts not in (1, 2):
            raise ValueError(f"parts must be 1 (real images) or 2 (real and imaginary parts), got {parts}")
        self.op, self.y, self.parts, self.a, self.b = op, y, int(parts), float(scale), float(offset)
        self.ref, self.cg_iter, self._sub_op = ref, int(cg_iter), sub_op
        self.real = parts == 1 and ref is None

    @property
    def n_slices(self) -> int:
        return int(self.y.shape[0])

    def select(self, lo: int, hi: int) -> "LinearData":
        """The data term of slices lo … hi−1."""
        op = self._sub_op(lo, hi) if self._sub_op is not None else self.op
        return LinearData(op, self.y[lo:hi], self.parts, self.a, self.b,
                          None if self.ref is None else self.ref[lo:hi], self.cg_iter, None)

    # -------------------------------------------------------------- network batch ↔ images
    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """(S·P, 1, H, W) network batch → images u (S, H, W)."""
        v = self.a * x[:, 0] + self.b
        if self.parts == 2:
            v = torch.complex(v[0::2], v[1::2])
        return v if self.ref is None else self.ref * v

    def _to_parts(self, v: torch.Tensor) -> torch.Tensor:
        """Images (S, H, W) → real parts (S·P, H, W): phase reference removed, real/imaginary split."""
        if self.ref is not None:
            v = v * self.ref.conj()
        if self.parts == 2:
            return torch.stack([v.real, v.imag], 1).flatten(0, 1)
        return v.real if v.is_complex() else v

    def from_image(self, u: torch.Tensor) -> torch.Tensor:
        """Images u (S, H, W) → network batch (S·P, 1, H, W) (the inverse of :meth:`to_image`)."""
        return ((self._to_parts(u) - self.b) / self.a)[:, None]

    def _grad_to_batch(self, g: torch.Tensor) -> torch.Tensor:
        """Image-domain gradient (S, H, W) → gradient in the network batch (chain rule of to_image)."""
        return (self.a * self._to_parts(g))[:, None]

    # -------------------------------------------------------------- the two operations
    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """f_s = ‖y_s − A u_s‖, (S,) float64."""
        r = self.y - self.op.A(self.to_image(x))
        return _dot(r, r).to(torch.float64).sqrt()

    def norm_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f (S,), ∇_x Σ_s f_s (S·P, 1, H, W)); a slice with f_s = 0 gets a zero gradient."""
        r = self.y - self.op.A(self.to_image(x))
        f = _dot(r, r).sqrt()
        g = -self.op.A_adjoint(r)
        if self.real and g.is_complex():
            g = g.real
        inv = torch.where(f > 0, 1.0 / f.clamp_min(1e-30), torch.zeros_like(f))
        g = g * inv.view((-1,) + (1,) * (g.dim() - 1)).to(g.real.dtype)
        return f.to(torch.float64), self._grad_to_batch(g).to(x.dtype)

    def prox(self, x: torch.Tensor, rho: float) -> torch.Tensor:
        """x of û = argmin_u ‖y − A u‖² + ρ ‖u − u0‖², u0 the image of ``x`` (``cg_iter`` CG iterations)."""
        if not rho >= 0:
            raise ValueError(f"the proximal weight rho must be >= 0, got {rho}")
        u0 = self.to_image(x)

        def fix(v):
            return v.real if self.real and v.is_complex() else v

        def apply(u):
            return fix(self.op.A_adjoint(self.op.A(u))) + rho * u

        b = fix(self.op.A_adjoint(self.y)).to(u0.dtype) + rho * u0
        return self.from_image(batched_cg(apply, b, u0, self.cg_iter)).to(x.dtype)
