"""Methods ``dps`` / ``diffpir`` (MRI) and ``dps_ct`` / ``diffpir_ct`` (CT): the general-purpose
diffusion solvers DPS (:mod:`~diffrecon.samplers.dps`) and DiffPIR
(:mod:`~diffrecon.samplers.diffpir`) on the project's own trained priors and operators.

| method        | prior (model)                          | sampled variable, operator                              |
|---------------|----------------------------------------|---------------------------------------------------------|
| ``dps``, ``diffpir`` | ``score_mri``: VE score network | see the MRI coil modes below                            |
| ``dps_ct``, ``diffpir_ct`` | ``ct_slice``: VP ε-network | every slice of the volume, u = (x + 1)/2, ``ParallelBeamCT`` |

**VE or VP for MRI.** DPS and DiffPIR are written for VP (DDPM) processes, and the project's
MRI prior is a VE score network. Both are used here in their VE form — the same algorithms in VE
coordinates (x_VE = x_VP/sqrt(ᾱ), σ = sqrt((1 − ᾱ)/ᾱ); :mod:`~diffrecon.samplers.denoisers`):
x̂0 = x + σ² s(x, σ) (Tweedie), DPS's ancestral step is score-SDE's VE ancestral sampler (the
DDPM posterior in VE coordinates) followed by −ζ ∇_x ‖y − A x̂0(x)‖, DiffPIR's ρ_k = λσ_n²/σ_k²
with the VE level itself. The alternative, converting the VE network into an ε-network of a VP
schedule (ε̂ = −σ s(x_VP/sqrt(ᾱ), σ)), gives the same x̂0 at matched levels, but the trained range
of σ is [σ_min, σ_max] (30 in the demo): the VP start σ ≈ 157 lies outside it, and the
conversion adds a schedule the network never saw. The VE form keeps the network on its own
noise levels (the score-MRI grid t_k = linspace(1, ε, N)) and shares everything else with the VP
code path, which the CT methods use unchanged.

**MRI coil modes** (the measurement through the project's operators; every slice its own chain,
noise seeded per (seed, volume, slice), so blocks of slices reproduce the whole volume's run):

* ``magnitude``: a real image u, ``SingleCoilMRI(mask)``; the prior sees u;
* ``singlecoil``: a complex image u = r ⊙ z, ``SingleCoilMRI(mask)``;
* ``multicoil``: one complex image u = r ⊙ z per slice, SENSE ``MultiCoilMRI(maps, mask)`` with
  ESPIRiT maps estimated from the ACS of the measured data (as ``score_hybrid``);

complex images enter the prior as their real and imaginary parts (two images), and r is the
unit-modulus phase of the ACS low-resolution image (:func:`~diffrecon.samplers.score_mri.acs_reference`),
so that z is close to real and non-negative like the prior's images. Each slice is divided by
its zero-filled peak (the prior's unit peak) and the magnitude |u| multiplied back.

Parameters (registry defaults, config blocks ``mri.dps`` / ``ct.dps_ct`` …): the sampler fields
(:class:`~diffrecon.samplers.dps.DPSConfig`, :class:`~diffrecon.samplers.diffpir.DiffPIRConfig`),
``precision``, ``device``, ``batch_limit`` (images per network call) or ``memory_budget_gb`` (the
batch from one measurement of the network — for DPS of a forward and backward pass —
:mod:`~diffrecon.samplers.memory`), ``n_threads`` (CT: ASTRA threads). ``zeta`` of DPS and
``sigma_n`` of DiffPIR are in the data's units (MRI: k-space of unit-peak slices; CT: the
sinogram of the [0, 1] volume on the true adjoint).
"""

from __future__ import annotations

import logging

import numpy as np

from diffrecon.methods.runner import Result, Runner, SliceBlock

log = logging.getLogger("diffrecon")

#: registry name → (solver, modality)
SOLVER_OF = {"dps": ("dps", "mri"), "diffpir": ("diffpir", "mri"),
             "dps_ct": ("dps", "ct"), "diffpir_ct": ("diffpir", "ct")}


def _sampler(solver: str, denoiser, params: dict, batch_limit: int, clip):
    from diffrecon.samplers.diffpir import DiffPIRConfig, DiffPIRSampler
    from diffrecon.samplers.dps import DPSConfig, DPSSampler

    if solver == "dps":
        return DPSSampler(denoiser, DPSConfig.from_dict({**params, "batch_limit": batch_limit}), clip=clip)
    return DiffPIRSampler(denoiser, DiffPIRConfig.from_dict({**params, "batch_limit": batch_limit}), clip=clip)


