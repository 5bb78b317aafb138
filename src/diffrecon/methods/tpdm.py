"""TPDM as a CT method: the axial DDS prior (``ct_slice``) and the perpendicular prior
(``ct_slice_perp``) alternated by :class:`~diffrecon.samplers.tpdm.TPDMSampler`.

The workflow passes the perpendicular prior as the method's model and the axial one as the
parameter ``axial_model`` (a checkpoint stem; :attr:`~diffrecon.methods.Method.extra_models`).
Both are VP ε-networks (the original's are VE NCSN++ score networks; the project's axial VP
prior is shared with DDS). Data consistency as the original: DPS (``dc: dps``, ζ on the VP
state, no operator-scale conversion: the original differentiates through its own forward model,
whose gradient is its true adjoint); ``dc: proximal`` gives DDS-2D's proximal CG instead. Parameters: the sampler's fields
(:class:`~diffrecon.samplers.tpdm.TPDMConfig`; ``z_window`` defaults to the perpendicular
prior's training window), ``precision``, ``device``, ``n_threads``, ``batch_limit`` or
``memory_budget_gb`` (then each network measured at its own image size:
n × n axial, z_window × n perpendicular), and ``dc_scale`` as for the other CT diffusion
methods (γ, ρ, λ converted to the true adjoint, docs/ct_scaling.md).
"""

from __future__ import annotations

from diffrecon.methods.ct_diffusion import CTDiffusionRunner


class TPDMRunner(CTDiffusionRunner):
    """Loads both priors (checked for kind and image size) and the projector once."""

    def __init__(self, method, problem, params: dict, model):
        from diffrecon.errors import CheckpointError
        from diffrecon.methods.runner import check_trained_for
        from diffrecon.models.loading import load_ct_prior

        params = dict(params)
        axial = params.pop("axial_model")
        super().__init__(method, problem, params, model)          # the perpendicular prior, DC conversion
        self.perp_network, self.perp_process = self.network, self.process
        self.z_window = int(self.settings.pop("z_window", 0) or self._meta_window(model))
        self.axial_network, self.process, meta = load_ct_prior(axial, device=self.device)
        if meta["kind"] != "slice":
            raise CheckpointError(f"{axial}: a '{meta['kind']}' prior, but TPDM's axial prior is a 'slice' prior")
        check_trained_for(axial, meta, problem, params)
        if self.process.n_train_steps != self.perp_process.n_train_steps or not bool(
                (self.process.alphas_cumprod == self.perp_process.alphas_cumprod).all()):
            raise CheckpointError(f"{axial} and {model}: the two priors were trained with different noise schedules")
        self.sampler_params.update({"z_window": self.z_window, "axial_model": str(axial)})
        self._set_perp_limits()

    @staticmethod
    def _meta_window(model) -> int:
        import json
        from pathlib import Path

        return int(json.loads(Path(model).with_suffix(".json").read_text())["z_window"])

    def _set_batch_limit(self) -> None:
        """Deferred until both networks are loaded (:meth:`_set_perp_limits`)."""
        self._budget = self.settings.pop("memory_budget_gb", None)
        self.settings["batch_limit"] = int(self.settings.get("batch_limit", 64))

    def _fn(self, network):
        """The function the memory budget measures: forward only, or forward + backward (dc = dps)."""
        from diffrecon.models.inference import network_fn
        from diffrecon.samplers.denoisers import grad_network_fn

        dps = self.settings.get("dc", "dps") == "dps"
        return (grad_network_fn if dps else network_fn)(network, self.precision)

    def _set_perp_limits(self) -> None:
        from diffrecon.samplers.memory import budget_batch_limit, example_inputs

        if self._budget is None:
            self.settings["batch_limit_perp"] = int(self.settings.get("batch_limit_perp", 0) or self.settings["batch_limit"])
        else:
            n, budget = self.geometry.n, {"memory_budget_gb": self._budget}
            self.settings["batch_limit"] = budget_batch_limit(
                budget, self._fn(self.axial_network), example_inputs("noise", 1, n, self.device),
                self.device, 64)
            self.settings["batch_limit_perp"] = budget_batch_limit(
                budget, self._fn(self.perp_network),
                example_inputs("noise", 1, (self.z_window, n), self.device), self.device, 64)
            self.sampler_params["memory_budget_gb"] = self._budget
        self.sampler_params.update({k: self.settings[k] for k in ("batch_limit", "batch_limit_perp")})

    def _sampler(self):
        from diffrecon.models.inference import network_fn
        from diffrecon.samplers.denoisers import grad_network_fn
        from diffrecon.samplers.tpdm import TPDMConfig, TPDMSampler

        cfg = TPDMConfig.from_dict({**self.settings, "z_window": self.z_window})
        grads = (grad_network_fn(self.axial_network, self.precision), grad_network_fn(self.perp_network, self.precision))
        return TPDMSampler(network_fn(self.axial_network, self.precision), network_fn(self.perp_network, self.precision),
                           self.process, cfg, grad_fns=grads if cfg.dc == "dps" else None)


def build(method, problem, params: dict, model=None) -> TPDMRunner:
    return TPDMRunner(method, problem, params, model)
