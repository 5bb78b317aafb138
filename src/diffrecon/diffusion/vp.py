"""Variance-preserving (DDPM) diffusion with ε-prediction, and the DDIM update used by DDS /
DiffusionBlend.

Forward process over T discrete steps with a linear β schedule (β_1 = 1e-4 … β_T = 0.02,
T = 1000 in the papers; the table comes from diffusers' ``DDPMScheduler``):

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε,     ᾱ_t = Π_{s ≤ t} (1 − β_s),   t = 0 … T−1.

Images live in [−1, 1] (a [0, 1] image u enters as 2u − 1). The network predicts ε.

* Tweedie:  x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)
* DDIM step (DDS parameterisation of η; ξ ~ N(0, I) fresh each step):
  x_{t'} = sqrt(ᾱ_{t'}) x̂_0' + sqrt(1 − ᾱ_{t'}) (η ξ + sqrt(1 − η²) ε̂),
  where x̂_0' is x̂_0 after data consistency and t' the next (smaller) time, ᾱ_{−1} = 1.
* Sampling times for N steps: t = T − T/N, …, T/N, 0 (stride T/N; 995, 990, …, 0 for N = 200).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
from torch import nn

from diffrecon.diffusion.batch_noise import batch_randint, batch_randn


@dataclass(frozen=True)
class VPSchedule:
    beta_start: float = 1e-4
    beta_end: float = 0.02
    n_train_steps: int = 1000

    def __post_init__(self):
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"VP schedule needs 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.n_train_steps < 2:
            raise ValueError(f"VP schedule needs at least 2 steps, got {self.n_train_steps}")

    @cached_property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t for t = 0 … T−1, float64 (T,)."""
        from diffusers import DDPMScheduler

        sched = DDPMScheduler(num_train_timesteps=self.n_train_steps, beta_start=self.beta_start,
                              beta_end=self.beta_end, beta_schedule="linear")
        return torch.cumprod(1.0 - sched.betas.to(torch.float64), dim=0)

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t as a float, with ᾱ_{−1} = 1."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def timesteps(self, n_steps: int) -> list[int]:
        """Decreasing sampling times, n_steps of them, ending at 0 (stride T // n_steps)."""
        if not 1 <= n_steps <= self.n_train_steps:
            raise ValueError(f"n_steps must be in [1, {self.n_train_steps}], got {n_steps}")
        stride = self.n_train_steps // n_steps
        return list(range(0, stride * n_steps, stride))[::-1]


def tweedie(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)."""
    return (x_t - math.sqrt(1.0 - alpha_bar) * eps) / math.sqrt(alpha_bar)


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_bar_next: float, eta: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """x_{t'} = sqrt(ᾱ_{t'}) x̂_0 + sqrt(1 − ᾱ_{t'}) (η ξ + sqrt(1 − η²) ε̂)."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device) if eta > 0 else 0.0
    return (math.sqrt(alpha_bar_next) * x0
            + math.sqrt(1.0 - alpha_bar_next) * (eta * noise + math.sqrt(1.0 - eta ** 2) * eps))


def vp_eps_loss(schedule: VPSchedule) -> Callable:
    """ε-prediction MSE: t ~ U{0 … T−1}, loss = mean over pixels of (ε̂(x_t, t, y) − ε)².

    The returned ``loss(model, x0, gen, labels=None)`` takes x0 in [−1, 1], shape (B, C, H, W),
    and optional class labels (B,) (DiffusionBlend's slice spacing); t and ε are drawn from ``gen``
    (a generator, or the :class:`~diffrecon.diffusion.batch_noise.BatchShare` of one data-parallel
    process).
    """
    abar = schedule.alphas_cumprod

    def loss(model: nn.Module, x0: torch.Tensor, gen: torch.Generator, labels: torch.Tensor | None = None):
        b = x0.shape[0]
        t = batch_randint(gen, schedule.n_train_steps, (b,))
        noise = batch_randn(gen, x0.shape, dtype=x0.dtype).to(x0.device)
        a = abar[t].to(x0).view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = model(x_t, t.to(x0.device), labels if labels is None else labels.to(x0.device))
        return ((pred - noise) ** 2).mean()

    return loss