class SolverRunner(Runner):
    """Loads the prior once; one sampler run per volume (CT) or block of slices (MRI)."""

    def __init__(self, method, problem, params: dict, model):
        from diffrecon.devices import pick_device
        from diffrecon.errors import CheckpointError
        from diffrecon.methods.runner import check_trained_for, image_size
        from diffrecon.models.inference import network_fn
        from diffrecon.samplers.denoisers import grad_network_fn
        from diffrecon.samplers.memory import budget_batch_limit, example_inputs

        self.solver, modality = SOLVER_OF[method.name]
        self.problem, self.params = problem, dict(params)
        self.device = pick_device(self.params.pop("device", "auto"))
        self.precision = self.params.pop("precision", "float32")
        n_threads = self.params.pop("n_threads", None)
        if modality == "mri":
            from diffrecon.models.loading import load_score_network

            self.network, self.process, meta = load_score_network(model, device=self.device)
            kind = "score"
        else:
            from diffrecon.models.loading import load_ct_prior

            self.network, self.process, meta = load_ct_prior(model, device=self.device)
            if meta.get("kind") != "slice":
                raise CheckpointError(f"{model}: a '{meta.get('kind')}' prior, but method '{method.name}' needs a "
                                      "'slice' prior (ct_slice)")
            kind = "noise"
        check_trained_for(model, meta, problem, params)
        make = grad_network_fn if self.solver == "dps" else network_fn
        self.fn = make(self.network, self.precision)
        self.batch_limit = budget_batch_limit(self.params, self.fn, example_inputs(kind, 1, image_size(problem), self.device),
                                              self.device, 64)
        self.sampler_params = {"batch_limit": self.batch_limit, "solver": self.solver,
                               "process": "ve" if kind == "score" else "vp"}
        self.op = None
        if modality == "ct":
            from diffrecon.physics.ct import ParallelBeamCT

            self.op = ParallelBeamCT(problem.geometry, n_threads=n_threads)

    def _denoiser(self):
        from diffrecon.samplers.denoisers import VEDenoiser, VPDenoiser

        n = int(self.params.get("n_steps", 100))
        if self.op is None:
            return VEDenoiser(self.fn, self.process, n)
        return VPDenoiser(self.fn, self.process, self.process.timesteps(n))

    def __call__(self, data: np.ndarray, block: SliceBlock | None = None) -> Result:
        return self._ct(data) if self.op is not None else self._mri(data, block or SliceBlock())

    # ------------------------------------------------------------------------------ CT
    def _ct(self, sinogram: np.ndarray) -> Result:
        import torch

        from diffrecon.samplers.data_terms import LinearData

        g = self.problem.geometry
        y = torch.from_numpy(np.ascontiguousarray(sinogram, dtype=np.float32)).to(self.device)
        data = LinearData(self.op, y, 1, 0.5, 0.5, cg_iter=int(self.params.get("cg_iter", 5)))
        sampler = _sampler(self.solver, self._denoiser(), self.params, self.batch_limit, (-1.0, 1.0))
        gen = torch.Generator(device=y.device).manual_seed(int(self.params.get("seed", 0)))
        x = sampler.sample(data, (y.shape[0], 1, g.n, g.n), gen)
        u = data.to_image(x)
        return Result(reconstruction=u.float().cpu().numpy(), nfe=sampler.nfe,
                      network_seconds=sampler.network_seconds, provenance={"seed": int(self.params.get("seed", 0))})

    # ----------------------------------------------------------------------------- MRI
    def _mri(self, kspace: np.ndarray, block: SliceBlock) -> Result:
        import torch

        from diffrecon.physics.mri import MultiCoilMRI, SingleCoilMRI
        from diffrecon.samplers.data_terms import LinearData
        from diffrecon.samplers.noise import SliceNoise, slice_seed
        from diffrecon.samplers.score_mri import acs_reference

        p = self.problem
        acs = int(p.acs_width or 8)
        y = torch.from_numpy(np.ascontiguousarray(kspace)).to(device=self.device, dtype=torch.complex64)
        mask = torch.from_numpy(np.asarray(p.mask, dtype=np.float32)).to(self.device)
        sub_op = None
        if p.coil_mode == "multicoil":
            if y.ndim != 4:
                raise ValueError(f"multi-coil k-space must be (S, C, H, W), got shape {tuple(y.shape)}")
            from diffrecon.physics.sensitivity import espirit_maps

            maps = torch.from_numpy(np.stack([espirit_maps(k, calib_width=acs) for k in kspace])).to(self.device)
            op = MultiCoilMRI(maps, mask)
            sub_op = lambda lo, hi: MultiCoilMRI(maps[lo:hi], mask)  # noqa: E731
        else:
            if y.ndim != 3:
                raise ValueError(f"{p.coil_mode} k-space must be (S, H, W), got shape {tuple(y.shape)}")
            op = SingleCoilMRI(mask)
        peak = op.A_adjoint(y).abs().amax(dim=(-2, -1))
        peak = torch.where(peak > 0, peak, torch.ones_like(peak))                 # (S,)
        y = y / peak.view((-1,) + (1,) * (y.ndim - 1))
        parts, ref = 1, None
        if p.coil_mode != "magnitude":
            parts = 2
            r = acs_reference(y, op, acs)
            ref = r / r.abs().clamp_min(1e-30)                                    # unit modulus
        data = LinearData(op, y, parts, ref=ref, cg_iter=int(self.params.get("cg_iter", 5)), sub_op=sub_op)
        sampler = _sampler(self.solver, self._denoiser(), self.params, self.batch_limit, None)
        seed = int(self.params.get("seed", 0))
        noise = SliceNoise([slice_seed(seed, 0, block.case, block.start + s) for s in range(y.shape[0])], y.device)
        h, w = mask.shape
        x = sampler.sample(data, (y.shape[0] * parts, 1, h, w), noise)
        mag = data.to_image(x).abs() * peak.view(-1, 1, 1)
        return Result(reconstruction=mag.float().cpu().numpy(), nfe=sampler.nfe,
                      network_seconds=sampler.network_seconds, provenance={"seed": seed})

    def close(self) -> None:
        if self.op is not None:
            self.op.close()


def build(method, problem, params: dict, model=None) -> SolverRunner:
    if method.name not in SOLVER_OF:
        raise ValueError(f"method '{method.name}' is not one of {', '.join(SOLVER_OF)}")
    return SolverRunner(method, problem, params, model)
