"""The CT data consistency in the originals' units: their back-projector is c·Aᵀ, c = π/(2V).

A reference ADMM z-TV and a reference proximal step are written here plainly with that
back-projector (AT_o = c · op.A_adjoint) and the originals' parameters; the project's solves
with the converted parameters (:func:`to_true_adjoint`) must give the same iterates, and the
unconverted ones must not.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffrecon import methods
from diffrecon.physics.ct import CTGeometry, ParallelBeamCT
from diffrecon.samplers.admm_tv import ADMMTV, ProximalCG, backprojector_scale, to_true_adjoint


def _dot(a, b):
    return float(torch.sum(a * b))


def _cg(apply, rhs, x0, n_iter, tol=1e-5):
    x = x0.clone()
    r = rhs - apply(x)
    p = r.clone()
    rs = _dot(r, r)
    for _ in range(n_iter):
        if rs <= (tol ** 2) * _dot(rhs, rhs):
            break
        ap = apply(p)
        alpha = rs / _dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        rs, rs_old = _dot(r, r), rs
        p = r + (rs / rs_old) * p
    return x


def _dz(u):
    return torch.roll(u, -1, 0) - u


def _dzt(v):
    return torch.roll(v, 1, 0) - v


def _reference_admm(op, y, c, rho_o, lam_o, starts, cg_iter):
    """The originals' iteration: (AT_o A + ρ_o D_zᵀD_z) u = AT_o y + ρ_o D_zᵀ(v − w), CG from
    the start; v = soft(D_z u + w, λ_o/ρ_o); w += D_z u − v; v, w carried."""
    at_o = lambda s: c * op.A_adjoint(s)                          # noqa: E731
    v = w = torch.zeros_like(starts[0])
    outs = []
    for u0 in starts:
        rhs = at_o(y) + rho_o * _dzt(v - w)
        u = _cg(lambda x: at_o(op.A(x)) + rho_o * _dzt(_dz(x)), rhs, u0, cg_iter)
        du = _dz(u)
        z = du + w
        v = torch.sign(z) * torch.clamp(z.abs() - lam_o / rho_o, min=0)
        w = w + du - v
        outs.append(u)
    return outs


GEOMETRIES = {"sv8": CTGeometry.sparse_view(16, 8), "la90": CTGeometry.limited_angle(16, 90)}


@pytest.mark.parametrize("method", ["dds", "diffusion_mbir", "diffusion_blend"])
@pytest.mark.parametrize("setting", ["sv8", "la90"])
def test_admm_with_converted_parameters_is_the_originals_iteration(method, setting):
    geom = GEOMETRIES[setting]
    params = methods.resolve_params(method, limited_angle=setting.startswith("la"))
    assert params["dc_scale"] == "original"
    c = backprojector_scale(geom.n_views)
    assert c == pytest.approx(math.pi / (2 * geom.n_views))
    g = torch.Generator().manual_seed(1)
    truth = torch.rand(6, 16, 16, generator=g, dtype=torch.float64).cumsum(0) / 6
    starts = [truth + 0.2 * torch.randn(truth.shape, generator=g, dtype=torch.float64) for _ in range(3)]
    with ParallelBeamCT(geom, n_threads=1, backend="cpu") as op:
        y = op.A(truth)
        ref = _reference_admm(op, y, c, params["rho"], params["lam"], starts, params["cg_iter"])
        conv = to_true_adjoint(params, geom.n_views, "original")
        assert conv["rho"] == pytest.approx(params["rho"] * 2 * geom.n_views / math.pi)
        assert conv["lam"] / conv["rho"] == pytest.approx(params["lam"] / params["rho"])
        ours = ADMMTV(op, y, rho=conv["rho"], lam=conv["lam"], cg_iter=params["cg_iter"])
        native = ADMMTV(op, y, rho=params["rho"], lam=params["lam"], cg_iter=params["cg_iter"])
        raw = to_true_adjoint(params, geom.n_views, "native")
        assert raw["rho"] == params["rho"] and raw["lam"] == params["lam"]
        for u0, r in zip(starts, ref):                # duals carried across the calls
            a, b = ours(u0), native(u0)
            scale = float(r.abs().max())
            assert float((a - r).abs().max()) < 1e-4 * scale
        assert float((b - r).abs().max()) > 1e-3 * scale             # unconverted: another iteration


@pytest.mark.parametrize("setting", ["sv8", "la90"])
def test_proximal_step_is_the_direct_solve_and_the_originals_step(setting):
    """DDS-2D: (I + γAᵀA) x = x̂0 + γAᵀy; γ = γ_o·c reproduces the originals' step with AT_o = c Aᵀ."""
    geom = CTGeometry.sparse_view(8, 4) if setting == "sv8" else CTGeometry.limited_angle(8, 90)
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand(2, 8, 8, generator=g, dtype=torch.float64)
    c = backprojector_scale(geom.n_views)
    gamma = to_true_adjoint(methods.resolve_params("dds_2d"), geom.n_views)["gamma"]
    assert gamma == pytest.approx(1.0 * c) and methods.resolve_params("dds_2d")["dc"] == "proximal"
    with ParallelBeamCT(geom, n_threads=1, backend="cpu") as op:
        y = op.A(torch.rand(2, 8, 8, generator=g, dtype=torch.float64))
        # dense AᵀA of one slice, from the operator itself
        basis = torch.eye(64, dtype=torch.float64).reshape(64, 8, 8)
        gram = torch.stack([op.A_adjoint(op.A(e)) for e in basis]).reshape(64, 64).T
        gram = (gram + gram.T) / 2
        rhs = (x0 + gamma * op.A_adjoint(y)).reshape(2, 64)
        direct = torch.linalg.solve(torch.eye(64, dtype=torch.float64) + gamma * gram, rhs.T).T.reshape(2, 8, 8)
        solved = ProximalCG(op, y, gamma=gamma, cg_iter=200, cg_tol=1e-10)(x0)
        assert torch.allclose(solved, direct, rtol=1e-4, atol=1e-4 * float(direct.abs().max()))
        at_o = lambda s: c * op.A_adjoint(s)                                        # noqa: E731
        ref = _cg(lambda x: x + 1.0 * at_o(op.A(x)), x0 + 1.0 * at_o(y), x0, 5)     # γ_o = 1, 5 CG
        five = ProximalCG(op, y, gamma=gamma, cg_iter=5)(x0)
        assert float((five - ref).abs().max()) < 1e-4 * float(ref.abs().max())
        wrong = ProximalCG(op, y, gamma=1.0, cg_iter=5)(x0)                         # γ_o used as is
        assert float((wrong - ref).abs().max()) > 1e-2 * float(ref.abs().max())


