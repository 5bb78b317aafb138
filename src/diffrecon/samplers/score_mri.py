"""score-MRI: predictor–corrector sampling of a VE-SDE prior with k-space data consistency.

Notation: y = M ⊙ F x are the measurements (per coil), F the centred orthonormal DFT, M the
0/1 mask, s_θ(x, σ) the score network trained on real magnitude images, and
σ_0 > σ_1 > … > σ_{N-1} the geometric noise levels σ(t_i), t_i = linspace(1, ε, N); σ_N = 0.

* predictor (reverse diffusion):  x ← x + (σ_i² − σ_{i+1}²) s_θ(x, σ_i) + sqrt(σ_i² − σ_{i+1}²) z
* corrector (Langevin, signal-to-noise ratio r):  ε = 2 (r ‖z‖ / ‖s_θ(x, σ_i)‖)²,
  x ← x + ε s_θ(x, σ_i) + sqrt(2ε) z   (norms per complex image: its real and imaginary
  parts share one ε)
* data consistency (projection, λ = 1 is a hard replacement of the measured samples):
  x ← F⁻¹[(1 − λM) ⊙ F x + λ y]   (:meth:`~diffrecon.physics.mri.SingleCoilMRI.project`)

The forward models are operator objects (:mod:`diffrecon.physics.mri`): the sampler gets a
single-coil ``SingleCoilMRI(mask)`` whose leading axes carry slices and coils (every coil image
has its own data consistency), and for Alg. 5 a SENSE ``MultiCoilMRI(maps, mask)``.

The prior sees real images only: complex images enter the network as their real and
imaginary parts, coils as separate images, all slices, coils and parts as ONE batch per
network call (score-MRI's per-coil Python loop is algebraically the same, since the coils are
independent between SENSE corrections).

Algorithms (Chung & Ye):

* Alg. 2 ``real``      — real-valued image; corrector, DC (real part kept), predictor, DC; init
  Re F⁻¹[y + (1 − M) ⊙ F(σ_0 z)].
* Alg. 3 ``complex``   — complex single-coil image; same loop and init without taking Re.
* Alg. 4 ``ssos``      — every coil image reconstructed with its own DC; predictor, DC,
  corrector, DC; init σ_0 (z_r + i z_i); result sqrt(Σ_c |x_c|²) (magnitude RSS, unlike the
  original's complex sqrt(Σ x_c²)).
* Alg. 5 ``hybrid``    — Alg. 4 plus, at every step i with i mod m = 0 (the first at i = 0, as in
  the original, so with N divisible by m the last correction is followed by m − 1 steps of
  per-coil data consistency), a SENSE correction with coil maps S estimated by ESPIRiT **from the
  ACS region of the measured data** (no oracle): with ρ = Σ_c S̄_c x_c and A = M F S (the SENSE
  operator), x_c ← x_c + λ_i S_c Aᴴ(y − A ρ). λ_i = λ_start + (λ_end − λ_start) i / (N − 1) falls
  linearly over the actual number of steps. (The original multiplies the coil images by S a
  second time and uses a 2000-step λ horizon for any N; neither is copied.)

Reference (``phase_reference="acs"``, the default for Alg. 3–5). The prior only knows real,
non-negative images of unit peak, so a complex image whose phase sits far from 0 (a global
offset, the spatial phase of a receive coil), or a coil image of peak 0.5, has real and imaginary
parts the prior has never seen. The original code squashes the phase of the *data* to [0, 1] rad,
which changes the measurements, and is not copied. Instead the sampler computes, per slice and
coil, r = s · exp(iφ) with φ the phase of a Hann-windowed low-resolution image from the fully
sampled ACS block of y and s the peak of the zero-filled image Aᴴy, and samples z = x / r, which is
close to real, non-negative and of about unit peak. r is a fixed pixel-wise invertible map, so the
projection onto {x : M F x = y} reads z ← [F⁻¹((1 − λM) ⊙ F(r ⊙ z) + λ y)] / r: the data, the
constraint set and the estimate's image domain are unchanged. ``phase_reference="none"`` runs
the algorithms exactly as published.

Output (as the original, score_sde style: predictor and corrector give (x, x_mean), x_mean the
update without its added noise; the chain continues with x): Alg. 3 returns DC of the predictor
mean of the last step, Alg. 4/5 DC of the corrector mean of the last step (and, for Alg. 5, its
SENSE correction if one falls on the last step); Alg. 2 (the original's fast real sampler)
returns DC of the last predictor output *with* its noise (its x_mean is DC(x)), which leaves
about σ_min of noise in the unmeasured k-space. Estimates are magnitudes; K posterior samples
(fresh noise per sample) give a pixel-wise mean and standard deviation.

Noise (seeds). Every slice draws its noise from its own generator, seeded by (seed, posterior
sample, volume name, slice index in the volume) (:mod:`diffrecon.samplers.noise`): the slices are
independent chains, so a block of slices — a separate job, a checkpointed part, a smaller
network batch — reconstructs to the numbers of the whole volume's run.

Scale (``slice_scale="zero_filled"``, the default of :func:`reconstruct_volume`). Test volumes
are normalised by their maximum (the fastMRI metric convention: data range = volume maximum),
while the prior was trained on slices of unit peak. Each slice of y is therefore divided by s =
the peak of its zero-filled image (max over coils of |Aᴴ y_c| for multi-coil data: only measured
data enter) and the estimate multiplied back by s. The algorithms are linear in the data
except for the prior, so this only changes which images the prior sees; for Alg. 3–5 with the
``acs`` reference (which already samples x / r with r carrying the same per-image peak) it
changes nothing but rounding. It matters for Alg. 2 and for ``phase_reference="none"``, where an
off-centre slice of peak 0.3 would otherwise be pulled towards unit-peak images.
``slice_scale="none"`` samples the data as given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from diffrecon.models.inference import network_fn
from diffrecon.options import Options
from diffrecon.physics.mri import MultiCoilMRI, SingleCoilMRI
from diffrecon.samplers.noise import SliceNoise, randn, slice_seed
from diffrecon.samplers.pc import langevin, reverse_diffusion, timed_call

ALGORITHMS = ("real", "complex", "ssos", "hybrid")

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (B,1,H,W) real, (B,) σ → (B,1,H,W)


@dataclass
class SamplerConfig(Options):
    n_steps: int = 2000
    snr: float = 0.16
    n_corrector: int = 1
    dc_lambda: float = 1.0
    hybrid_every: int = 50
    hybrid_lambda: tuple[float, float] = (1.0, 0.2)
    n_samples: int = 1
    seed: int = 0
    progress: bool = True
    phase_reference: str = "acs"          # "acs": sample x / r, r from the ACS and zero-filled data; "none"
    acs_width: int = 8                    # side of the fully sampled centre used for the phase of r
    slice_scale: str = "zero_filled"      # reconstruct_volume: each slice to unit zero-filled peak and back; "none"
    precision: str = "float32"            # network arithmetic: float32 | bfloat16 (autocast) | auto


def acs_reference(y: torch.Tensor, op: SingleCoilMRI, acs_width: int) -> torch.Tensor:
    """Reference r = s · exp(i∠x_low) of each image in ``y`` (..., H, W): complex, same shape.

    ``op`` is the single-coil operator of ``y`` (leading axes of ``y`` are its batch axes).
    x_low = Aᴴ(w ⊙ y) = F⁻¹[w ⊙ y] (y is measured, M ⊙ y = y), w a separable Hann window over the
    centred ``acs_width`` × ``acs_width`` block (zero elsewhere), so only fully sampled k-space
    enters and the phase is smooth; s = max |Aᴴ y|, the peak of the zero-filled image (one
    positive number per slice and coil). x / r is then close to real, non-negative and of about
    unit peak, like the prior's images.
    """
    h, w = y.shape[-2:]
    a = int(max(3, min(acs_width, h, w)))
    win1 = torch.hann_window(a + 2, periodic=False, dtype=y.real.dtype, device=y.device)[1:-1]
    win = torch.zeros((h, w), dtype=y.real.dtype, device=y.device)
    r0, c0 = h // 2 - a // 2, w // 2 - a // 2
    win[r0:r0 + a, c0:c0 + a] = win1[:, None] * win1[None, :]
    low = op.A_adjoint(y * win)
    mag = low.abs()
    zf_peak = op.A_adjoint(y).abs().amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(zf_peak > 0, zf_peak, torch.ones_like(zf_peak))
    phase = torch.where(mag > 1e-6 * mag.amax(dim=(-2, -1), keepdim=True), low / mag.clamp_min(1e-30),
                        torch.ones((), dtype=y.dtype, device=y.device))
    return phase * scale



def slice_peak(y: torch.Tensor, op: SingleCoilMRI, multicoil: bool) -> torch.Tensor:
    """Peak of the zero-filled image of each slice of ``y`` ((S, H, W), or (S, C, H, W) with
    ``multicoil``: the largest coil-image peak), shape (S, 1, 1[, 1]) for broadcasting; slices
    without data get 1."""
    mag = op.A_adjoint(y).abs()
    peak = mag.amax(dim=(-3, -2, -1) if multicoil else (-2, -1), keepdim=True)
    if multicoil:
        peak = peak.reshape(peak.shape[0], 1, 1, 1)
    return torch.where(peak > 0, peak, torch.ones_like(peak))


def _to_batch(x: torch.Tensor, real_only: bool) -> torch.Tensor:
    """Complex (..., H, W) → real network batch (B, 1, H, W) (real and imaginary parts as images)."""
    h, w = x.shape[-2:]
    if real_only:
        return x.real.reshape(-1, 1, h, w)
    return torch.view_as_real(x).movedim(-1, -3).reshape(-1, 1, h, w)


def _from_batch(b: torch.Tensor, shape: torch.Size, real_only: bool) -> torch.Tensor:
    if real_only:
        return torch.complex(b.reshape(shape), torch.zeros((), dtype=b.dtype))
    h, w = shape[-2:]
    parts = b.reshape(*shape[:-2], 2, h, w).movedim(-3, -1).contiguous()
    return torch.view_as_complex(parts)


class ScoreMRISampler:
    """Posterior sampler of one volume: ``y`` (S, [C,] H, W) complex measured k-space, ``op`` its
    single-coil operator ``SingleCoilMRI(mask)`` (slices and coils are batch axes), for Alg. 5
    also ``sense_op`` = ``MultiCoilMRI(maps, mask)`` with maps (C, H, W) or (S, C, H, W)."""

    def __init__(self, score_fn: ScoreFn, sde, cfg: SamplerConfig):
        self.score_fn = score_fn
        self.sde = sde
        self.cfg = cfg
        self.nfe = 0
        self.network_seconds = 0.0       # time spent inside the score network (for the overhead benchmark)

    # ------------------------------------------------------------------ building blocks
    def _score(self, xb: torch.Tensor, sigma: float) -> torch.Tensor:
        self.nfe += 1
        return timed_call(self, self.score_fn, xb, torch.full((xb.shape[0],), sigma, dtype=xb.dtype, device=xb.device))

    def _predictor(self, x, sigma, sigma_next, gen, real_only: bool, with_mean: bool = False):
        """Reverse-diffusion step of complex images ``x``; with ``with_mean`` also its noise-free mean."""
        out = reverse_diffusion(self._score, _to_batch(x, real_only), sigma, sigma_next, gen, with_mean=with_mean)
        return tuple(_from_batch(o, x.shape, real_only) for o in out) if with_mean else _from_batch(out, x.shape, real_only)

    def _corrector(self, x, sigma, gen, real_only: bool, with_mean: bool = False):
        """Langevin steps of complex images ``x``; the real and imaginary parts of one image share
        one step size (a nearly zero part, like the imaginary part of a referenced image, has a
        tiny score and would otherwise get a huge step)."""
        out = langevin(self._score, _to_batch(x, real_only), sigma, self.cfg.snr, gen, self.cfg.n_corrector,
                       1 if real_only else 2, with_mean=with_mean)
        return tuple(_from_batch(o, x.shape, real_only) for o in out) if with_mean else _from_batch(out, x.shape, real_only)

    def sigmas(self) -> list[float]:
        """σ_i = σ(t_i) for t_i = linspace(1, ε, N), followed by σ_N = 0."""
        return [float(s) for s in self.sde.sigma(self.sde.time_grid(self.cfg.n_steps))] + [0.0]

    # ------------------------------------------------------------------ algorithms
    def sample(self, y: torch.Tensor, op: SingleCoilMRI, algorithm: str, sense_op: MultiCoilMRI | None = None,
               seed: int | None = None, noise: SliceNoise | None = None) -> torch.Tensor:
        """One posterior sample; returns the complex image(s) of the last iterate, shape of ``y``.

        ``y``: measured k-space, (S, H, W) for ``real`` / ``complex``, (S, C, H, W) for ``ssos`` /
        ``hybrid``. ``op``: the single-coil operator (:class:`~diffrecon.physics.mri.SingleCoilMRI`)
        applied to every image of ``y`` (its data consistency is :meth:`~SingleCoilMRI.project`).
        ``sense_op``: the SENSE operator of the coils (``hybrid`` only; same mask as ``op``), maps
        (C, H, W) or one set per slice (S, C, H, W).
        ``noise``: the per-slice noise of the S slices (:class:`~diffrecon.samplers.noise.SliceNoise`);
        default: slice s seeded :func:`~diffrecon.samplers.noise.slice_seed` (``seed``, 0, "", s),
        ``seed`` defaulting to the config's. Every draw is per slice, so a block of slices gets
        the numbers of the whole volume when given its slices' seeds.
        """
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm '{algorithm}' is not one of {', '.join(ALGORITHMS)}")
        if not hasattr(op, "project"):
            raise TypeError(f"op must be a single-coil MRI operator (SingleCoilMRI), got {type(op).__name__}")
        if algorithm == "hybrid" and sense_op is None:
            raise ValueError("the hybrid algorithm needs a SENSE operator (coil maps)")
        cfg = self.cfg
        if y.ndim < 3:
            raise ValueError(f"y must have a slice axis, (S, H, W) or (S, C, H, W); got shape {tuple(y.shape)}")
        if noise is None:
            base = cfg.seed if seed is None else seed
            noise = SliceNoise([slice_seed(base, 0, "", s) for s in range(y.shape[0])], y.device)
        elif noise.n_slices != y.shape[0]:
            raise ValueError(f"noise of {noise.n_slices} slices for data of {y.shape[0]}")
        gen = noise
        real_only = algorithm == "real"
        sig = self.sigmas()
        if cfg.phase_reference not in ("acs", "none"):
            raise ValueError(f"phase_reference '{cfg.phase_reference}' is not one of acs, none")
        ref = acs_reference(y, op, cfg.acs_width) if not real_only and cfg.phase_reference == "acs" else None

        def to_x(v: torch.Tensor) -> torch.Tensor:          # sampled variable → image
            return v if ref is None else ref * v

        def to_z(v: torch.Tensor) -> torch.Tensor:          # image → sampled variable
            return v if ref is None else v * ref.conj() / ref.abs() ** 2

        def dc(v: torch.Tensor, lam: float = cfg.dc_lambda) -> torch.Tensor:
            """Projection onto {M F x = y}, applied to the image of the sampled variable."""
            v = to_z(op.project(to_x(v), y, lam))
            return torch.complex(v.real, torch.zeros_like(v.real)) if real_only else v

        # x_0 = σ_0 (z_r + i z_i) in the sampled variable (z_i = 0 for Alg. 2); Alg. 2/3 then fill
        # the measured samples in (a λ = 1 projection), Alg. 4/5 start from the noise alone.
        z = randn((y.shape[0], 2) + tuple(y.shape[1:]), gen, y.real.dtype, y.device)     # slice-major
        x = sig[0] * torch.complex(z[:, 0], torch.zeros_like(z[:, 1]) if real_only else z[:, 1])
        if algorithm in ("real", "complex"):
            x = dc(x, 1.0)
        # The chain carries the noisy iterate x; the estimate is the data-consistent noise-free mean
        # of the last update (score_sde's x_mean), except for Alg. 2, whose original returns DC of
        # the last predictor output with its noise (see the module docstring).
        n = cfg.n_steps
        x_mean = x
        for i in tqdm(range(n), desc=f"score-{algorithm}", disable=not cfg.progress, leave=False):
            last = i == n - 1
            if algorithm in ("real", "complex"):            # Alg. 2/3: C, DC, P, DC
                x = dc(self._corrector(x, sig[i], gen, real_only))
                if last and algorithm == "complex":
                    x, x_mean = self._predictor(x, sig[i], sig[i + 1], gen, False, with_mean=True)
                    x, x_mean = dc(x), dc(x_mean)
                else:
                    x = x_mean = dc(self._predictor(x, sig[i], sig[i + 1], gen, real_only))
            else:                                           # Alg. 4/5: P, DC, C, DC
                x = dc(self._predictor(x, sig[i], sig[i + 1], gen, False))
                if last:
                    x, x_mean = self._corrector(x, sig[i], gen, False, with_mean=True)
                    x, x_mean = dc(x), dc(x_mean)
                else:
                    x = dc(self._corrector(x, sig[i], gen, False))
                if algorithm == "hybrid" and i % cfg.hybrid_every == 0:     # first at i = 0, as the original
                    lam = self.hybrid_lambda(i)
                    x = to_z(sense_correction(to_x(x), y, sense_op, lam))
                    if last:
                        x_mean = to_z(sense_correction(to_x(x_mean), y, sense_op, lam))
        return to_x(x_mean if n else x)

    def hybrid_lambda(self, i: int) -> float:
        """λ_i of the SENSE correction at step i: linear from λ_start (i = 0) to λ_end (i = N − 1)."""
        a, b = self.cfg.hybrid_lambda
        return a + (b - a) * i / max(self.cfg.n_steps - 1, 1)

    def reconstruct(self, y: torch.Tensor, op: SingleCoilMRI, algorithm: str,
                    sense_op: MultiCoilMRI | None = None, case: str = "", first_slice: int = 0) -> dict:
        """K posterior samples (arguments as :meth:`sample`) → ``mean`` and ``std`` of the magnitude
        images (S, H, W), and ``samples`` (K, S, H, W).

        The S slices of ``y`` are slices ``first_slice`` … ``first_slice + S − 1`` of volume ``case``:
        sample k of slice s draws its noise from :func:`~diffrecon.samplers.noise.slice_seed`
        (seed, k, case, s), so a block of a volume reconstructs to the whole run's numbers."""
        mags = []
        for k in range(self.cfg.n_samples):
            seeds = [slice_seed(self.cfg.seed, k, case, first_slice + s) for s in range(y.shape[0])]
            x = self.sample(y, op, algorithm, sense_op, noise=SliceNoise(seeds, y.device))
            mags.append(magnitude(x, algorithm))
        stack = torch.stack(mags)
        return {"mean": stack.mean(0), "std": stack.std(0, unbiased=False), "samples": stack, "nfe": self.nfe}


