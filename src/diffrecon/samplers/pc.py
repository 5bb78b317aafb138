"""Predictor and corrector steps of VE-SDE sampling (shared by score-MRI and DiffusionMBIR).

``score(x, sigma)`` evaluates s_θ(x, σ) for a real batch x (B, C, H, W) at one noise level σ.

* reverse diffusion (predictor), σ → σ':  x ← x + (σ² − σ'²) s_θ(x, σ) + sqrt(σ² − σ'²) z
* Langevin (corrector), signal-to-noise ratio r:  ε = 2 (r ‖z‖ / ‖s_θ(x, σ)‖)²,
  x ← x + ε s_θ(x, σ) + sqrt(2ε) z. A *sample* is a group of ``group`` consecutive batch
  images (2: the real and imaginary parts of one complex image share one step) and ‖·‖ its
  norm. With ``batch = 1`` (the default, score-MRI) every sample has its own step; with
  ``batch = B`` consecutive runs of B samples share one step from the means over the run,
  ε = 2 (r · mean_b ‖z_b‖ / mean_b ‖s_b‖)², as score_sde's corrector does for one network
  batch (DiffusionMBIR: 12 slices per batch; a last, shorter run uses its own means).

With ``with_mean=True`` both return ``(x, x_mean)``, x_mean being the update without its added
noise (of the last Langevin step), as score_sde's predictors and correctors do.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from diffrecon.samplers.noise import randn

Score = Callable[[torch.Tensor, float], torch.Tensor]


def reverse_diffusion(score: Score, x: torch.Tensor, sigma: float, sigma_next: float,
                      gen: torch.Generator, with_mean: bool = False):
    g2 = sigma ** 2 - sigma_next ** 2
    z = randn(x.shape, gen, x.dtype, x.device)
    mean = x + g2 * score(x, sigma)
    out = mean + math.sqrt(g2) * z
    return (out, mean) if with_mean else out


def _run_means(v: torch.Tensor, batch: int) -> torch.Tensor:
    """Each entry of v (n,) replaced by the mean of its run of ``batch`` consecutive entries."""
    if batch <= 1:
        return v
    runs = torch.arange(v.shape[0], device=v.device) // batch
    sums = torch.zeros(int(runs[-1]) + 1, dtype=v.dtype, device=v.device).index_add_(0, runs, v)
    counts = torch.bincount(runs).to(v.dtype)
    return (sums / counts)[runs]


def langevin(score: Score, x: torch.Tensor, sigma: float, snr: float, gen: torch.Generator,
             n_steps: int = 1, group: int = 1, batch: int = 1, with_mean: bool = False):
    mean = x
    for _ in range(n_steps):
        s = score(x, sigma)
        z = randn(x.shape, gen, x.dtype, x.device)
        s_norm = _run_means(s.reshape(-1, group * s[0].numel()).norm(dim=1), batch).clamp_min(1e-12)
        z_norm = _run_means(z.reshape(-1, group * z[0].numel()).norm(dim=1), batch)
        eps = (2 * (snr * z_norm / s_norm) ** 2).repeat_interleave(group).view(-1, *([1] * (x.dim() - 1)))
        mean = x + eps * s
        x = mean + torch.sqrt(2 * eps) * z
    return (x, mean) if with_mean else x


def timed_call(owner, fn: Callable, *args) -> torch.Tensor:
    """``fn(*args)``, adding its wall time (CUDA synchronised) to ``owner.network_seconds``."""
    t0 = time.perf_counter()
    out = fn(*args)
    if out.is_cuda:
        torch.cuda.synchronize(out.device)
    owner.network_seconds += time.perf_counter() - t0
    return out
