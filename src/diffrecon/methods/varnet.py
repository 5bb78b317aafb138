"""Method ``varnet``: E2E-VarNet (fastMRI's ``VarNet``) of the setting's mask family on multi-coil
k-space (:mod:`diffrecon.baselines.varnet`); the registry limits it to multi-coil cells."""

from __future__ import annotations

from diffrecon.methods.runner import FunctionRunner


def build(method, problem, params: dict, model=None) -> FunctionRunner:
    from diffrecon.baselines.varnet import varnet_reconstruct
    from diffrecon.devices import pick_device
    from diffrecon.methods.runner import check_trained_for
    from diffrecon.models.loading import load_varnet

    device = pick_device(params.get("device", "auto"))
    network, meta = load_varnet(model, device=device)
    check_trained_for(model, meta, problem, params)
    batch_limit = int(params.get("batch_limit", 8))
    acs = problem.acs_width or meta.get("num_low_frequencies")
    return FunctionRunner(lambda kspace: varnet_reconstruct(kspace, problem.mask, network, acs,
                                                            batch_limit=batch_limit), device=device)