def test_dc_scale_values_and_errors():
    p = to_true_adjoint({"rho": 10.0, "lam": 0.04, "gamma": 1.0, "eta": 0.85}, n_views=8)
    assert p["rho"] == pytest.approx(160 / math.pi) and p["lam"] == pytest.approx(0.64 / math.pi)
    assert p["gamma"] == pytest.approx(math.pi / 16) and p["eta"] == 0.85
    with pytest.raises(ValueError, match="dc_scale"):
        to_true_adjoint({"rho": 1.0}, 8, "astra")


def test_size_factor_keeps_rho_relative_to_the_largest_eigenvalue():
    """The originals' values were set for 256² slices: on n² slices ρ is scaled by n/256, which
    keeps ρ / λ_max(AᵀA) (linear in n) at its 256² value; at n = 256 nothing changes."""
    import torch

    from diffrecon.physics.ct import CTGeometry, ParallelBeamCT

    base = {"rho": 10.0, "lam": 0.04, "gamma": 1.0}
    assert to_true_adjoint(base, 8, n=256) == pytest.approx(to_true_adjoint(base, 8))
    small = to_true_adjoint(base, 8, n=64)
    assert small["rho"] == pytest.approx(10.0 * 16 / math.pi / 4) and small["gamma"] == pytest.approx(math.pi / 16 * 4)
    assert small["lam"] / small["rho"] == pytest.approx(0.004)
    ratios = []
    for n in (16, 32):
        with ParallelBeamCT(CTGeometry.sparse_view(n, 8), n_threads=1) as op:
            x = torch.rand(1, n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            for _ in range(80):
                x = op.normal(x)
                lam_max = float(x.norm())
                x = x / lam_max
        ratios.append(to_true_adjoint(base, 8, n=n)["rho"] / lam_max)
    assert ratios[0] == pytest.approx(ratios[1], rel=0.02)
