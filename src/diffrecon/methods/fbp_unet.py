"""Method ``fbp_unet``: FBP followed by the residual U-Net trained for the setting
(:mod:`diffrecon.baselines.fbp_unet`). The checkpoint must be an FBP-U-Net of the same setting
(any setting for a user sinogram)."""

from __future__ import annotations

from diffrecon.methods.runner import FunctionRunner


def build(method, problem, params: dict, model=None) -> FunctionRunner:
    from diffrecon.baselines.fbp_unet import fbp_unet_reconstruct
    from diffrecon.devices import pick_device
    from diffrecon.models.loading import load_unet

    device = pick_device(params.get("device", "auto"))
    from diffrecon.errors import CheckpointError
    from diffrecon.methods.runner import check_trained_for

    network, meta = load_unet(model, device=device)
    if meta.get("kind") != "fbp_unet":
        raise CheckpointError(f"{model}: not an FBP-U-Net checkpoint (an MRI U-Net?)")
    check_trained_for(model, meta, problem, params)
    n_threads = params.get("n_threads")
    return FunctionRunner(lambda sinogram: fbp_unet_reconstruct(sinogram, problem.geometry, network,
                                                                n_threads=n_threads), device=device)
