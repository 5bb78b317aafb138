"""Method ``unet``: the supervised fastMRI U-Net of the setting's mask family
(:mod:`diffrecon.baselines.unet`), applied to the zero-filled magnitude slice by slice."""

from __future__ import annotations

from diffrecon.methods.runner import FunctionRunner


def build(method, problem, params: dict, model=None) -> FunctionRunner:
    from diffrecon.baselines.unet import unet_reconstruct
    from diffrecon.devices import pick_device
    from diffrecon.errors import CheckpointError
    from diffrecon.methods.runner import check_trained_for
    from diffrecon.models.loading import load_unet

    device = pick_device(params.get("device", "auto"))
    network, meta = load_unet(model, device=device)
    if meta.get("kind") == "fbp_unet":
        raise CheckpointError(f"{model}: a CT FBP-U-Net checkpoint, not an MRI U-Net")
    if meta.get("architecture") != "fastmri_unet":
        raise CheckpointError(f"{model}: an MRI U-Net of the earlier diffusers network, not the fastMRI U-Net: "
                              "delete it and retrain (the workflow's train_unet does)")
    check_trained_for(model, meta, problem, params)
    batch_limit = int(params.get("batch_limit", 64))
    return FunctionRunner(lambda kspace: unet_reconstruct(kspace, problem.mask, problem.coil_mode, network,
                                                          batch_limit=batch_limit), device=device)
