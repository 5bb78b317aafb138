"""The CT diffusion methods, as settings of two samplers over one trained prior.

| method               | prior (model) | sampler                                            |
|----------------------|---------------|----------------------------------------------------|
| ``diffusion_blend``  | ``ct_patch``  | DDIM + blended 3-slice patch ε, adjacent partitions |
| ``diffusion_blend_pp``| ``ct_patch`` | … adjacent and jump-3 partitions alternating       |
| ``dds``              | ``ct_slice``  | DDIM + slice ε, one ADMM z-TV iteration per step   |
| ``dds_2d``           | ``ct_slice``  | DDIM + slice ε, proximal CG (I + γAᵀA)x = x̂0 + γAᵀy |
| ``diffusion_mbir``   | ``ct_score``  | VE predictor-corrector + ADMM z-TV (1 CG)          |

Defaults (the papers' / original code's values) are the registry entries' ``defaults``
(:data:`diffrecon.methods.METHODS`); config blocks ``ct.<method>`` override them per key. Besides
the sampler fields (:class:`~diffrecon.samplers.diffusion_blend.BlendConfig`,
:class:`~diffrecon.samplers.diffusion_mbir.MBIRConfig`): ``precision`` (network arithmetic),
``device``, ``n_threads`` (ASTRA CPU threads), ``batch_limit`` (patches or slices per network
call, default 64) or ``memory_budget_gb`` (GiB of network activations: the batch limit from one
measurement of the prior at this image size, :mod:`diffrecon.samplers.memory`; the result is
the unchunked one's to float rounding), and ``dc_scale``:

* ``original`` (default): ``rho``, ``lam`` and ``gamma`` are in the originals' units — their
  back-projector is c·Aᵀ with c = π/(2V), V = ``geometry.n_views``, on 256² slices
  (``dc_reference_size``) — and the runner converts them to the true adjoint this project uses
  on n² slices: ρ = ρ_o·(2V/π)·(n/256), λ likewise, γ = γ_o·(π/2V)·(256/n)
  (:func:`~diffrecon.samplers.admm_tv.to_true_adjoint`, docs/ct_scaling.md);
* ``native``: the values are used as given, with the true adjoint.

The runner logs the converted values and keeps them in ``sampler_params`` (the stage records
them in the reconstruction file).
"""

from __future__ import annotations

import logging

import numpy as np

from diffrecon.methods.runner import Result, Runner

log = logging.getLogger("diffrecon")

#: trained model → the prior kind recorded in its checkpoint
PRIOR_KIND = {"ct_patch": "patch", "ct_slice": "slice", "ct_score": "score", "ct_slice_perp": "slice_perp"}


class CTDiffusionRunner(Runner):
    """Loads the prior and builds the projector once; one sampler run per volume."""

    def __init__(self, method, problem, params: dict, model):
        import torch

        from diffrecon.devices import pick_device
        from diffrecon.errors import CheckpointError
        from diffrecon.methods.runner import check_trained_for
        from diffrecon.models.loading import load_ct_prior
        from diffrecon.physics.ct import ParallelBeamCT

        from diffrecon.samplers.admm_tv import to_true_adjoint

        settings = dict(params)
        n_threads = settings.pop("n_threads", None)
        dc_scale = settings.pop("dc_scale", "original")
        reference = int(settings.pop("dc_reference_size", 256))
        settings = to_true_adjoint(settings, problem.geometry.n_views, dc_scale, n=problem.geometry.n,
                                   reference_size=reference)
        self.sampler_params = {**settings, "dc_scale": dc_scale, "n_views": problem.geometry.n_views,
                               "n": problem.geometry.n, "dc_reference_size": reference}
        dc = {k: settings[k] for k in ("rho", "lam", "gamma") if k in settings}
        log.info("%s: data-consistency parameters (%s units → true adjoint, %d views): %s", method.name,
                 dc_scale, problem.geometry.n_views, ", ".join(f"{k} = {v:.6g}" for k, v in dc.items()))
        self.device = pick_device(settings.pop("device", "auto"))
        self.precision = settings.pop("precision", "float32")
        self.kind = PRIOR_KIND[method.model]
        self.network, self.process, meta = load_ct_prior(model, device=self.device)
        if meta["kind"] != self.kind:
            raise CheckpointError(f"{model}: a '{meta['kind']}' prior, but method '{method.name}' needs a "
                                  f"'{self.kind}' prior")
        check_trained_for(model, meta, problem, params)
        self.settings, self.geometry = settings, problem.geometry
        self._set_batch_limit()
        self.sampler_params["batch_limit"] = self.settings["batch_limit"]
        self.op = ParallelBeamCT(problem.geometry, n_threads=n_threads)   # tensors on any device
        self._torch = torch

    def _set_batch_limit(self) -> None:
        """``settings["batch_limit"]``: patches / slices per network call, from ``memory_budget_gb``
        (the network measured at this image size and precision) or as given (default 64)."""
        from diffrecon.models.inference import network_fn
        from diffrecon.samplers.memory import budget_batch_limit, example_inputs

        budget = self.settings.pop("memory_budget_gb", None)
        if budget is None:
            self.settings["batch_limit"] = int(self.settings.get("batch_limit", 64))
            return
        kind = {"patch": "labelled", "slice": "noise", "score": "score"}[self.kind]
        example = example_inputs(kind, 3 if self.kind == "patch" else 1, self.geometry.n, self.device)
        self.settings["batch_limit"] = budget_batch_limit({"memory_budget_gb": budget},
                                                          network_fn(self.network, self.precision), example,
                                                          self.device, 64)
        self.sampler_params["memory_budget_gb"] = budget

    def _sampler(self):
        from diffrecon.models.inference import network_fn
        from diffrecon.samplers.diffusion_blend import BlendConfig, DiffusionBlendSampler
        from diffrecon.samplers.diffusion_mbir import DiffusionMBIRSampler, MBIRConfig

        if self.kind == "score":
            return DiffusionMBIRSampler(network_fn(self.network, self.precision, self.settings["batch_limit"]),
                                        self.process, MBIRConfig.from_dict(self.settings))
        return DiffusionBlendSampler(network_fn(self.network, self.precision), self.process,
                                     BlendConfig.from_dict({**self.settings, "prior": self.kind}))

    def __call__(self, sinogram: np.ndarray, block=None) -> Result:
        torch = self._torch
        y = torch.from_numpy(np.ascontiguousarray(sinogram, dtype=np.float32)).to(self.device)
        shape = (y.shape[0], self.geometry.n, self.geometry.n)
        sampler = self._sampler()
        out = sampler.sample(y, self.op, shape)
        return Result(reconstruction=out.float().cpu().numpy(), nfe=sampler.nfe,
                      network_seconds=sampler.network_seconds, provenance={"seed": self.settings.get("seed", 0)})

    def close(self) -> None:
        self.op.close()


def build(method, problem, params: dict, model=None) -> CTDiffusionRunner:
    return CTDiffusionRunner(method, problem, params, model)
