"""Diffusion posterior sampling (DPS; Chung, Kim, Mccann, Klasky & Ye, ICLR 2023).

Per grid step k (N steps, noise decreasing; x in the network's scale, (S·P, 1, H, W), see
:mod:`~diffrecon.samplers.data_terms`):

1. x̂0 = x̂0(x_k) from the network (Tweedie, :mod:`~diffrecon.samplers.denoisers`), with the
   graph kept;
2. x'_{k+1} = the ancestral (DDPM posterior) draw from q(x_{k+1} | x_k, x̂0), z ~ N(0, I)
   (the last step gives x̂0);
3. x_{k+1} = x'_{k+1} − ζ ∇_{x_k} Σ_s ‖y_s − A u_s(x̂0(x_k))‖ — the gradient of the residual
   *norm* (not its square: the paper's ζ_i = ζ / ‖y − A x̂0‖ on ½ of the squared norm's
   gradient), taken through the network.

The gradient is computed as a vector–Jacobian product: ∇_{x̂0} f is formed with the operator's
adjoint (:meth:`LinearData.norm_grad`), then pulled back through the network by autograd, so the
operator itself need not be differentiable (the same number as autograd through both; tested).
The network runs in chunks of at most ``batch_limit`` images, whole slices each (a slice's
residual needs all its parts); each chunk is one forward and one backward pass, so the memory
budget (:mod:`~diffrecon.samplers.memory`) is measured with a backward pass.

VP prior (DDPM): this is the paper's Algorithm 1 (with a strided grid, DDPM's posterior for
the stride). VE prior: the same step in VE coordinates (score-SDE's ancestral sampling), the
gradient taken with respect to the VE state x_k.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffrecon.options import Options
from diffrecon.samplers.data_terms import LinearData
from diffrecon.samplers.denoisers import run_chain

__all__ = ["DPSConfig", "DPSSampler"]


@dataclass
class DPSConfig(Options):
    n_steps: int = 1000
    zeta: float = 1.0               # step size ζ of the residual-norm gradient
    batch_limit: int = 64           # images per network call (forward + backward)
    seed: int = 0
    progress: bool = True


class DPSSampler:
    """``sample(data, shape, gen)``; ``denoiser`` a :class:`~diffrecon.samplers.denoisers.VPDenoiser`
    or :class:`~diffrecon.samplers.denoisers.VEDenoiser` over a differentiable network function
    (:func:`~diffrecon.samplers.denoisers.grad_network_fn`); ``clip`` (lo, hi) clamps x̂0 (the VP
    prior's [−1, 1], as the original), None: no clamp."""

    def __init__(self, denoiser, cfg: DPSConfig, clip: tuple[float, float] | None = None):
        if cfg.batch_limit < 1:
            raise ValueError(f"batch_limit must be >= 1, got {cfg.batch_limit}")
        self.denoiser, self.cfg, self.clip = denoiser, cfg, clip
        self.nfe = 0
        self.residuals: list[float] = []       # Σ_s ‖y_s − A u_s(x̂0)‖ per step

    @property
    def network_seconds(self) -> float:
        return self.denoiser.network_seconds

    def guided_x0(self, x: torch.Tensor, k: int, data: LinearData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x̂0(x) (S·P, 1, H, W), the residual norms f (S,) and ∇_x Σ_s f_s, chunk by chunk of whole slices."""
        parts = data.parts
        per = max(1, self.cfg.batch_limit // parts) * parts
        x0s, grads, norms = [], [], []
        for lo in range(0, x.shape[0], per):
            xc = x[lo:lo + per].detach().requires_grad_(True)
            with torch.enable_grad():
                x0 = self.denoiser.x0(xc, k)
                if self.clip is not None:
                    x0 = x0.clamp(*self.clip)
                f, g0 = data.select(lo // parts, (lo + xc.shape[0]) // parts).norm_grad(x0.detach())
                (g,) = torch.autograd.grad(x0, xc, grad_outputs=g0)
            x0s.append(x0.detach())
            grads.append(g)
            norms.append(f)
        self.nfe += 1
        return torch.cat(x0s), torch.cat(norms), torch.cat(grads)

    def step(self, x: torch.Tensor, k: int, data: LinearData, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One DPS step from x_k with noise z: (x_{k+1}, x̂0(x_k))."""
        x0, f, g = self.guided_x0(x, k, data)
        self.residuals.append(float(f.sum()))
        return self.denoiser.ancestral(x, x0, k, z) - self.cfg.zeta * g, x0

    def sample(self, data: LinearData, shape: tuple[int, ...], gen) -> torch.Tensor:
        """A posterior sample (network scale, ``shape`` = (S·P, 1, H, W)); ``gen`` a torch.Generator
        or a :class:`~diffrecon.samplers.noise.SliceNoise` of the S slices."""
        return run_chain(self.step, self.denoiser, data, shape, gen, "dps", self.cfg.progress).detach()