def magnitude(x: torch.Tensor, algorithm: str) -> torch.Tensor:
    """|x| for single-image algorithms; sqrt(Σ_c |x_c|²) over the coil axis (-3) for multi-coil ones."""
    if algorithm in ("ssos", "hybrid"):
        return torch.sqrt((x.abs() ** 2).sum(dim=-3))
    return x.abs()


def sense_correction(x: torch.Tensor, y: torch.Tensor, op: MultiCoilMRI, lam: float) -> torch.Tensor:
    """x_c ← x_c + λ S_c Aᴴ(y − A ρ), ρ = Σ_c S̄_c x_c, A = M F S the SENSE operator ``op``.

    x, y: (S, C, H, W) coil images and measured k-space; ``op.maps`` (C, H, W) or (S, C, H, W).
    """
    rho = op.coil_combine(x)                                    # (S, H, W)
    grad = op.A_adjoint(y - op.A(rho)).unsqueeze(-3)            # (S, 1, H, W)
    return x + lam * op.maps * grad


# ---------------------------------------------------------------------------- pipeline entry
#: (method, coil mode) → algorithm. ``score`` follows the coil mode; ``score_hybrid`` is multi-coil only.
ALGORITHM_OF = {
    ("score", "magnitude"): "real",
    ("score", "singlecoil"): "complex",
    ("score", "multicoil"): "ssos",
    ("score_hybrid", "multicoil"): "hybrid",
}


