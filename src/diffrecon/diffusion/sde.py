"""Variance-exploding SDE (score-MRI).

Forward process  dx = sqrt(d[sigma^2(t)]/dt) dw,  t in [0, 1], with the geometric noise scale

    sigma(t) = sigma_min * (sigma_max / sigma_min) ** t,

so x_t = x_0 + sigma(t) z and the perturbation kernel's score is -(x_t - x_0) / sigma(t)^2.
For sampling with N steps score_sde's discrete noise levels are the same geometric sequence
sigma_k = sigma(k / (N - 1)), k = 0..N-1 (:meth:`VESDE.discrete_sigmas`), and its
reverse-diffusion predictor uses G_k^2 = sigma_k^2 - sigma_{k-1}^2 (sigma_{-1} = 0). The
samplers of this project take sigma_i = sigma(t_i) on the time grid t_i = linspace(1, eps, N)
(:meth:`VESDE.time_grid`) both as the network's noise label (as score_sde does) and for
G_i^2 = sigma_i^2 - sigma_{i+1}^2 (sigma_N = 0); the two tables differ by a factor of at most
exp(eps * ln(sigma_max / sigma_min)), about 1 + 1e-4 (docs/crosschecks.md).

Training (:func:`ve_dsm_loss`) is continuous denoising score matching with sigma^2 weighting:
t ~ U(eps, 1), x_t = x0 + sigma(t) z,  loss = 0.5 * sum_pixels (sigma s_theta(x_t, sigma) + z)^2,
averaged over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from diffrecon.diffusion.batch_noise import batch_rand, batch_randn


@dataclass(frozen=True)
class VESDE:
    sigma_min: float = 0.01
    sigma_max: float = 378.0
    eps: float = 1e-5          # smallest time used in training and sampling

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"VE-SDE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t) for t in [0, 1] (any shape)."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def discrete_sigmas(self, n: int) -> torch.Tensor:
        """The N geometric noise levels, increasing: (N,) float64."""
        return torch.exp(torch.linspace(math.log(self.sigma_min), math.log(self.sigma_max), n, dtype=torch.float64))

    def time_grid(self, n: int) -> torch.Tensor:
        """Sampling times t_i = linspace(1, eps, N) (decreasing), float64."""
        return torch.linspace(1.0, self.eps, n, dtype=torch.float64)


def ve_dsm_loss(sde: VESDE) -> Callable:
    """sigma^2-weighted continuous DSM loss for a VE score network ``model(x, sigma)``.

    The returned ``loss(model, x0, gen)`` takes clean images x0 (B, C, H, W) and draws t (B,)
    and z (B, C, H, W) from ``gen`` (a generator, or the
    :class:`~diffrecon.diffusion.batch_noise.BatchShare` of one data-parallel process); see the
    module docstring for the formula.
    """

    def loss(model: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b = x0.shape[0]
        t = batch_rand(gen, (b,), dtype=torch.float64).to(x0) * (1 - sde.eps) + sde.eps
        sigma = sde.sigma(t)
        z = batch_randn(gen, x0.shape, dtype=x0.dtype).to(x0.device)
        score = model(x0 + sigma.view(-1, 1, 1, 1) * z, sigma)
        return 0.5 * ((sigma.view(-1, 1, 1, 1) * score + z) ** 2).flatten(1).sum(1).mean()

    return loss
