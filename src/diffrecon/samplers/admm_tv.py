"""Data consistency for the CT diffusion samplers: CG and one ADMM iteration of z-TV least squares.

Volume u (S, H, W), measurements y = A u (S, V, D), A slice-wise (:class:`ParallelBeamCT`),
D_z the **circular** forward difference along the slice axis, (D_z u)_s = u_{s+1} − u_s with
u_S = u_0, and D_zᵀ its exact adjoint, (D_zᵀ v)_s = v_{s−1} − v_s. One ADMM iteration of

    min_u  ½‖A u − y‖² + λ ‖D_z u‖₁      (split v = D_z u, scaled dual w, penalty ρ)

is, warm-started at the denoised estimate u⁰ (DDS / DiffusionBlend):

    u ← CG_n[(AᵀA + ρ D_zᵀD_z) u = Aᵀy + ρ D_zᵀ(v − w)]   starting from u⁰,
    v ← soft(D_z u + w, λ/ρ),     w ← w + D_z u − v,

with v and w carried across the diffusion steps (both start at 0). ``rho = 0`` drops the z-TV
term (CG on AᵀA u = Aᵀy). CG uses global inner products over the whole volume, in the
working layout of the operator's Gram (``op.gram()``, e.g. slices as columns for a sparse
system matrix).

:class:`ProximalCG` is DDS-2D's data consistency as its evaluation script runs it: the proximal
step (I + γ AᵀA) u = u⁰ + γ Aᵀy, CG warm-started at u⁰.

All parameters (ρ, λ, γ) are in the units of the true adjoint Aᵀ; the originals' back-projector
is c·Aᵀ with c = π/(2V), and :func:`to_true_adjoint` maps their values (docs/ct_scaling.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import math

import torch

from diffrecon.physics.operator import LinearOperator

#: the data-consistency solves: ``admm`` (z-TV ADMM, CG only when ρ = 0), ``cg`` (CG on
#: AᵀA u = Aᵀy), ``proximal`` ((I + γAᵀA) u = u⁰ + γAᵀy)
DC_KINDS = ("admm", "cg", "proximal")
#: units of ρ, λ, γ: ``original`` (the originals' back-projector c·Aᵀ, c = π/(2V)) or ``native`` (Aᵀ)
DC_SCALES = ("original", "native")


def backprojector_scale(n_views: int) -> float:
    """c = π/(2V): the originals' back-projector is c·Aᵀ (unfiltered back-projection times c)."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    return math.pi / (2 * n_views)


def to_true_adjoint(params: dict, n_views: int, dc_scale: str = "original", n: int | None = None,
                    reference_size: int = 256) -> dict:
    """Data-consistency parameters in the units of the true adjoint Aᵀ.

    ``dc_scale = "original"``: ``rho``, ``lam``, ``gamma`` are given in the originals' units
    (back-projector c·Aᵀ, c = π/(2V)); then ρ = ρ_o / s, λ = λ_o / s (λ/ρ unchanged) and
    γ = γ_o · s with s = c. With the slice side ``n`` given, s = c · reference_size / n: the
    originals' values were set for ``reference_size``² slices, and the largest eigenvalue of
    AᵀA grows linearly with n (pixel units), so this keeps ρ's ratio to it — the balance of the
    data term and the z-TV term — at the papers' value on a smaller or larger grid
    (``n = reference_size``: s = c). ``"native"``: returned as given. Other keys are copied.
    """
    if dc_scale not in DC_SCALES:
        raise ValueError(f"dc_scale '{dc_scale}' is not one of {', '.join(DC_SCALES)}")
    out = dict(params)
    if dc_scale == "native":
        return out
    c = backprojector_scale(n_views) * (float(reference_size) / n if n else 1.0)
    for key in ("rho", "lam"):
        if key in out:
            out[key] = float(out[key]) / c
    if "gamma" in out:
        out["gamma"] = float(out["gamma"]) * c
    return out


def dz(u: torch.Tensor) -> torch.Tensor:
    """Circular forward difference along axis 0."""
    return torch.roll(u, shifts=-1, dims=0) - u


