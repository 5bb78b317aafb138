"""DiffPIR: denoising diffusion models for plug-and-play image restoration (Zhu, Zhang, Liang,
Cao, Wen, Timofte & Van Gool, CVPR-W 2023).

Per grid step k (N steps, noise decreasing; x in the network's scale, (S·P, 1, H, W), see
:mod:`~diffrecon.samplers.data_terms`):

1. x̂0 = x̂0(x_k) from the network (Tweedie, :mod:`~diffrecon.samplers.denoisers`; no gradient);
2. data step on the image u of x̂0, in the data's scale:
       û0 = argmin_u ‖y − A u‖² + ρ_k ‖u − u(x̂0)‖²,   ρ_k = λ σ_n² / σ̄_k²,
   i.e. (AᴴA + ρ_k I) û0 = Aᴴy + ρ_k u(x̂0), ``cg_iter`` CG iterations per slice
   (:meth:`~diffrecon.samplers.data_terms.LinearData.prox`). σ̄_k is the noise level of the
   prior's input in VE form (VP: sqrt((1 − ᾱ_t)/ᾱ_t); VE: σ_k), σ_n the measurement noise std
   in the data's units (noise-free data: a small floor, as the original);
3. re-noising to level k+1 with the effective noise ε̂ = (x_k − x̂0')/σ̄_k (VE form) mixed with
   fresh noise z: x_{k+1} = x̂0' + σ̄_{k+1} (sqrt(1 − ζ) ε̂ + sqrt(ζ) z) (VP: the same scaled
   by sqrt(ᾱ_{t'}), see :meth:`VPDenoiser.renoise`). ζ = 0 is deterministic (DDIM on x̂0'),
   ζ = 1 draws fresh noise only.

The last step returns the data-consistent û0 (the data step is applied at every step,
including the last). The convention of ρ is the original code's: (AᴴA + ρ I), with σ̄ in the
network's scale (deepinv's ``DiffPIR`` uses the proximal weight 1/(2ρ), i.e. its λ is half of
this one; checked in tests/unit/test_solvers_gaussian.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffrecon.options import Options
from diffrecon.samplers.data_terms import LinearData
from diffrecon.samplers.denoisers import run_chain

__all__ = ["DiffPIRConfig", "DiffPIRSampler"]


@dataclass
class DiffPIRConfig(Options):
    n_steps: int = 100
    lam: float = 7.0                # λ of ρ_k = λ σ_n² / σ̄_k²
    zeta: float = 0.3               # ζ: share of fresh noise in the re-noising, in [0, 1]
    sigma_n: float = 0.001          # measurement noise std in the data's units (floor for noise-free data)
    cg_iter: int = 5                # CG iterations of the data step per network step
    batch_limit: int = 64           # images per network call
    seed: int = 0
    progress: bool = True


class DiffPIRSampler:
    """``sample(data, shape, gen)``; ``denoiser`` a :class:`~diffrecon.samplers.denoisers.VPDenoiser`
    or :class:`~diffrecon.samplers.denoisers.VEDenoiser`; ``clip`` (lo, hi) clamps x̂0 before the
    data step (the VP prior's [−1, 1], as the original), None: no clamp."""

    def __init__(self, denoiser, cfg: DiffPIRConfig, clip: tuple[float, float] | None = None):
        if not 0.0 <= cfg.zeta <= 1.0:
            raise ValueError(f"zeta must be in [0, 1], got {cfg.zeta}")
        if cfg.lam < 0 or cfg.sigma_n < 0:
            raise ValueError(f"lam and sigma_n must be >= 0, got {cfg.lam}, {cfg.sigma_n}")
        self.denoiser, self.cfg, self.clip = denoiser, cfg, clip
        self.nfe = 0

    @property
    def network_seconds(self) -> float:
        return self.denoiser.network_seconds

    def rho(self, k: int) -> float:
        """ρ_k = λ σ_n² / σ̄_k²."""
        return self.cfg.lam * self.cfg.sigma_n ** 2 / self.denoiser.sigma_bar(k) ** 2

    @torch.no_grad()
    def x0(self, x: torch.Tensor, k: int) -> torch.Tensor:
        self.nfe += 1
        per = self.cfg.batch_limit
        out = torch.cat([self.denoiser.x0(x[lo:lo + per], k) for lo in range(0, x.shape[0], per)])
        return out if self.clip is None else out.clamp(*self.clip)

    @torch.no_grad()
    def step(self, x: torch.Tensor, k: int, data: LinearData, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One DiffPIR step from x_k with noise z: (x_{k+1}, û0); the last step returns û0 twice."""
        x0 = data.prox(self.x0(x, k), self.rho(k))
        return self.denoiser.renoise(x, x0, k, z, self.cfg.zeta), x0

    def sample(self, data: LinearData, shape: tuple[int, ...], gen) -> torch.Tensor:
        """A posterior sample (network scale, ``shape`` = (S·P, 1, H, W)); ``gen`` a torch.Generator
        or a :class:`~diffrecon.samplers.noise.SliceNoise` of the S slices."""
        return run_chain(self.step, self.denoiser, data, shape, gen, "diffpir", self.cfg.progress,
                         fresh_noise=self.cfg.zeta > 0)
