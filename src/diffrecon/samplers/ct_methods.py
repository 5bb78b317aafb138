"""The CT diffusion methods of the tables, as settings of two samplers over one trained prior.

| method               | prior   | sampler                         | defaults (paper / original code)                |
|----------------------|---------|---------------------------------|-------------------------------------------------|
| ``diffusion_blend``  | patch   | DDIM + blended patch ε, adjacent | 200 steps, η 0.85, ρ 1e-3, λ 5e-5, 5 CG       |
| ``diffusion_blend_pp``| patch  | … adjacent + jump-3, alternating | same, jump every 2nd step                      |
| ``dds``              | slice   | DDIM + slice ε, ADMM z-TV       | 50 steps, η 0.85, ρ 10, λ 0.04 (SV) / 0.4 (LA)  |
| ``dds_2d``           | slice   | DDIM + slice ε, CG only          | 50 steps, η 0.85, no z-TV                      |
| ``diffusion_mbir``   | score   | VE PC + ADMM z-TV, 1 CG          | 2000 steps, r 0.16, ρ 10, λ 0.04               |

Config blocks ``ct.<method>`` override these per key; ``lam_limited_angle`` replaces ``lam`` in
limited-angle settings.
"""

from __future__ import annotations

import numpy as np

METHOD_PRIOR = {
    "diffusion_blend": "patch",
    "diffusion_blend_pp": "patch",
    "dds": "slice",
    "dds_2d": "slice",
    "diffusion_mbir": "score",
}

DEFAULTS = {
    "diffusion_blend": {"n_steps": 200, "eta": 0.85, "jump_every": 0, "rho": 1e-3, "lam": 5e-5, "cg_iter": 5},
    "diffusion_blend_pp": {"n_steps": 200, "eta": 0.85, "jump_every": 2, "jump": 3, "rho": 1e-3, "lam": 5e-5,
                           "cg_iter": 5},
    "dds": {"n_steps": 50, "eta": 0.85, "rho": 10.0, "lam": 0.04, "lam_limited_angle": 0.4, "cg_iter": 5},
    "dds_2d": {"n_steps": 50, "eta": 0.85, "rho": 0.0, "lam": 0.0, "cg_iter": 5},
    "diffusion_mbir": {"n_steps": 2000, "snr": 0.16, "rho": 10.0, "lam": 0.04, "cg_iter": 1},
}


def method_settings(method: str, params: dict | None, limited_angle: bool) -> dict:
    """Defaults of ``method`` updated by ``params``; ``lam_limited_angle`` applied when it applies."""
    if method not in METHOD_PRIOR:
        raise ValueError(f"CT diffusion method '{method}' is not one of {', '.join(METHOD_PRIOR)}")
    out = {**DEFAULTS[method], **(params or {})}
    lam_la = out.pop("lam_limited_angle", None)
    if limited_angle and lam_la is not None:
        out["lam"] = lam_la
    return out


def ct_diffusion_runner(method: str, model, geometry, params: dict | None = None, limited_angle: bool = False,
                        n_threads: int | None = None):
    """A function sinogram (S, V, D) numpy → volume (S, n, n) numpy for one CT diffusion method,
    with the prior (checkpoint stem ``model``) and the projector built once. Also returns the
    last sampler (for NFE / network-time bookkeeping) through the attribute ``run.last``."""
    import torch

    from diffrecon.devices import pick_device
    from diffrecon.models.inference import network_fn
    from diffrecon.models.loading import load_ct_prior
    from diffrecon.physics.ct import ParallelBeamCT
    from diffrecon.samplers.diffusion_blend import BlendConfig, DiffusionBlendSampler
    from diffrecon.samplers.diffusion_mbir import DiffusionMBIRSampler, MBIRConfig

    if model is None:
        raise ValueError(f"method '{method}' needs a trained {METHOD_PRIOR.get(method, '?')} prior (checkpoint path)")
    settings = method_settings(method, params, limited_angle)
    dev = pick_device(settings.pop("device", "auto"))
    precision = settings.pop("precision", "float32")
    net, process, meta = load_ct_prior(model, device=dev)
    kind = METHOD_PRIOR[method]
    if meta["kind"] != kind:
        raise ValueError(f"{model}: a '{meta['kind']}' prior, but method '{method}' needs a '{kind}' prior")
    op = ParallelBeamCT(geometry, n_threads=n_threads)   # takes and returns tensors on any device

    def run(sinogram: np.ndarray) -> np.ndarray:
        y = torch.from_numpy(np.ascontiguousarray(sinogram, dtype=np.float32)).to(dev)
        shape = (y.shape[0], geometry.n, geometry.n)
        if kind == "score":
            sampler = DiffusionMBIRSampler(network_fn(net, precision, settings.get("batch_limit", 64)), process,
                                           MBIRConfig.from_dict(settings))
        else:
            sampler = DiffusionBlendSampler(network_fn(net, precision), process,
                                            BlendConfig.from_dict({**settings, "prior": kind}))
        out = sampler.sample(y, op.A, op.A_adjoint, shape, op.normal_columns)
        run.last = sampler
        return out.float().cpu().numpy()

    run.last = None
    run.close = op.close
    return run
