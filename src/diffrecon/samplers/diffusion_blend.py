"""DiffusionBlend (Algorithm 1) and the DDS baselines: DDIM with Tweedie + CG/ADMM data consistency.

Per reverse step t → t' (times from :meth:`VPSchedule.timesteps`):

1. ε̂ for the whole volume x_t (S, H, W) in [−1, 1]:
   * ``patch`` prior (DiffusionBlend / ++): a partition of the slices into 3-slice patches
     (:mod:`diffrecon.samplers.blend`), every patch through the network in batches;
   * ``slice`` prior (DDS, DDS-2D): every slice on its own, in batches.
2. Tweedie x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t).
3. Data consistency on u = (x̂_0 + 1)/2 in the [0, 1] scale of the measurements, warm-started
   at u (:func:`~diffrecon.samplers.admm_tv.data_consistency`), x̂_0' = 2u − 1; ``dc``:

   * ``admm`` (DiffusionBlend, DDS): one ADMM z-TV iteration with ``cg_iter`` CG iterations
     (:class:`~diffrecon.samplers.admm_tv.ADMMTV`, duals carried; ``rho = 0``: CG only);
   * ``proximal`` (DDS-2D as its evaluation script runs it): CG on
     (I + γ AᵀA) u = u⁰ + γ Aᵀy (:class:`~diffrecon.samplers.admm_tv.ProximalCG`);
   * ``cg``: CG on AᵀA u = Aᵀy (DDS-2D's noise-free branch).

   ρ, λ, γ are in the units of the true adjoint Aᵀ (the runner converts the originals' values,
   docs/ct_scaling.md).
4. DDIM update x_{t'} = sqrt(ᾱ_{t'}) x̂_0' + sqrt(1 − ᾱ_{t'}) (η ξ + sqrt(1 − η²) ε̂), except
   at the last step (t' = −1, ᾱ = 1), which returns the data-consistent estimate u itself, as
   the originals do (x = x̂_0', no noise drawn).

Starts from x_T ~ N(0, I) (not from a noised ground truth, which one of the original scripts
does) and always applies the data consistency (which that script discards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from diffrecon.diffusion.vp import VPSchedule, ddim_step, tweedie
from diffrecon.options import Options
from diffrecon.physics.operator import LinearOperator
from diffrecon.samplers.admm_tv import DC_KINDS, data_consistency
from diffrecon.samplers.blend import blended_eps, choose_partition
from diffrecon.samplers.pc import timed_call

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class BlendConfig(Options):
    n_steps: int = 200
    eta: float = 0.85
    prior: str = "patch"          # patch (DiffusionBlend) | slice (DDS)
    jump_every: int = 2           # patch prior: jump partition every m-th step (0: adjacent only)
    jump: int = 3                 # spacing k of the jump patches (and their label)
    dc: str = "admm"              # data consistency: admm | cg | proximal (admm_tv.DC_KINDS)
    rho: float = 1e-3             # ADMM penalty (0: CG only, no z-TV), units of the true adjoint
    lam: float = 5e-5             # z-TV weight, units of the true adjoint
    gamma: float = 1.0            # proximal weight (dc = proximal), units of the true adjoint
    cg_iter: int = 5
    batch_limit: int = 64         # patches (or slices) per network call
    seed: int = 0
    progress: bool = True


class DiffusionBlendSampler:
    """Reconstruct one volume; ``eps_fn(x (B, C, H, W), t (B,), labels (B,) | None)`` is the network
    (a :class:`~diffrecon.models.networks.NoiseNetwork` through :func:`~diffrecon.models.inference.network_fn`)."""

    def __init__(self, eps_fn: EpsFn, schedule: VPSchedule, cfg: BlendConfig):
        if cfg.prior not in ("patch", "slice"):
            raise ValueError(f"prior '{cfg.prior}' is not one of patch, slice")
        if cfg.dc not in DC_KINDS:
            raise ValueError(f"dc '{cfg.dc}' is not one of {', '.join(DC_KINDS)}")
        self.eps_fn = eps_fn
        self.schedule = schedule
        self.cfg = cfg
        self.nfe = 0                  # full-volume ε evaluations (the papers' NFE)
        self.network_calls = 0
        self.network_seconds = 0.0

    def _timed(self, x, t, labels):
        self.network_calls += 1
        return timed_call(self, self.eps_fn, x, t, labels)

    def volume_eps(self, x: torch.Tensor, t: int, step: int, rng: np.random.Generator) -> torch.Tensor:
        """ε̂ (S, H, W) of the volume x (S, H, W) at time t (reverse step index ``step``)."""
        self.nfe += 1
        cfg = self.cfg
        if cfg.prior == "patch":
            patches = choose_partition(step, x.shape[0], rng, cfg.jump_every, cfg.jump)
            return blended_eps(x, t, patches, self._timed, cfg.batch_limit)
        out = torch.empty_like(x)
        for lo in range(0, x.shape[0], cfg.batch_limit):
            chunk = x[lo:lo + cfg.batch_limit, None]
            steps = torch.full((chunk.shape[0],), t, device=x.device, dtype=torch.long)
            out[lo:lo + cfg.batch_limit] = self._timed(chunk, steps, None)[:, 0]
        return out

    @torch.inference_mode()
    def sample(self, y: torch.Tensor, op: LinearOperator, shape: tuple[int, int, int]) -> torch.Tensor:
        """u (S, H, W) in the [0, 1] scale from measurements ``y`` = A u (``op``: the forward model
        on volumes (S, H, W), e.g. :class:`~diffrecon.physics.ct.ParallelBeamCT`)."""
        cfg = self.cfg
        gen = torch.Generator(device=y.device).manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        x = torch.randn(shape, generator=gen, dtype=y.dtype, device=y.device)
        dc = data_consistency(op, y, cfg.dc, rho=cfg.rho, lam=cfg.lam, gamma=cfg.gamma, cg_iter=cfg.cg_iter)
        times = self.schedule.timesteps(cfg.n_steps)
        u = None
        for i, t in enumerate(tqdm(times, desc=f"ddim-{cfg.prior}", disable=not cfg.progress, leave=False)):
            a = self.schedule.alpha_bar(t)
            eps = self.volume_eps(x, t, i, rng)
            x0 = tweedie(x, eps, a)
            u = dc((x0 + 1) / 2)
            if i + 1 < len(times):
                x = ddim_step(2 * u - 1, eps, self.schedule.alpha_bar(times[i + 1]), cfg.eta, gen)
        return u                  # the last step: x = x̂_0' (ᾱ_{−1} = 1), the data-consistent estimate
