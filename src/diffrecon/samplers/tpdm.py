"""TPDM: two perpendicular 2-D diffusion priors used alternately on one volume (Lee et al., ICCV 2023).

The volume x (S, H, W) (S axial slices along z) is sampled with two VP ε-networks:

* the **primary** prior ε_xy on axial slices: x → S images (1, H, W);
* the **auxiliary** prior ε_⊥ on slices that contain z: coronal (fixed row h: x[:, h, :],
  H images (1, S, W)) or sagittal (fixed column w: x[:, :, w], W images (1, S, H)).

Per reverse step t → t' (DDIM times of :meth:`VPSchedule.timesteps`) exactly one prior scores
the whole volume — the auxiliary one on steps chosen by ``alternation``:

* ``random`` (the original's rule): with probability 1/K, K = ``aux_every`` (2.7 in the original
  code), drawn from a generator seeded by ``seed``;
* ``periodic``: at every round(K)-th step (steps K−1, 2K−1, … counted from 0).

``aux_every = 0`` never uses the auxiliary prior (a DDS-2D sampler; for comparisons).
Then, as in DDS (:mod:`~diffrecon.samplers.diffusion_blend`): Tweedie
x̂_0 = (x_t − sqrt(1 − ᾱ_t) ε̂)/sqrt(ᾱ_t), data consistency on u = (x̂_0 + 1)/2 in the [0, 1]
scale of the measurements (``dc``: ``proximal`` CG on (I + γAᵀA)u = u⁰ + γAᵀy, ``cg`` on
AᵀA u = Aᵀy, or ``admm`` z-TV; :func:`~diffrecon.samplers.admm_tv.data_consistency`, warm-started
at u⁰; γ, ρ, λ in the true adjoint's units), and the DDIM update
x_{t'} = sqrt(ᾱ_{t'})(2u − 1) + sqrt(1 − ᾱ_{t'})(η ξ + sqrt(1 − η²) ε̂); the last step returns u.

**Data consistency ``dps``** (the original's: DPS, a gradient through the network). With
f(x_t) = ‖y − A u(x_t)‖ (one norm over the volume; u = (x̂_0 + 1)/2, x̂_0 the Tweedie estimate
from whichever prior scores this step) the update is

    x_{t'} = DDIM(x̂_0, ε̂) − ζ ∇_{x_t} f,
    ∇_{x_t} f = g/sqrt(ᾱ_t) + J_ε̂(x_t)ᵀ(−sqrt((1 − ᾱ_t)/ᾱ_t) g),   g = ∂f/∂x̂_0 = ½ Aᵀ(Au − y)/f,

the vector–Jacobian product through the prior taken image by image of the plane that scored the
step (two passes: ε̂ of the whole volume without a graph, then each chunk again with one
backward pass — memory of one chunk, not of the volume). The last step returns u = (x̂_0 + 1)/2.
The original weight 0.025 acts on a VE state in the image scale; here x = 2u − 1, so
∂u/∂x = ½ twice over (gradient and step) and the same step in u at low noise is ζ = 4·0.025 = 0.1
(the registry's value). Like every DPS weight it is not invariant to the operator's scale, the
image size or the number of voxels (the gradient of a norm over the whole volume): docs/methods.md.

The other ``dc`` kinds are the DDS family's solves on u (below), for comparisons.

**Anisotropic volumes.** The auxiliary network sees images of ``z_window`` slices (its training
size, recorded in its checkpoint; 0: all S). With S > ``z_window`` the z axis is covered by
windows [0, w), [w, 2w), …, and a last window ending at S; a slice in two windows takes the
mean of their ε̂. Every image goes through the networks in batches of at most ``batch_limit``
(``batch_limit_perp`` for the auxiliary one; :mod:`~diffrecon.samplers.memory`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from diffrecon.diffusion.vp import VPSchedule, ddim_step, tweedie
from diffrecon.options import Options
from diffrecon.physics.operator import LinearOperator
from diffrecon.samplers.admm_tv import DC_KINDS, data_consistency
from diffrecon.samplers.pc import timed_call

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]

ALTERNATIONS = ("random", "periodic")
TPDM_DC = ("dps", *DC_KINDS)
PLANES = ("coronal", "sagittal", "alternate")


@dataclass
class TPDMConfig(Options):
    n_steps: int = 50
    eta: float = 0.85
    aux_every: float = 2.7        # K: the auxiliary prior on 1 step in K (0: never)
    alternation: str = "random"   # random (probability 1/K, the original) | periodic (every round(K)-th)
    perp_plane: str = "coronal"   # coronal | sagittal | alternate (coronal, sagittal, … on auxiliary steps)
    z_window: int = 0             # slices per auxiliary image (0: the whole volume)
    dc: str = "dps"               # dps (the original: gradient through the network) | proximal | cg | admm
    zeta: float = 0.1             # DPS step ζ on the VP state (dc = dps): 4 × the original's 0.025 on its VE state
    gamma: float = 1.0            # proximal weight, units of the true adjoint
    rho: float = 0.0              # ADMM penalty (dc = admm), units of the true adjoint
    lam: float = 0.0              # z-TV weight (dc = admm), units of the true adjoint
    cg_iter: int = 5
    batch_limit: int = 64         # axial slices per network call
    batch_limit_perp: int = 0     # auxiliary images per network call (0: batch_limit)
    seed: int = 0
    progress: bool = True


def window_starts(n: int, window: int) -> list[int]:
    """Starts of the z windows of length ``window`` covering [0, n): 0, w, 2w, … and n − w."""
    if window < 1 or window > n:
        raise ValueError(f"the auxiliary prior sees {window} slices, the volume has {n}: "
                         f"it needs at least {window} slices")
    starts = list(range(0, n - window + 1, window))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def aux_steps(n_steps: int, aux_every: float, alternation: str, seed: int) -> list[bool]:
    """Which reverse steps (0-based) use the auxiliary prior."""
    if alternation not in ALTERNATIONS:
        raise ValueError(f"alternation '{alternation}' is not one of {', '.join(ALTERNATIONS)}")
    if aux_every < 0 or 0 < aux_every < 1:
        raise ValueError(f"aux_every must be 0 (never) or >= 1, got {aux_every}")
    if aux_every == 0:
        return [False] * n_steps
    if alternation == "periodic":
        k = max(1, int(round(aux_every)))
        return [(i + 1) % k == 0 for i in range(n_steps)]
    draws = np.random.default_rng(seed).random(n_steps)
    return [bool(d < 1.0 / aux_every) for d in draws]


class TPDMSampler:
    """Reconstruct one volume; ``eps_axial`` and ``eps_perp`` are ``fn(x (B, 1, h, w), t (B,), None)``
    (VP ε-networks through :func:`~diffrecon.models.inference.network_fn`, or any function)."""

    def __init__(self, eps_axial: EpsFn, eps_perp: EpsFn, schedule: VPSchedule, cfg: TPDMConfig,
                 grad_fns: tuple[EpsFn, EpsFn] | None = None):
        """``grad_fns``: differentiable versions of (``eps_axial``, ``eps_perp``) for ``dc = dps``
        (:func:`~diffrecon.samplers.denoisers.grad_network_fn`; default: the functions themselves)."""
        if cfg.dc not in TPDM_DC:
            raise ValueError(f"dc '{cfg.dc}' is not one of {', '.join(TPDM_DC)}")
        if cfg.perp_plane not in PLANES:
            raise ValueError(f"perp_plane '{cfg.perp_plane}' is not one of {', '.join(PLANES)}")
        if cfg.batch_limit < 1 or cfg.batch_limit_perp < 0:
            raise ValueError(f"batch limits must be >= 1, got {cfg.batch_limit}, {cfg.batch_limit_perp}")
        self.eps_axial, self.eps_perp = eps_axial, eps_perp
        self.grad_axial, self.grad_perp = grad_fns or (eps_axial, eps_perp)
        self.residuals: list[float] = []          # dc = dps: ‖y − A u(x̂_0)‖ per step
        self.schedule = schedule
        self.cfg = cfg
        self.nfe = 0                  # full-volume ε evaluations
        self.network_calls = 0
        self.aux_used = 0             # steps scored by the auxiliary prior
        self.network_seconds = 0.0

    def _batched(self, fn: EpsFn, images: torch.Tensor, t: int, limit: int) -> torch.Tensor:
        """ε̂ of ``images`` (N, h, w) at step t, in calls of at most ``limit`` images."""
        out = torch.empty_like(images)
        for lo in range(0, images.shape[0], limit):
            chunk = images[lo:lo + limit, None]
            steps = torch.full((chunk.shape[0],), t, device=images.device, dtype=torch.long)
            self.network_calls += 1
            out[lo:lo + limit] = timed_call(self, fn, chunk, steps, None)[:, 0]
        return out

    def _batched_vjp(self, fn: EpsFn, images: torch.Tensor, t: int, limit: int, cot: torch.Tensor) -> torch.Tensor:
        """J_ε̂(images)ᵀ cot (N, h, w): each chunk of at most ``limit`` images forward again with a graph
        and one backward pass."""
        out = torch.empty_like(images)
        for lo in range(0, images.shape[0], limit):
            chunk = images[lo:lo + limit, None].detach()
            steps = torch.full((chunk.shape[0],), t, device=images.device, dtype=torch.long)
            self.network_calls += 1
            t0 = time.perf_counter()
            with torch.inference_mode(False), torch.enable_grad():
                chunk = chunk.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(fn(chunk, steps, None), chunk, grad_outputs=cot[lo:lo + limit, None])
            self.network_seconds += time.perf_counter() - t0
            out[lo:lo + limit] = g[:, 0].detach()
        return out

    def axial_eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """ε̂ (S, H, W): every axial slice through the primary prior."""
        return self._batched(self.eps_axial, x, t, self.cfg.batch_limit)

    def perp_eps(self, x: torch.Tensor, t: int, plane: str, cot: torch.Tensor | None = None) -> torch.Tensor:
        """ε̂ (S, H, W): every coronal (x[:, h, :]) or sagittal (x[:, :, w]) slice through the
        auxiliary prior, z windows of ``z_window`` slices, the mean where windows overlap.
        With ``cot`` (S, H, W): instead the vector–Jacobian product J_ε̂(x)ᵀ cot of that map."""
        def to_plane(v):
            return (v.permute(1, 0, 2) if plane == "coronal" else v.permute(2, 0, 1))   # (N, S, ·)

        imgs = to_plane(x)
        n = imgs.shape[1]
        window = self.cfg.z_window or n
        out = torch.zeros_like(imgs)
        count = torch.zeros(n, dtype=x.dtype, device=x.device)
        limit = self.cfg.batch_limit_perp or self.cfg.batch_limit
        starts = window_starts(n, window)
        for lo in starts:
            count[lo:lo + window] += 1
        for lo in starts:
            part = imgs[:, lo:lo + window].contiguous()
            if cot is None:
                out[:, lo:lo + window] += self._batched(self.eps_perp, part, t, limit)
            else:                          # ε̂ = Σ_windows ε̂_w / count: cotangent cot / count per window
                c = (to_plane(cot)[:, lo:lo + window] / count[None, lo:lo + window, None]).contiguous()
                out[:, lo:lo + window] += self._batched_vjp(self.grad_perp, part, t, limit, c)
        if cot is None:
            out /= count[None, :, None]
        return out.permute(1, 0, 2) if plane == "coronal" else out.permute(1, 2, 0)

    def _plane(self, i: int, use_aux: list[bool]) -> str:
        """The plane that scores step i: ``axial`` or the auxiliary prior's plane."""
        if not use_aux[i]:
            return "axial"
        plane = self.cfg.perp_plane if self.cfg.perp_plane != "alternate" else ("coronal", "sagittal")[self.aux_used % 2]
        self.aux_used += 1
        return plane

    def eps(self, x: torch.Tensor, t: int, plane: str) -> torch.Tensor:
        return self.axial_eps(x, t) if plane == "axial" else self.perp_eps(x, t, plane)

    def eps_vjp(self, x: torch.Tensor, t: int, plane: str, cot: torch.Tensor) -> torch.Tensor:
        """J_ε̂(x)ᵀ cot (S, H, W) of the prior of ``plane``."""
        if plane == "axial":
            return self._batched_vjp(self.grad_axial, x, t, self.cfg.batch_limit, cot)
        return self.perp_eps(x, t, plane, cot)

    def dps_gradient(self, x: torch.Tensor, eps: torch.Tensor, t: int, plane: str, y: torch.Tensor,
                     op: LinearOperator) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(x̂_0, ∇_x f, f) at x_t with f = ‖y − A u(x̂_0(x_t))‖ (module docstring)."""
        a = self.schedule.alpha_bar(t)
        x0 = tweedie(x, eps, a)
        r = op.A((x0 + 1) / 2) - y
        f = float(torch.linalg.vector_norm(r))
        g = op.A_adjoint(r) / (2 * max(f, 1e-30))                     # ∂f/∂x̂_0
        grad = g / math.sqrt(a) + self.eps_vjp(x, t, plane, -math.sqrt((1 - a) / a) * g)
        return x0, grad, f

    @torch.inference_mode()
    def sample(self, y: torch.Tensor, op: LinearOperator, shape: tuple[int, int, int]) -> torch.Tensor:
        """u (S, H, W) in the [0, 1] scale from measurements ``y`` = A u (``op``: the forward model
        on volumes (S, H, W), e.g. :class:`~diffrecon.physics.ct.ParallelBeamCT`)."""
        cfg = self.cfg
        gen = torch.Generator(device=y.device).manual_seed(cfg.seed)
        x = torch.randn(shape, generator=gen, dtype=y.dtype, device=y.device)
        dps = cfg.dc == "dps"
        dc = None if dps else data_consistency(op, y, cfg.dc, rho=cfg.rho, lam=cfg.lam, gamma=cfg.gamma,
                                               cg_iter=cfg.cg_iter)
        times = self.schedule.timesteps(cfg.n_steps)
        use_aux = aux_steps(len(times), cfg.aux_every, cfg.alternation, cfg.seed)
        u = None
        for i, t in enumerate(tqdm(times, desc="tpdm", disable=not cfg.progress, leave=False)):
            a = self.schedule.alpha_bar(t)
            self.nfe += 1
            plane = self._plane(i, use_aux)
            eps = self.eps(x, t, plane)
            last = i + 1 == len(times)
            if dps:
                x0, grad, f = self.dps_gradient(x, eps, t, plane, y, op)
                self.residuals.append(f)
                u = (x0 + 1) / 2
                if not last:
                    x = ddim_step(x0, eps, self.schedule.alpha_bar(times[i + 1]), cfg.eta, gen) - cfg.zeta * grad
            else:
                u = dc((tweedie(x, eps, a) + 1) / 2)
                if not last:
                    x = ddim_step(2 * u - 1, eps, self.schedule.alpha_bar(times[i + 1]), cfg.eta, gen)
        return u                  # the last step: x = x̂_0' (ᾱ_{−1} = 1)
