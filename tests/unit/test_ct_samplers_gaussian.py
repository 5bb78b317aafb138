"""The CT samplers on correlated Gaussian priors, where what they must produce is analytic.

With an isotropic prior the posterior of the unmeasured components is the prior itself, so a
sampler that ignores the data until the end, or injects the wrong amount of noise, still passes
a posterior-mean test. Here the prior of every slice is N(μ, Σ) with a smooth, strongly
correlated Σ (16 pixels), the measurement of a slice is m = 6 < 16 orthonormal-row projections
(times a gain α, so AᵀA has the magnitude of a CT Gram), and every slice is one independent run
(same measurement, slices iid): a volume of S slices is S samples from one sampler call.

* VP / DDIM (DDS, DDS-2D, DiffusionBlend): the exact ε of the prior at every noise level is
  linear in x_t, and a converged CG data consistency (``cg``: the projection onto A u = y,
  one CG iteration; ``proximal``: two) is affine, so the sampler's output is exactly Gaussian
  with moments that propagate step by step — computed here independently of the sampler and
  compared with the sample statistics. With ADMM z-TV (ρ > 0) the sampler must pull the
  unmeasured components from the prior to the posterior mean.
* VE / predictor-corrector (DiffusionMBIR): the exact score is −(C_σ)⁻¹(x − μ); with the
  corrector at the original's step size the samples reach the posterior (mean and variance of
  the unmeasured components).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gaussian_ddim import ddim_affine_moments

from diffrecon.diffusion.sde import VESDE
from diffrecon.diffusion.vp import VPSchedule
from diffrecon.physics.operator import LinearOperator
from diffrecon.samplers.admm_tv import to_true_adjoint
from diffrecon.samplers.diffusion_blend import BlendConfig, DiffusionBlendSampler
from diffrecon.samplers.diffusion_mbir import DiffusionMBIRSampler, MBIRConfig

H = W = 4
D = H * W
N_MEAS = 6
GAIN = 10.0                      # AᵀA = GAIN² · (projection): CT-like magnitude (views × pixels)


class _Problem:
    """Prior N(mu, sig) per slice in [−1, 1] units (u = (x + 1)/2 on the data's [0, 1] scale),
    measurement y = GAIN · Q u of one drawn slice, the posterior of u given y."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        yy, xx = np.mgrid[:H, :W]
        p = np.stack([yy.ravel(), xx.ravel()], 1)
        d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
        self.sig = torch.tensor(0.25 * np.exp(-d2 / (2 * 1.5 ** 2)) + 0.01 * np.eye(D))
        self.mu = 0.2 * torch.randn(D, generator=g, dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(D, N_MEAS, generator=g, dtype=torch.float64))
        self.q = q.T                                                   # (m, D), orthonormal rows
        self.null = torch.linalg.svd(self.q, full_matrices=True)[2][N_MEAS:]   # unmeasured directions
        x = self.mu + torch.linalg.cholesky(self.sig) @ torch.randn(D, generator=g, dtype=torch.float64)
        self.u_true = (x + 1) / 2
        self.y1 = GAIN * self.q @ self.u_true
        self.mu_u, self.sig_u = (self.mu + 1) / 2, self.sig / 4
        a = GAIN * self.q
        k = self.sig_u @ a.T @ torch.linalg.inv(a @ self.sig_u @ a.T)
        self.post_mean = self.mu_u + k @ (self.y1 - a @ self.mu_u)
        self.post_cov = self.sig_u - k @ a @ self.sig_u

    def operator(self) -> LinearOperator:
        a = GAIN * self.q

        class SliceOp(LinearOperator):
            def A(self, u):  # noqa: N802
                return torch.einsum("md,sd->sm", a, u.reshape(u.shape[0], -1))

            def A_adjoint(self, r):  # noqa: N802
                return torch.einsum("md,sm->sd", a, r).reshape(-1, H, W)

        return SliceOp()

    def y(self, n_slices: int) -> torch.Tensor:
        return self.y1.expand(n_slices, N_MEAS).clone()

    def vp_eps(self, abar: torch.Tensor):
        """Exact E[ε | x_t] of the VP prior, for inputs (B, C, H, W) (any C: slices are iid)."""
        def eps_fn(x, t, labels=None):
            a = abar[t].to(x).view(-1, 1, 1)
            xs = x.reshape(x.shape[0], -1, D)
            cov = a * self.sig + (1 - a) * torch.eye(D, dtype=x.dtype)              # (B, D, D)
            e = torch.linalg.solve(cov, (xs - a.sqrt() * self.mu).transpose(1, 2)).transpose(1, 2)
            return (e * (1 - a).sqrt()).reshape(x.shape)
        return eps_fn

    def ve_score(self, x, sigma):
        """Exact score of the VE prior u + σ z (u ~ N(mu_u, sig_u)), inputs (B, 1, H, W)."""
        cov = self.sig_u + float(sigma[0]) ** 2 * torch.eye(D, dtype=x.dtype)
        return -torch.linalg.solve(cov, (x.reshape(x.shape[0], D) - self.mu_u).T).T.reshape(x.shape)

    def unmeasured_error(self, samples: torch.Tensor) -> float:
        """‖mean − posterior mean‖ / ‖prior mean − posterior mean‖ in the unmeasured directions."""
        mean = samples.reshape(samples.shape[0], D).mean(0)
        return float(torch.linalg.vector_norm(self.null @ (mean - self.post_mean))
                     / torch.linalg.vector_norm(self.null @ (self.mu_u - self.post_mean)))

    def unmeasured_variance_ratio(self, samples: torch.Tensor) -> float:
        """Mean over the unmeasured directions of sample variance / posterior variance."""
        cov = torch.cov(samples.reshape(samples.shape[0], D).T)
        n = self.null
        return float(((n @ cov @ n.T).diag() / (n @ self.post_cov @ n.T).diag()).mean())


def ddim_moments(prob: _Problem, sched: VPSchedule, n_steps: int, eta: float, dc: str, gamma: float = 1.0):
    """Mean and covariance (per slice, u scale) of DDIM + converged data consistency, written out
    step by step: x_T ~ N(0, I); ε̂ = sqrt(1 − ᾱ) C⁻¹(x − sqrt(ᾱ) μ), C = ᾱΣ + (1 − ᾱ)I;
    x̂0 = (x − sqrt(1 − ᾱ) ε̂)/sqrt(ᾱ); u' = T (x̂0 + 1)/2 + k (the data consistency);
    x' = sqrt(ᾱ') (2u' − 1) + sqrt(1 − ᾱ') (η ξ + sqrt(1 − η²) ε̂) (DDS's η), and the last step
    returns u' (ᾱ' = 1, no noise)."""
    eye = torch.eye(D, dtype=torch.float64)
    a_op = GAIN * prob.q
    if dc == "cg":                        # projection onto A u = y
        pinv = torch.linalg.pinv(a_op)
        t_mat, k = eye - pinv @ a_op, pinv @ prob.y1
    else:                                 # (I + γAᵀA)⁻¹ (u + γAᵀy)
        r = torch.linalg.inv(eye + gamma * a_op.T @ a_op)
        t_mat, k = r, gamma * r @ a_op.T @ prob.y1
    return ddim_affine_moments(lambda i: prob.sig, prob.mu, t_mat, k, sched, n_steps, eta)


def _moment_errors(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """(largest |z| of the sample mean, mean of the whitened sample variances) over the
    non-degenerate directions of N(mean, cov), for samples (S, ...)."""
    s = samples.reshape(samples.shape[0], D)
    n = s.shape[0]
    evals, evecs = torch.linalg.eigh(cov)
    keep = evals > 1e-10 * evals.max()                  # the measured directions are deterministic
    white = (s - mean) @ evecs[:, keep] / evals[keep].sqrt()
    z = float((white.mean(0) * math.sqrt(n)).abs().max())
    var = float(white.var(0).mean())
    return z, var


@pytest.mark.parametrize("prior, dc", [("slice", "cg"), ("slice", "proximal"), ("patch", "cg")])
def test_ddim_output_has_the_analytic_distribution(prior, dc):
    """η = 0.85, 5 CG iterations, DDS's 50 steps: the sample mean and the variances (whitened by
    the analytic covariance) match the step-by-step moments; the measured part is exact."""
    prob, sched = _Problem(), VPSchedule()
    s = 4002                                          # runs (slices)
    params = to_true_adjoint({"gamma": 1.0}, n_views=8)          # DDS-2D's γ = 1, 8 views
    cfg = BlendConfig(n_steps=50, eta=0.85, prior=prior, dc=dc, rho=0.0, lam=0.0, gamma=params["gamma"],
                      cg_iter=5, jump_every=2, batch_limit=100000, seed=3, progress=False)
    out = DiffusionBlendSampler(prob.vp_eps(sched.alphas_cumprod), sched, cfg).sample(
        prob.y(s), prob.operator(), (s, H, W))
    mean, cov = ddim_moments(prob, sched, 50, 0.85, dc, params["gamma"])
    z, var = _moment_errors(out, mean, cov)
    n_free = int((torch.linalg.eigvalsh(cov) > 1e-10 * torch.linalg.eigvalsh(cov).max()).sum())
    assert z < 4.5, z
    assert abs(var - 1) < 5 * math.sqrt(2 / (s * n_free)) + 0.01, var
    if dc == "cg":
        assert torch.allclose(prob.operator().A(out), prob.y(s), atol=1e-8)   # the last step is the projection


def test_ddim_admm_ztv_moves_the_unmeasured_part_to_the_posterior():
    """DiffusionBlend's settings (ρ 1e-3, λ 5e-5 in the originals' units at 8 views, 5 CG
    iterations, η 0.85): the mean of the unmeasured components is the posterior's, not the
    prior's (a sampler applying the data only at the last step keeps the prior's)."""
    prob, sched = _Problem(), VPSchedule()
    s = 600
    p = to_true_adjoint({"rho": 1e-3, "lam": 5e-5}, n_views=8)
    cfg = BlendConfig(n_steps=50, eta=0.85, prior="slice", rho=p["rho"], lam=p["lam"], cg_iter=5,
                      batch_limit=100000, seed=4, progress=False)
    out = DiffusionBlendSampler(prob.vp_eps(sched.alphas_cumprod), sched, cfg).sample(
        prob.y(s), prob.operator(), (s, H, W))
    assert prob.unmeasured_error(out) < 0.25
    assert float((prob.operator().A(out) - prob.y(s)).abs().max()) < 1e-3 * float(prob.y1.abs().max())


def test_diffusion_blend_pp_starts_with_a_jump_step():
    """The first network call of DiffusionBlend++ sees jump-3 patches (label 3), then adjacent."""
    prob, sched = _Problem(), VPSchedule()
    labels = []
    eps = prob.vp_eps(sched.alphas_cumprod)

    def recording(x, t, lab):
        labels.append(sorted(set(lab.tolist())))
        return eps(x, t, lab)

    cfg = BlendConfig(n_steps=4, prior="patch", jump_every=2, jump=3, batch_limit=1000, seed=0, progress=False)
    DiffusionBlendSampler(recording, sched, cfg).sample(prob.y(9), prob.operator(), (9, H, W))
    assert labels == [[3], [1], [3], [1]]


@pytest.mark.parametrize("rho, lam", [(0.0, 0.0), (10.0, 0.04)])
def test_diffusion_mbir_reaches_the_correlated_posterior(rho, lam):
    """DiffusionMBIR at its settings (snr 0.16, one corrector step sharing its step size over 12
    slices, one CG iteration; ρ 10, λ 0.04 in the originals' units at 8 views) on the exact
    VE score: the unmeasured components' mean is the posterior's, and without z-TV (which
    couples the runs) so is their variance."""
    prob = _Problem()
    s = 600
    p = to_true_adjoint({"rho": rho, "lam": lam}, n_views=8)
    cfg = MBIRConfig(n_steps=1000, snr=0.16, rho=p["rho"], lam=p["lam"], cg_iter=1, langevin_batch=12,
                     final_kaczmarz=False, seed=1, progress=False)
    out = DiffusionMBIRSampler(prob.ve_score, VESDE(0.01, 5.0), cfg).sample(prob.y(s), prob.operator(), (s, H, W))
    assert prob.unmeasured_error(out) < 0.07
    if rho == 0:
        assert abs(prob.unmeasured_variance_ratio(out) - 1) < 0.1
