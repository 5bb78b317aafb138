"""A trained prior as the x̂0-predictor of a sampling grid: what DPS and DiffPIR need of it.

Both solvers see the prior only through three operations on a state x (B, 1, H, W) at grid
step k (k = 0 … N−1, noise decreasing; step N is the clean end):

* ``x0(x, k)``: Tweedie's estimate x̂0 = E[x0 | x_k] from the network (differentiable when
  called under ``torch.enable_grad``: DPS differentiates through it);
* ``ancestral(x, x0, k, z)``: a draw from the forward process' posterior q(x_{k+1} | x_k, x0 = x̂0)
  (the DDPM step; deterministic at the last step, which returns x̂0);
* ``renoise(x, x0, k, z, zeta)``: DiffPIR's re-noising of a (data-corrected) x̂0 to level k+1.

The two processes are one algorithm in different coordinates. A VP state x_t relates to a VE
state by x_VE = x_t / sqrt(ᾱ_t) with σ_t = sqrt((1 − ᾱ_t) / ᾱ_t) (``sigma_bar``), so both forms
below are the same posterior step; each is written in the coordinates of its network.

**VP** (ε-network, :class:`~diffrecon.diffusion.vp.VPSchedule`; times t_0 > … > t_{N−1} from
:meth:`VPSchedule.timesteps`, ᾱ' = ᾱ_{t_{k+1}}, ᾱ_{−1} = 1):

    x̂0 = (x − sqrt(1 − ᾱ) ε̂(x, t)) / sqrt(ᾱ)
    ancestral: β̃ = 1 − ᾱ/ᾱ',  x' = sqrt(ᾱ') β̃/(1 − ᾱ) x̂0 + sqrt(ᾱ/ᾱ') (1 − ᾱ')/(1 − ᾱ) x
                                   + sqrt((1 − ᾱ')/(1 − ᾱ) β̃) z        (DDPM's posterior; stride 1: β̃ = β_t)
    renoise:   ε̂' = (x − sqrt(ᾱ) x̂0) / sqrt(1 − ᾱ),
               x' = sqrt(ᾱ') x̂0 + sqrt(1 − ᾱ') (sqrt(1 − ζ) ε̂' + sqrt(ζ) z)

**VE** (score network, :class:`~diffrecon.diffusion.sde.VESDE`; σ_k = σ(t_k), t_k = linspace(1, ε, N),
σ_N = 0):

    x̂0 = x + σ_k² s(x, σ_k)                                                (Tweedie)
    ancestral: x' = x̂0 + (σ'²/σ²)(x − x̂0) + σ' sqrt(σ² − σ'²)/σ z        (= x + (σ² − σ'²) s + …)
    renoise:   ε̂' = (x − x̂0)/σ,  x' = x̂0 + σ' (sqrt(1 − ζ) ε̂' + sqrt(ζ) z)

``network`` is the sampler's network function: VP ``fn(x, t (B,) long, None)`` → ε̂, VE
``fn(x, σ (B,))`` → s (:func:`~diffrecon.models.inference.network_fn`, or :func:`grad_network_fn`
when DPS differentiates through it). Images are in the network's scale (VP: [−1, 1]; VE: the
prior's [0, 1]); the data terms map them to the data's scale.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch
from torch import nn

from diffrecon.devices import use_bf16

__all__ = ["VPDenoiser", "VEDenoiser", "grad_network_fn"]


class _Timed:
    nfe: int = 0
    network_seconds: float = 0.0

    def _call(self, *args) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.network(*args)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self.network_seconds += time.perf_counter() - t0
        self.network_calls += 1
        return out


class VPDenoiser(_Timed):
    """x̂0 and the steps of a VP ε-network on the times ``times`` (decreasing, last 0)."""

    def __init__(self, network: Callable, schedule, times: list[int]):
        self.network, self.schedule, self.times = network, schedule, [int(t) for t in times]
        self.network_seconds, self.network_calls = 0.0, 0

    @property
    def n_steps(self) -> int:
        return len(self.times)

    def _abar(self, k: int) -> float:
        return 1.0 if k >= len(self.times) else self.schedule.alpha_bar(self.times[k])

    def sigma_bar(self, k: int) -> float:
        """σ̄_k = sqrt((1 − ᾱ) / ᾱ): the noise level of x / sqrt(ᾱ) around x0."""
        a = self._abar(k)
        return math.sqrt((1.0 - a) / a)

    def init(self, shape, noise: Callable) -> torch.Tensor:
        """x at the first step: N(0, I) (``noise(shape)`` draws standard normals)."""
        return noise(shape)

    def x0(self, x: torch.Tensor, k: int) -> torch.Tensor:
        a = self._abar(k)
        t = torch.full((x.shape[0],), self.times[k], dtype=torch.long, device=x.device)
        eps = self._call(x, t, None)
        return (x - math.sqrt(1.0 - a) * eps) / math.sqrt(a)

    def ancestral(self, x, x0, k: int, z) -> torch.Tensor:
        a, a1 = self._abar(k), self._abar(k + 1)
        if k + 1 >= self.n_steps:
            return x0
        bt = 1.0 - a / a1
        mean = math.sqrt(a1) * bt / (1.0 - a) * x0 + math.sqrt(a / a1) * (1.0 - a1) / (1.0 - a) * x
        return mean + math.sqrt((1.0 - a1) / (1.0 - a) * bt) * z

    def renoise(self, x, x0, k: int, z, zeta: float) -> torch.Tensor:
        a, a1 = self._abar(k), self._abar(k + 1)
        if k + 1 >= self.n_steps:
            return x0
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        return math.sqrt(a1) * x0 + math.sqrt(1.0 - a1) * (math.sqrt(1.0 - zeta) * eps + math.sqrt(zeta) * z)


class VEDenoiser(_Timed):
    """x̂0 and the steps of a VE score network on the levels σ_k = σ(t_k), t_k = linspace(1, ε, N)."""

    def __init__(self, network: Callable, sde, n_steps: int):
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.network = network
        self.sigmas = [float(s) for s in sde.sigma(sde.time_grid(n_steps))] + [0.0]
        self.network_seconds, self.network_calls = 0.0, 0

    @property
    def n_steps(self) -> int:
        return len(self.sigmas) - 1

    def sigma_bar(self, k: int) -> float:
        return self.sigmas[k]

    def init(self, shape, noise: Callable) -> torch.Tensor:
        return self.sigmas[0] * noise(shape)

    def x0(self, x: torch.Tensor, k: int) -> torch.Tensor:
        s = self.sigmas[k]
        return x + s * s * self._call(x, torch.full((x.shape[0],), s, dtype=x.dtype, device=x.device))

    def ancestral(self, x, x0, k: int, z) -> torch.Tensor:
        s, s1 = self.sigmas[k], self.sigmas[k + 1]
        if s1 == 0.0:
            return x0
        return x0 + (s1 * s1 / (s * s)) * (x - x0) + s1 * math.sqrt(s * s - s1 * s1) / s * z

    def renoise(self, x, x0, k: int, z, zeta: float) -> torch.Tensor:
        s, s1 = self.sigmas[k], self.sigmas[k + 1]
        if s1 == 0.0:
            return x0
        return x0 + s1 * (math.sqrt(1.0 - zeta) * (x - x0) / s + math.sqrt(zeta) * z)


def grad_network_fn(network: nn.Module, precision: str = "float32") -> Callable:
    """``fn(x, *cond)`` like :func:`~diffrecon.models.inference.network_fn` (casts, bf16 autocast)
    but differentiable in ``x``: DPS back-propagates ‖y − A x̂0(x)‖ through it. Called inside
    ``torch.inference_mode`` (the memory measurement of :mod:`diffrecon.samplers.memory`), it
    leaves that mode and runs a forward and a backward pass, so the measured peak is the one a
    DPS step needs."""
    param = next(network.parameters())
    dtype, device_type = param.dtype, param.device.type
    bf16 = use_bf16(precision, device_type)

    def cast(c):
        return c.to(dtype) if isinstance(c, torch.Tensor) and c.is_floating_point() else c

    def fn(x: torch.Tensor, *cond) -> torch.Tensor:
        measuring = torch.is_inference_mode_enabled()
        with torch.inference_mode(False), torch.enable_grad():
            if measuring:                                  # memory measurement: forward + backward
                x = x.clone().requires_grad_(True)
                cond = tuple(c.clone() if isinstance(c, torch.Tensor) else c for c in cond)
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                out = network(x.to(dtype), *map(cast, cond)).to(x.dtype)
            if measuring:
                (g,) = torch.autograd.grad(out.sum(), x)
                return g.detach()
            return out

    return fn


def run_chain(step, denoiser, data, shape: tuple[int, ...], gen, desc: str, progress: bool,
              fresh_noise: bool = True):
    """The reverse chain shared by DPS and DiffPIR: x_N from ``denoiser.init``, then
    ``x, _ = step(x, k, data, z)`` for k = 0 … n_steps − 1, with z fresh standard noise of
    ``shape`` (S·P, 1, H, W) except at the last step or when ``fresh_noise`` is false (zeros: no
    draw from ``gen``). ``gen``: a torch.Generator or a :class:`~diffrecon.samplers.noise.SliceNoise`
    of the S slices; ``data.y`` sets the device and real dtype."""
    import torch
    from tqdm import tqdm

    from diffrecon.samplers.noise import randn

    dev, dt = data.y.device, data.y.real.dtype

    def noise(s):
        return randn(s, gen, dt, dev)

    x = denoiser.init(shape, noise)
    n = denoiser.n_steps
    for k in tqdm(range(n), desc=desc, disable=not progress, leave=False):
        x, _ = step(x, k, data, noise(shape) if k + 1 < n and fresh_noise else torch.zeros_like(x))
    return x