def dz_adjoint(v: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`dz`: (D_zᵀ v)_s = v_{s−1} − v_s (circular)."""
    return torch.roll(v, shifts=1, dims=0) - v


def soft_threshold(x: torch.Tensor, tau: float) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - tau, min=0.0)


def conjugate_gradient(normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, x0: torch.Tensor,
                       n_iter: int = 5, tol: float = 1e-5) -> torch.Tensor:
    """Solve M x = rhs for symmetric positive (semi)definite ``normal`` = M, starting at ``x0``.

    At most ``n_iter`` iterations; stops early when ‖r‖ ≤ tol · ‖rhs‖ (inner products over
    the whole array). Real arrays; the updates run in place (no new volume-sized tensors per
    iteration, which costs more than the arithmetic for small volumes on a CPU).
    """
    def dot(a, b):
        return torch.dot(a.reshape(-1), b.reshape(-1))

    x = x0.clone()
    r = rhs - normal(x)
    p = r.clone()
    rs = dot(r, r)
    stop = (tol * torch.linalg.vector_norm(rhs)) ** 2
    for _ in range(n_iter):
        if rs <= stop:
            break
        mp = normal(p)
        alpha = rs / dot(p, mp).clamp_min(1e-30)
        x.addcmul_(p, alpha)
        r.addcmul_(mp, alpha, value=-1.0)
        rs_new = dot(r, r)
        p.mul_(rs_new / rs.clamp_min(1e-30)).add_(r)
        rs = rs_new
    return x


@dataclass
class ADMMTV:
    """One ADMM z-TV iteration per call, with its split variable and dual kept between calls.

    ``op`` is the forward model (``A``, ``A_adjoint`` on volumes (S, H, W)); CG and the ADMM
    updates run in the working layout of its Gram operator ``op.gram()`` (see
    :class:`~diffrecon.physics.operator.Gram`): each call moves the volume into that layout once
    and back once. D_z acts along the layout's ``slice_axis``:

    * ``slice_axis = 0`` (the volume itself, e.g. per-slice or CUDA projectors):
      D_z u = roll(u, −1) − u as in :func:`dz`, and D_zᵀD_z u = 2u − u_{s+1} − u_{s−1};
    * ``slice_axis = 1`` (slices as the columns of U (H·W, S), the layout of a sparse system
      matrix): D_z is the right product with the (S, S) circulant difference matrix D,
      U ↦ U D, adjoint V ↦ V Dᵀ, D_zᵀD_z U = U D Dᵀ.

    Both are the same linear maps on the same numbers (the layouts are permutations).
    """

    op: LinearOperator
    y: torch.Tensor
    rho: float = 10.0
    lam: float = 0.04
    cg_iter: int = 5
    cg_tol: float = 1e-5
    v: torch.Tensor | None = field(default=None, repr=False)
    w: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.rho < 0 or self.lam < 0:
            raise ValueError(f"rho and lam must be >= 0, got {self.rho}, {self.lam}")
        self._gram = self.op.gram()
        self._axis = self._gram.slice_axis
        if self._axis not in (0, 1):
            raise ValueError(f"ADMMTV supports working layouts with slice_axis 0 or 1, got {self._axis}")
        self._aty = self._gram.to_work(self.op.A_adjoint(self.y))
        if self._axis == 1:
            n = self._aty.shape[1]
            d = torch.zeros(n, n, dtype=self._aty.dtype, device=self._aty.device)
            idx = torch.arange(n, device=self._aty.device)
            d[idx, idx] -= 1.0
            d[(idx + 1) % n, idx] += 1.0        # (u D)_s = u_{s+1} − u_s, circular
            self._d, self._dt, self._lap = d, d.T.contiguous(), d @ d.T

    def _dz(self, u: torch.Tensor) -> torch.Tensor:
        return dz(u) if self._axis == 0 else u @ self._d

    def _dz_adjoint(self, v: torch.Tensor) -> torch.Tensor:
        return dz_adjoint(v) if self._axis == 0 else v @ self._dt

    def normal(self, u: torch.Tensor) -> torch.Tensor:
        """(AᵀA + ρ D_zᵀD_z) u in the working layout (e.g. volume (S, H, W), or columns (H·W, S))."""
        out = self._gram.apply(u)
        if self._axis == 1:
            return out.addmm_(u, self._lap, alpha=self.rho) if self.rho > 0 else out
        n = u.shape[0]
        if self.rho > 0 and n > 1:   # + ρ D_zᵀD_z u = ρ (2u − u_{s+1} − u_{s−1}), circular, in place
            rho = self.rho
            out.add_(u, alpha=2 * rho)
            out[:-1].sub_(u[1:], alpha=rho)
            out[-1].sub_(u[0], alpha=rho)
            out[1:].sub_(u[:-1], alpha=rho)
            out[0].sub_(u[-1], alpha=rho)
        return out

    def __call__(self, u0: torch.Tensor) -> torch.Tensor:
        """One iteration from the warm start ``u0`` (S, H, W); returns the new u (S, H, W)."""
        return self._gram.from_work(self._iterate(self._gram.to_work(u0)), u0.shape)

    def _iterate(self, u0: torch.Tensor) -> torch.Tensor:
        if self.rho == 0:
            return conjugate_gradient(self.normal, self._aty, u0, self.cg_iter, self.cg_tol)
        if self.v is None:
            self.v = torch.zeros_like(u0)
            self.w = torch.zeros_like(u0)
        rhs = self._aty + self.rho * self._dz_adjoint(self.v - self.w)
        u = conjugate_gradient(self.normal, rhs, u0, self.cg_iter, self.cg_tol)
        du = self._dz(u)
        self.v = soft_threshold(du + self.w, self.lam / self.rho)
        self.w = self.w + du - self.v
        return u

    def objective(self, u: torch.Tensor) -> float:
        """½‖A u − y‖² + λ‖D_z u‖₁ for a volume u (S, H, W)."""
        return float(0.5 * torch.sum((self.op.A(u) - self.y) ** 2) + self.lam * dz(u).abs().sum())


@dataclass
class ProximalCG:
    """DDS-2D's data consistency: u = CG_n[(I + γ AᵀA) u = u⁰ + γ Aᵀy] from the warm start u⁰.

    γ in the units of the true adjoint (the originals' γ_o = 1 with back-projector c·Aᵀ is
    γ = c, see :func:`to_true_adjoint`).
    """

    op: LinearOperator
    y: torch.Tensor
    gamma: float = 1.0
    cg_iter: int = 5
    cg_tol: float = 1e-5

    def __post_init__(self):
        if self.gamma <= 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")
        self._gram = self.op.gram()
        self._aty = self._gram.to_work(self.op.A_adjoint(self.y))

    def normal(self, u: torch.Tensor) -> torch.Tensor:
        """(I + γ AᵀA) u in the working layout."""
        return self._gram.apply(u).mul_(self.gamma).add_(u)

    def __call__(self, u0: torch.Tensor) -> torch.Tensor:
        w0 = self._gram.to_work(u0)
        rhs = w0 + self.gamma * self._aty
        return self._gram.from_work(conjugate_gradient(self.normal, rhs, w0, self.cg_iter, self.cg_tol), u0.shape)


def data_consistency(op: LinearOperator, y: torch.Tensor, dc: str = "admm", rho: float = 0.0, lam: float = 0.0,
                     gamma: float = 1.0, cg_iter: int = 5) -> Callable[[torch.Tensor], torch.Tensor]:
    """The data-consistency solve ``dc`` (:data:`DC_KINDS`) as ``u ↦ u'`` (state such as ADMM duals kept)."""
    if dc == "admm":
        return ADMMTV(op, y, rho=rho, lam=lam, cg_iter=cg_iter)
    if dc == "cg":
        return ADMMTV(op, y, rho=0.0, lam=0.0, cg_iter=cg_iter)
    if dc == "proximal":
        return ProximalCG(op, y, gamma=gamma, cg_iter=cg_iter)
    raise ValueError(f"dc '{dc}' is not one of {', '.join(DC_KINDS)}")
