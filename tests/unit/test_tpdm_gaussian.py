"""TPDM's sampler on a Gaussian volume prior, where what it must produce is analytic.

The volume x (S, H, W) has W independent sagittal planes x[:, :, w] (S × H), each drawn from
N(1_S ⊗ μ, Σ_z ⊗ Σ_y) (D = S·H values, s-major), with Σ_z a strongly correlated z covariance
(unit diagonal). Then

* the **auxiliary** (sagittal) network is the exact ε of the joint prior of a plane:
  ε̂ = sqrt(1 − ᾱ) C⁻¹(v − sqrt(ᾱ) μ_v), C = ᾱ Σ_z⊗Σ_y + (1 − ᾱ) I;
* the **primary** (axial) network is the exact ε of one axial slice's marginal, N(μ, Σ_y) per
  column: on a plane the same formula with Σ_z replaced by I (it knows nothing about z).

The measurement of slice s is m = 2 < H orthonormal-row projections Q_s of each column (times a
gain, so AᵀA has a CT-like magnitude), the same measurement for every column: the W columns are
W independent runs of one sampler call. Both ε̂ are linear in x_t and the data consistency is
affine, so the output is exactly Gaussian with moments that propagate step by step (written
out here independently of the sampler, for its sequence of primary/auxiliary steps). The
output must match those moments, and its mean must approach the joint posterior mean in the
unmeasured directions (the primary prior alone cannot: it ignores the z correlation).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_ddim import ddim_affine_moments

from diffrecon.diffusion.vp import VPSchedule
from diffrecon.physics.operator import LinearOperator
from diffrecon.samplers.admm_tv import to_true_adjoint
from diffrecon.samplers.tpdm import TPDMConfig, TPDMSampler, aux_steps, window_starts

S, H = 4, 4
D = S * H
M = 2
GAIN = 10.0


class _Problem:
    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        zz = np.arange(S)
        self.sig_z = torch.tensor(np.exp(-((zz[:, None] - zz[None]) ** 2) / (2 * 2.0 ** 2)))   # unit diagonal
        hh = np.arange(H)
        self.sig_y = torch.tensor(0.25 * np.exp(-((hh[:, None] - hh[None]) ** 2) / (2 * 1.0 ** 2)) + 0.01 * np.eye(H))
        self.sig = torch.kron(self.sig_z, self.sig_y) + 1e-3 * torch.eye(D, dtype=torch.float64)
        self.sig_axial = torch.kron(torch.eye(S, dtype=torch.float64), self.sig_y) + 1e-3 * torch.eye(D, dtype=torch.float64)
        self.mu_y = 0.2 * torch.randn(H, generator=g, dtype=torch.float64)
        self.mu = self.mu_y.repeat(S)
        # one set of projections per slice (with the same set on every slice and a separable prior
        # the joint posterior mean would equal the per-slice one: z correlation would not matter)
        self.q = torch.stack([torch.linalg.qr(torch.randn(H, M, generator=g, dtype=torch.float64))[0].T
                              for _ in range(S)])                           # (S, M, H)
        self.a_col = torch.block_diag(*(GAIN * self.q))                       # (S·M, D) on a plane
        x = self.mu + torch.linalg.cholesky(self.sig) @ torch.randn(D, generator=g, dtype=torch.float64)
        self.u_true = (x + 1) / 2
        self.y_plane = (self.a_col @ self.u_true).reshape(S, M)
        mu_u, sig_u = (self.mu + 1) / 2, self.sig / 4
        a = self.a_col
        k = sig_u @ a.T @ torch.linalg.inv(a @ sig_u @ a.T)
        self.post_mean = mu_u + k @ (self.a_col @ self.u_true - a @ mu_u)
        self.null = torch.linalg.svd(a, full_matrices=True)[2][S * M:]        # unmeasured directions

    def operator(self) -> LinearOperator:
        qa = GAIN * self.q

        class ColumnOp(LinearOperator):                 # per axial slice: each column h → m values
            def A(self, u):  # noqa: N802
                return torch.einsum("smh,shw->smw", qa, u)

            def A_adjoint(self, r):  # noqa: N802
                return torch.einsum("smh,smw->shw", qa, r)

        return ColumnOp()

    def y(self, w: int) -> torch.Tensor:
        return self.y_plane[:, :, None].expand(S, M, w).clone()

    def _eps(self, abar, sig, mu, x_flat, t):
        a = abar[t].to(x_flat).view(-1, 1, 1)
        cov = a * sig + (1 - a) * torch.eye(sig.shape[0], dtype=x_flat.dtype)
        e = torch.linalg.solve(cov, (x_flat - a.sqrt() * mu).transpose(1, 2)).transpose(1, 2)
        return e * (1 - a).sqrt()

    def axial_eps(self, abar):
        """Exact ε of one axial slice (B, 1, H, W): columns iid N(μ, Σ_y) (+ the small ridge)."""
        sig_y = self.sig_y + 1e-3 * torch.eye(H, dtype=torch.float64)

        def fn(x, t, labels=None):
            cols = x[:, 0].transpose(1, 2)                                   # (B, W, H)
            return self._eps(abar, sig_y, self.mu_y, cols, t).transpose(1, 2)[:, None]
        return fn

    def sagittal_eps(self, abar):
        """Exact ε of a sagittal plane (B, 1, S, H) under the joint prior."""
        def fn(x, t, labels=None):
            flat = x.reshape(x.shape[0], 1, D)
            return self._eps(abar, self.sig, self.mu, flat, t).reshape(x.shape)
        return fn

    def unmeasured_error(self, out: torch.Tensor) -> float:
        """‖mean − posterior mean‖ / ‖prior mean − posterior mean‖ in the unmeasured directions."""
        mean = out.permute(2, 0, 1).reshape(out.shape[2], D).mean(0)
        mu_u = (self.mu + 1) / 2
        return float(torch.linalg.vector_norm(self.null @ (mean - self.post_mean))
                     / torch.linalg.vector_norm(self.null @ (mu_u - self.post_mean)))


def tpdm_moments(prob: _Problem, sched: VPSchedule, n_steps: int, eta: float, use_aux: list[bool], gamma: float):
    """Mean and covariance of one plane (u scale) after DDIM with the ε of Σ (auxiliary steps) or of
    I⊗Σ_y (primary steps) and the proximal data consistency (I + γAᵀA)⁻¹(u + γAᵀy)."""
    eye = torch.eye(D, dtype=torch.float64)
    a_op = prob.a_col
    r = torch.linalg.inv(eye + gamma * a_op.T @ a_op)
    t_mat, k = r, gamma * r @ a_op.T @ (a_op @ prob.u_true)
    return ddim_affine_moments(lambda i: prob.sig if use_aux[i] else prob.sig_axial, prob.mu, t_mat, k, sched, n_steps, eta)


def _run(prob, sched, w, **kw):
    cfg = TPDMConfig(**{"n_steps": 50, "eta": 0.85, "perp_plane": "sagittal", "dc": "proximal", "gamma": GAMMA, "cg_iter": 20,
                        "batch_limit": 100000, "seed": 3, "progress": False, **kw})
    sampler = TPDMSampler(prob.axial_eps(sched.alphas_cumprod), prob.sagittal_eps(sched.alphas_cumprod), sched, cfg)
    return sampler.sample(prob.y(w), prob.operator(), (S, H, w)), sampler


GAMMA = to_true_adjoint({"gamma": 1.0}, n_views=8)["gamma"]      # DDS-2D's γ_o = 1 at 8 views


@pytest.mark.parametrize("alternation", ["random", "periodic"])
def test_tpdm_output_has_the_analytic_distribution(alternation):
    """The sample mean and variances (whitened by the analytic covariance) of W = 3000 runs match
    the step-by-step moments of the sampler's own primary/auxiliary sequence."""
    prob, sched = _Problem(), VPSchedule()
    w = 3000
    out, sampler = _run(prob, sched, w, aux_every=2.7, alternation=alternation)
    use_aux = aux_steps(50, 2.7, alternation, 3)
    assert sampler.aux_used == sum(use_aux) > 5
    mean, cov = tpdm_moments(prob, sched, 50, 0.85, use_aux, GAMMA)
    planes = out.permute(2, 0, 1).reshape(w, D)
    evals, evecs = torch.linalg.eigh(cov)
    keep = evals > 1e-8 * evals.max()
    white = (planes - mean) @ evecs[:, keep] / evals[keep].sqrt()
    z = float((white.mean(0) * math.sqrt(w)).abs().max())
    var = float(white.var(0).mean())
    assert z < 4.5, z
    assert abs(var - 1) < 5 * math.sqrt(2 / (w * int(keep.sum()))) + 0.02, var


