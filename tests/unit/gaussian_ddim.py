"""Exact moments of DDIM sampling of a Gaussian prior with an affine data-consistency step, the
reference of the CT samplers' Gaussian tests (DDS / DiffusionBlend and TPDM)."""

from __future__ import annotations

import math

import torch


def ddim_affine_moments(sig_at, mu: torch.Tensor, t_mat: torch.Tensor, k: torch.Tensor, sched, n_steps: int,
                        eta: float):
    """Mean and covariance (u scale) of DDIM with exact Gaussian ε and the data consistency
    u' = T u + k, written out step by step: x_T ~ N(0, I); at step i the prior covariance is
    ``sig_at(i)``: ε̂ = B x − B sqrt(ᾱ) μ with B = sqrt(1 − ᾱ) C⁻¹, C = ᾱΣ + (1 − ᾱ)I;
    x̂0 = G x + h; u' = T (x̂0 + 1)/2 + k; x' = sqrt(ᾱ') (2u' − 1) + sqrt(1 − ᾱ') (η ξ + sqrt(1 − η²) ε̂)
    (DDS's η), and the last step returns u' (ᾱ' = 1, no noise)."""
    d = mu.shape[0]
    eye = torch.eye(d, dtype=torch.float64)
    mean, cov = torch.zeros(d, dtype=torch.float64), eye.clone()
    times = sched.timesteps(n_steps)
    for i, t in enumerate(times):
        a = sched.alpha_bar(t)
        b = math.sqrt(1 - a) * torch.linalg.inv(a * sig_at(i) + (1 - a) * eye)
        g = (eye - math.sqrt(1 - a) * b) / math.sqrt(a)
        h = math.sqrt(1 - a) * b @ mu
        uf, uc = t_mat @ g / 2, t_mat @ (h + 1) / 2 + k
        if i + 1 == len(times):
            return uf @ mean + uc, uf @ cov @ uf.T
        a1 = sched.alpha_bar(times[i + 1])
        c_eps = math.sqrt(1 - a1) * math.sqrt(1 - eta ** 2)
        f = math.sqrt(a1) * 2 * uf + c_eps * b
        f0 = math.sqrt(a1) * (2 * uc - 1) - c_eps * math.sqrt(a) * b @ mu
        mean, cov = f @ mean + f0, f @ cov @ f.T + (1 - a1) * eta ** 2 * eye
    raise AssertionError("unreachable")
