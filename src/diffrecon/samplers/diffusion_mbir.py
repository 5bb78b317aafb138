"""DiffusionMBIR baseline: a VE-SDE slice prior with predictor-corrector sampling, and one ADMM
z-TV iteration (a single CG iteration by default) after every step, over the whole volume.

Per step i (σ_i → σ_{i+1}, the geometric table of :class:`~diffrecon.diffusion.sde.VESDE`):
all slices of x (S, H, W) take one reverse-diffusion predictor step and one Langevin corrector
step (:mod:`diffrecon.samplers.pc`) as one network batch (the score function chunks it, ``batch_limit``), then
x ← ADMM-TV_z(x) (:class:`~diffrecon.samplers.admm_tv.ADMMTV`, duals carried; the originals'
λ = 0.04, ρ = 10 in their back-projector's units, converted to the true adjoint's by the runner,
docs/ct_scaling.md). The corrector's step size is shared by each run of ``langevin_batch``
consecutive slices (the original's network batch of 12: one step from the batch means of the
score and noise norms); ``langevin_batch = 1``: one step per slice.
The run ends with one Kaczmarz-type step x ← x + Aᵀ(y − A x) ⊘ (AᵀA 1), as the original.
The VE prior works on the [0, 1] scale directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from diffrecon.options import Options
from diffrecon.physics.operator import LinearOperator
from diffrecon.samplers.admm_tv import ADMMTV
from diffrecon.samplers.pc import langevin, reverse_diffusion, timed_call


@dataclass
class MBIRConfig(Options):
    n_steps: int = 2000
    snr: float = 0.16
    n_corrector: int = 1
    rho: float = 10.0
    lam: float = 0.04
    cg_iter: int = 1
    langevin_batch: int = 12      # slices sharing one corrector step size (1: per slice)
    final_kaczmarz: bool = True
    seed: int = 0
    progress: bool = True


class DiffusionMBIRSampler:
    """``score_fn(x (B, 1, H, W), sigma (B,))`` is the VE score network."""

    def __init__(self, score_fn: Callable, sde, cfg: MBIRConfig):
        self.score_fn = score_fn
        self.sde = sde
        if cfg.langevin_batch < 1:
            raise ValueError(f"langevin_batch must be >= 1, got {cfg.langevin_batch}")
        self.cfg = cfg
        self.nfe = 0
        self.network_seconds = 0.0

    def _score(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1       # chunking into network batches is the score function's job
        return timed_call(self, self.score_fn, x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device))

    @torch.inference_mode()
    def sample(self, y: torch.Tensor, op: LinearOperator, shape: tuple[int, int, int]) -> torch.Tensor:
        """x (S, H, W) from measurements ``y`` = A x (``op``: the forward model on volumes (S, H, W))."""
        cfg = self.cfg
        gen = torch.Generator(device=y.device).manual_seed(cfg.seed)
        sig = [float(s) for s in self.sde.sigma(self.sde.time_grid(cfg.n_steps))] + [0.0]
        x = sig[0] * torch.randn(shape, generator=gen, dtype=y.dtype, device=y.device)
        admm = ADMMTV(op, y, rho=cfg.rho, lam=cfg.lam, cg_iter=cfg.cg_iter)
        for i in tqdm(range(cfg.n_steps), desc="diffusion-mbir", disable=not cfg.progress, leave=False):
            xb = reverse_diffusion(self._score, x[:, None], sig[i], sig[i + 1], gen)
            xb = langevin(self._score, xb, sig[i], cfg.snr, gen, cfg.n_corrector, batch=cfg.langevin_batch)
            x = admm(xb[:, 0])
        if cfg.final_kaczmarz:
            weight = op.A_adjoint(op.A(torch.ones_like(x)))
            x = x + op.A_adjoint(y - op.A(x)) / weight.clamp_min(1e-6 * float(weight.max()))
        return x