def test_tpdm_mean_moves_to_the_joint_posterior_with_the_auxiliary_prior():
    """The mean of the unmeasured components, as a fraction of the prior-to-posterior distance left
    (analytic values of :func:`tpdm_moments`: 0.27 with the auxiliary prior at every step, 0.53 at
    every 2nd, 0.88 with the primary prior alone, which knows no z correlation): the auxiliary
    prior is what moves it to the joint posterior."""
    prob, sched = _Problem(), VPSchedule()
    w = 1500
    errors = {k: prob.unmeasured_error(_run(prob, sched, w, aux_every=k, alternation="periodic")[0]) for k in (1, 2, 0)}
    assert errors[1] < 0.35 and errors[2] < 0.62 and errors[0] > 0.8, errors


def test_aux_steps_and_windows():
    assert aux_steps(6, 3, "periodic", 0) == [False, False, True, False, False, True]
    assert aux_steps(5, 0, "random", 0) == [False] * 5
    frac = np.mean(aux_steps(20000, 2.7, "random", 1))
    assert abs(frac - 1 / 2.7) < 0.02
    assert window_starts(27, 24) == [0, 3] and window_starts(48, 24) == [0, 24] and window_starts(8, 8) == [0]
    with pytest.raises(ValueError, match="needs at least 24 slices"):
        window_starts(20, 24)
    with pytest.raises(ValueError, match="aux_every"):
        aux_steps(5, 0.5, "random", 0)