def reconstruct_volume(kspace, mask, coil_mode: str, method: str, network, sde, cfg: SamplerConfig,
                       acs_width: int = 8, device="cpu", batch_limit: int = 256, case: str = "",
                       first_slice: int = 0) -> dict:
    """Posterior mean and std (magnitude, (S, H, W) numpy) of one measured volume, or of the block
    of its slices ``first_slice`` … ``first_slice + S − 1`` (``case``: the volume's name; both seed
    the per-slice noise, :meth:`ScoreMRISampler.reconstruct`).

    ``kspace``: (S, H, W) for magnitude / single-coil modes, (S, C, H, W) for multi-coil;
    ``batch_limit``: images (slices × coils × real/imaginary parts) per network call.
    """
    import numpy as np

    algorithm = ALGORITHM_OF.get((method, coil_mode))
    if algorithm is None:
        raise ValueError(f"method '{method}' does not apply to coil mode '{coil_mode}'")
    y = torch.from_numpy(np.ascontiguousarray(kspace)).to(device=device, dtype=torch.complex64)
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32)).to(device)
    op = SingleCoilMRI(m)
    sense_op = None
    if algorithm == "hybrid":
        from diffrecon.physics.sensitivity import espirit_maps

        maps = torch.from_numpy(np.stack([espirit_maps(k, calib_width=acs_width) for k in kspace])).to(device)
        sense_op = MultiCoilMRI(maps, m)                        # one map set per slice: (S, C, H, W)
    cfg = dataclasses.replace(cfg, acs_width=int(acs_width))
    if cfg.slice_scale not in ("zero_filled", "none"):
        raise ValueError(f"slice_scale '{cfg.slice_scale}' is not one of zero_filled, none")
    # each slice to the prior's unit peak (only measured data enter), the estimate scaled back
    scale = slice_peak(y, op, y.ndim == 4) if cfg.slice_scale == "zero_filled" else torch.ones((), device=y.device)
    sampler = ScoreMRISampler(network_fn(network, cfg.precision, batch_limit), sde, cfg)
    out = sampler.reconstruct(y / scale, op, algorithm, sense_op, case=case, first_slice=first_slice)
    s = scale.reshape(-1, 1, 1) if scale.ndim else scale
    return {"mean": (s * out["mean"]).cpu().numpy(), "std": (s * out["std"]).cpu().numpy(), "nfe": sampler.nfe,
            "network_seconds": sampler.network_seconds}
