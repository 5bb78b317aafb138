"""Methods ``score`` (Algorithms 2 / 3 / 4 by coil mode) and ``score_hybrid`` (Algorithm 5):
score-MRI posterior sampling (:mod:`diffrecon.samplers.score_mri`) with a trained VE prior.

Parameters: the :class:`~diffrecon.samplers.score_mri.SamplerConfig` fields, ``batch_limit``
(images per network call) or ``memory_budget_gb`` (GiB of network activations: the batch limit
from one measurement of the network at the image size, :mod:`diffrecon.samplers.memory`), and
``device``. The noise is drawn per slice from (seed, sample, volume, slice index) seeds, so a
block of slices (:class:`~diffrecon.methods.runner.SliceBlock`) reconstructs to the numbers of
the whole volume's run. The result holds the posterior mean, the pixel-wise
standard deviation over ``n_samples`` samples, and the NFE of all samples.
"""

from __future__ import annotations

from diffrecon.methods.runner import Result, Runner, SliceBlock


class ScoreRunner(Runner):
    def __init__(self, problem, params: dict, model, method: str):
        from diffrecon.devices import pick_device
        from diffrecon.models.loading import load_score_network
        from diffrecon.samplers.score_mri import ALGORITHM_OF, SamplerConfig

        if (method, problem.coil_mode) not in ALGORITHM_OF:
            raise ValueError(f"method '{method}' does not apply to coil mode '{problem.coil_mode}'")
        self.problem, self.method = problem, method
        self.device = pick_device(params.get("device", "auto"))
        from diffrecon.methods.runner import check_trained_for

        self.network, self.sde, meta = load_score_network(model, device=self.device)
        check_trained_for(model, meta, problem, params)
        self.cfg = SamplerConfig.from_dict(params)
        from diffrecon.models.inference import network_fn
        from diffrecon.samplers.memory import budget_batch_limit, example_inputs

        self.batch_limit = budget_batch_limit(params, network_fn(self.network, self.cfg.precision),
                                              example_inputs("score", 1, tuple(int(n) for n in problem.mask.shape[-2:]), self.device),
                                              self.device, 256)
        if params.get("memory_budget_gb") is not None:
            self.sampler_params = {"batch_limit": self.batch_limit, "memory_budget_gb": params["memory_budget_gb"]}

    def __call__(self, kspace, block: SliceBlock | None = None) -> Result:
        from diffrecon.samplers.score_mri import reconstruct_volume

        p, block = self.problem, block or SliceBlock()
        out = reconstruct_volume(kspace, p.mask, p.coil_mode, self.method, self.network, self.sde, self.cfg,
                                 acs_width=p.acs_width, device=self.device, batch_limit=self.batch_limit,
                                 case=block.case, first_slice=block.start)
        return Result(reconstruction=out["mean"], std=out["std"], nfe=out["nfe"],
                      network_seconds=out["network_seconds"], provenance={"seed": self.cfg.seed})


def build(method, problem, params: dict, model=None) -> ScoreRunner:
    return ScoreRunner(problem, params, model, method.name)