def test_perp_eps_windows_average_and_planes():
    """A position-reporting 'network' shows where each auxiliary image came from: coronal and
    sagittal planes map back to the right voxels, overlapping windows average."""
    x = torch.randn(27, 6, 5)
    cfg = TPDMConfig(z_window=24, batch_limit=4, progress=False)
    sampler = TPDMSampler(lambda v, t, _l: v, lambda v, t, _l: 2 * v, VPSchedule(), cfg)
    for plane in ("coronal", "sagittal"):
        assert torch.allclose(sampler.perp_eps(x, 10, plane), 2 * x)
    calls = []
    sampler = TPDMSampler(lambda v, t, _l: v, lambda v, t, _l: calls.append(v.shape) or torch.ones_like(v), VPSchedule(), cfg)
    assert torch.allclose(sampler.perp_eps(x, 10, "coronal"), torch.ones_like(x))
    assert all(s[1:] == (1, 24, 5) and s[0] <= 4 for s in calls) and sum(s[0] for s in calls) == 2 * 6


# ------------------------------------------------------------------ DPS data consistency (the original's)
class _SliceMatrixOp(LinearOperator):
    """u (S, H, W) → a_s @ vec(u_s) per slice (S, m): differentiable (autograd reference)."""

    def __init__(self, a):
        self.a = a                                    # (S, m, H·W)

    def A(self, u):  # noqa: N802
        return torch.einsum("smd,sd->sm", self.a, u.reshape(u.shape[0], -1))

    def A_adjoint(self, r):  # noqa: N802
        return torch.einsum("smd,sm->sd", self.a, r).reshape(r.shape[0], *self.shape)


def _nonlinear_eps(seed):
    """A small nonlinear ε-'network' fn(x (B, 1, h, w), t, None), float64, differentiable, t-dependent."""
    g = torch.Generator().manual_seed(seed)
    k1, k2 = 0.3 * torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64), 0.3 * torch.randn(1, 4, 3, 3, generator=g, dtype=torch.float64)

    def fn(x, t, _label):
        h = torch.tanh(torch.nn.functional.conv2d(x, k1, padding=1) * (1 + t[:, None, None, None] / 1000))
        return torch.nn.functional.conv2d(h, k2, padding=1) + 0.5 * x
    return fn


