"""Supervised CT baseline FBP-U-Net: an image-domain U-Net that cleans the FBP of one setting.

One network per CT setting (sparse view or limited angle), trained on the axial slices x0
(N, 1, H, W) of a dataset's train split with inputs computed once before training:

    x_fbp = FBP(A x0)                       (ASTRA, the setting's geometry, slice by slice)
    x̂     = f_θ(x_fbp),  f_θ(u) = u + g_θ(u)      residual U-Net
    loss  = mean |x̂ − x0|                    L1

f_θ is :class:`~diffrecon.models.networks.ImageUNet`. CT volumes live on a fixed [0, 1] scale, so
no per-slice normalisation is needed. At test time (:func:`fbp_unet_reconstruct`) the measured
sinogram's FBP goes through the network.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from diffrecon.models.networks import image_unet

log = logging.getLogger("diffrecon.training")


def fbp_pairs(slices: torch.Tensor, geometry, n_threads: int | None = None) -> torch.Tensor:
    """(N, 2, H, W): channel 0 the FBP of the projected slice, channel 1 the slice itself."""
    from diffrecon.physics.ct import ParallelBeamCT

    with ParallelBeamCT(geometry, n_threads=n_threads) as op:
        fbp = op.A_dagger(op.A(slices[:, 0].float()))
    return torch.stack([fbp, slices[:, 0].float()], dim=1)


def pair_loss(model: nn.Module, pairs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """mean |f(x_fbp) − x0| for a batch of (input, target) pairs (B, 2, H, W)."""
    return (model(pairs[:, :1]) - pairs[:, 1:]).abs().mean()


def train_fbp_unet(manifest: dict, setting, cfg: dict, out_stem, device="auto", progress: bool = True,
                   n_threads: int | None = None) -> dict:
    """Train the FBP-U-Net of one :class:`~diffrecon.settings.CTSetting` (``cfg``: ``model``, ``train``)."""
    from diffrecon.data.training_sets import ct_slices, tensor_hash
    from diffrecon.devices import pick_device
    from diffrecon.models.networks import count_parameters
    from diffrecon.models.training import TrainConfig, train

    slices = ct_slices(manifest)
    geometry = setting.geometry(slices.shape[-1], cfg.get("projector", "linear"))
    pairs = fbp_pairs(slices, geometry, n_threads)
    torch.manual_seed(cfg["train"].get("seed", 0))
    model = image_unet(cfg["model"], slices.shape[-1])
    dev = pick_device(device)
    log.info("fbp_unet %s: %d parameters, %d training slices, device %s", setting.name, count_parameters(model),
             len(slices), dev)
    meta = {"method": "unet", "kind": "fbp_unet", "loss": "l1", "model": cfg["model"], "setting": setting.name,
            "image_size": slices.shape[-1], "dataset": manifest["name"], "data_hash": tensor_hash(slices),
            "n_train_slices": len(slices)}
    return train(model, pairs, pair_loss, TrainConfig.from_dict(cfg["train"]), out_stem, meta=meta, device=dev,
                 progress=progress)


@torch.no_grad()
def fbp_unet_reconstruct(sinogram: np.ndarray, geometry, network: nn.Module, batch_limit: int = 64,
                         n_threads: int | None = None) -> np.ndarray:
    """f(FBP(y)) slice by slice; ``sinogram`` (S, V, D); returns (S, n, n) float32."""
    from diffrecon.physics.ct import ParallelBeamCT

    with ParallelBeamCT(geometry, n_threads=n_threads) as op:
        fbp = op.A_dagger(torch.from_numpy(np.ascontiguousarray(sinogram, dtype=np.float32)))[:, None]
    device = next(network.parameters()).device
    out = torch.empty_like(fbp)
    for i in range(0, len(fbp), batch_limit):
        out[i:i + batch_limit] = network(fbp[i:i + batch_limit].to(device)).cpu()
    return out[:, 0].numpy().astype(np.float32)
