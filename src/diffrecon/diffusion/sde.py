"""Variance-exploding SDE (score-MRI).

Forward process  dx = sqrt(d[sigma^2(t)]/dt) dw,  t in [0, 1], with the geometric noise scale

    sigma(t) = sigma_min * (sigma_max / sigma_min) ** t,

so x_t = x_0 + sigma(t) z and the perturbation kernel's score is -(x_t - x_0) / sigma(t)^2.
For sampling with N steps the discrete noise levels are the same geometric sequence
sigma_k = sigma(k / (N - 1)), k = 0..N-1, and the reverse-diffusion predictor uses
G_k^2 = sigma_k^2 - sigma_{k-1}^2 (sigma_{-1} = 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


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