def _dps_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    s, h, w = 7, 4, 5
    op = _SliceMatrixOp(torch.randn(s, 6, h * w, generator=g, dtype=torch.float64))
    op.shape = (h, w)
    y = torch.randn(s, 6, generator=g, dtype=torch.float64)
    x = torch.randn(s, h, w, generator=g, dtype=torch.float64)
    cfg = TPDMConfig(n_steps=2, eta=0.0, z_window=4, batch_limit=3, batch_limit_perp=2, zeta=0.3, progress=False)
    return TPDMSampler(_nonlinear_eps(1), _nonlinear_eps(2), VPSchedule(), cfg), op, y, x


def _eps_reference(sampler, x, t, plane):
    """ε̂ of the whole volume, written plainly (axial slices, or z windows [0, 4) and [3, 7) averaged)."""
    steps = lambda n: torch.full((n,), t, dtype=torch.long)            # noqa: E731
    if plane == "axial":
        return sampler.grad_axial(x[:, None], steps(x.shape[0]), None)[:, 0]
    imgs = x.permute(1, 0, 2) if plane == "coronal" else x.permute(2, 0, 1)
    out = torch.stack([sampler.grad_perp(imgs[:, lo:lo + 4][:, None], steps(imgs.shape[0]), None)[:, 0]
                       for lo in (0, 3)])
    full = torch.zeros_like(imgs)
    full = full + torch.nn.functional.pad(out[0], (0, 0, 0, 3)) + torch.nn.functional.pad(out[1], (0, 0, 3, 0))
    count = torch.tensor([1, 1, 1, 2, 1, 1, 1], dtype=x.dtype)
    full = full / count[None, :, None]
    return full.permute(1, 0, 2) if plane == "coronal" else full.permute(1, 2, 0)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_dps_gradient_is_the_autograd_gradient(plane):
    """∇_x ‖y − A u(x̂_0(x))‖ of the sampler (no graph of the volume; chunked vector–Jacobian products
    through overlapping z windows) equals autograd through the whole chain."""
    sampler, op, y, x = _dps_case()
    t = 600
    a = sampler.schedule.alpha_bar(t)
    eps = sampler.eps(x, t, plane)
    x0, grad, f = sampler.dps_gradient(x, eps, t, plane, y, op)
    xr = x.clone().requires_grad_(True)
    er = _eps_reference(sampler, xr, t, plane)
    fr = torch.linalg.vector_norm(op.A((xr - math.sqrt(1 - a) * er) / math.sqrt(a) / 2 + 0.5) - y)
    fr.backward()
    assert torch.allclose(eps, er.detach(), atol=1e-12)
    assert f == pytest.approx(float(fr.detach()), rel=1e-12)
    assert torch.allclose(grad, xr.grad, rtol=1e-10, atol=1e-12)
    assert float(grad.norm()) > 0.1


def test_dps_sampler_steps_are_ddim_minus_zeta_gradient():
    """Two steps (η = 0), written out: x_{t1} = DDIM(x̂_0, ε̂) − ζ∇f at x_T, then u = (x̂_0(x_{t1}) + 1)/2
    (the auxiliary prior on the first step, coronal); the residual norms recorded per step."""
    from diffrecon.diffusion.vp import ddim_step

    sampler, op, y, _ = _dps_case()
    sampler.cfg.aux_every, sampler.cfg.alternation = 1, "periodic"                 # every step auxiliary
    shape = (7, 4, 5)
    out = sampler.sample(y, op, shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sampler.cfg.seed), dtype=torch.float64)
    t0, t1 = sampler.schedule.timesteps(2)
    fs = []
    for t, nxt in ((t0, t1), (t1, None)):
        xr = x.clone().requires_grad_(True)
        a = sampler.schedule.alpha_bar(t)
        er = _eps_reference(sampler, xr, t, "coronal")
        x0 = (xr - math.sqrt(1 - a) * er) / math.sqrt(a)
        f = torch.linalg.vector_norm(op.A((x0 + 1) / 2) - y)
        fs.append(float(f.detach()))
        if nxt is None:
            ref = ((x0 + 1) / 2).detach()
            break
        f.backward()
        x = ddim_step(x0.detach(), er.detach(), sampler.schedule.alpha_bar(nxt), 0.0) - 0.3 * xr.grad
    assert torch.allclose(out, ref, rtol=1e-9, atol=1e-11)
    assert sampler.residuals == pytest.approx(fs, rel=1e-9) and sampler.aux_used == 2
