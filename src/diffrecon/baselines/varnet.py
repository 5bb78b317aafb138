"""Supervised multi-coil baseline: E2E-VarNet (Sriram et al., MICCAI 2020), fastMRI's own network.

The network is ``fastmri.models.VarNet`` (:mod:`diffrecon.models.fastmri_nets`) with its
sensitivity-estimation U-Net, called in fastMRI's conventions: masked k-space as real tensors
(B, C, H, W, 2), the mask (B, 1, H, W, 1) bool (a 1-D mask's rows are equal, so this is fastMRI's
(B, 1, 1, W, 1) broadcast over the rows; 2-D masks work the same way), ``num_low_frequencies``
the side of the fully sampled centre (the ACS width); output the RSS magnitude (B, H, W). One
network is trained per *mask family* (kind x R x ACS fraction, one seeded mask), as the U-Net.

Training set (:func:`multicoil_slices`): the fully sampled coil images x_c of a dataset's train
split, each volume divided by the maximum of its RSS target (the scale the ``simulate`` stage
gives test volumes), as real tensors (N, C, H, W, 2). Per step, with F the centred orthonormal
DFT (``fastmri.fft2c`` = :func:`~diffrecon.physics.fft.fft2c`) and M the family's mask:

    y_c  = M ⊙ F x_c                         masked k-space, (B, C, H, W, 2)
    x̂    = VarNet(y, M, num_low_frequencies)  (B, H, W)
    x    = RSS_c |x_c|                        target, (B, H, W)
    loss = 1 − SSIM(x̂, x; data_range 1)       fastMRI's ``SSIMLoss`` (7 x 7 window), as the
                                              fastMRI reference training of E2E-VarNet (data_range:
                                              the volume maximum, 1 after the scaling above)
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch
from torch import nn

from diffrecon.baselines.unet import MaskSpec
from diffrecon.models.fastmri_nets import FASTMRI_VARNET, fastmri_varnet
from diffrecon.models.networks import count_parameters

log = logging.getLogger("diffrecon.training")

__all__ = ["multicoil_slices", "varnet_mask", "varnet_loss", "fit_varnet", "train_varnet", "varnet_reconstruct"]


def multicoil_slices(manifest: dict, split: str = "train") -> torch.Tensor:
    """Coil images of every slice of ``split`` as (N, C, H, W, 2) float32, each volume divided by its RSS maximum.

    Every file must be multi-coil with the same coil count and grid (one line naming the first that is not).
    """
    from diffrecon.data.fastmri import coil_images, read_volume
    from diffrecon.errors import DataFormatError

    out, shape = [], None
    for path in manifest["splits"][split]:
        vol = read_volume(path)
        if not vol.multicoil:
            raise DataFormatError(f"{path}: a single-coil file: E2E-VarNet trains on multi-coil k-space")
        coils = coil_images(vol)                                     # (S, C, h, w) complex64
        if shape is None:
            shape = coils.shape[1:]
        elif coils.shape[1:] != shape:
            raise DataFormatError(f"{path}: coils x grid {coils.shape[1:]} differ from the first file's {shape}")
        scale = float(np.sqrt((np.abs(coils) ** 2).sum(1)).max()) or 1.0
        out.append(torch.view_as_real(torch.from_numpy(coils / scale)))
    if not out:
        raise ValueError(f"dataset {manifest['name']}: split '{split}' has no files")
    return torch.cat(out).float().contiguous()


def varnet_mask(mask, batch: int, device=None) -> torch.Tensor:
    """The (H, W) 0/1 ``mask`` as fastMRI's bool mask (batch, 1, H, W, 1)."""
    m = torch.as_tensor(np.asarray(getattr(mask, "array", mask)) > 0, device=device)
    return m[None, None, :, :, None].expand(batch, 1, *m.shape, 1)


def varnet_loss(mask, num_low_frequencies: int | None) -> Callable:
    """fastMRI's SSIM loss of E2E-VarNet, for :func:`~diffrecon.models.training.train`.

    ``loss(model, x0, generator)``: x0 coil images (B, C, H, W, 2); returns 1 − SSIM(VarNet(M F x0), RSS x0)
    (module docstring; the generator is unused).
    """
    import fastmri
    from fastmri.losses import SSIMLoss

    ssim = SSIMLoss()
    nlf = int(num_low_frequencies) if num_low_frequencies else None

    def loss(model: nn.Module, x0: torch.Tensor, gen) -> torch.Tensor:
        m = varnet_mask(mask, x0.shape[0], x0.device)
        y = fastmri.fft2c(x0) * m
        target = fastmri.rss(fastmri.complex_abs(x0), dim=1)
        out = model(y, m, nlf)
        return ssim.to(x0.device)(out[:, None], target[:, None], torch.ones(x0.shape[0], device=x0.device))

    return loss


def fit_varnet(data: torch.Tensor, mask_spec, cfg: dict, out_stem, device="auto", meta: dict | None = None,
               progress: bool = True) -> dict:
    """Train E2E-VarNet on coil images ``data`` (N, C, H, W, 2) for one mask family.

    ``mask_spec``: a :class:`~diffrecon.baselines.unet.MaskSpec` or a (kind, acceleration,
    acs_fraction, seed) tuple (the mask is built for (H, W)); ``cfg``: ``model`` (``cascades``,
    ``chans``, ``pools``, ``sens_chans``, ``sens_pools``) and ``train``
    (:class:`~diffrecon.models.training.TrainConfig` fields). Checkpoints, resume and EMA are those of
    :func:`~diffrecon.models.training.train`; returns its sidecar.
    """
    from diffrecon.data.training_sets import tensor_hash
    from diffrecon.devices import pick_device
    from diffrecon.models.training import TrainConfig, train
    from diffrecon.physics.masks import make_mask

    if data.ndim != 5 or data.shape[-1] != 2:
        raise ValueError(f"E2E-VarNet trains on coil images (N, C, H, W, 2), got {tuple(data.shape)}")
    spec = MaskSpec(*mask_spec)
    H, W = data.shape[-3:-1]
    if H != W:
        raise ValueError(f"E2E-VarNet: square images only (the checkpoint records one image_size), got {H} x {W}")
    mask = make_mask(spec.kind, (H, W), spec.acceleration, spec.acs_fraction, spec.seed)
    nlf = mask.to_dict()["acs_width"]
    torch.manual_seed(cfg["train"].get("seed", 0))                # weight initialisation
    model = fastmri_varnet(cfg["model"])
    dev = pick_device(device)
    log.info("varnet %s-R%g-acs%g: %d parameters, %d training slices of %d coils, effective R %.2f, device %s",
             spec.kind, spec.acceleration, spec.acs_fraction, count_parameters(model), len(data), data.shape[1],
             mask.effective_acceleration, dev)
    run_meta = {"method": "varnet", "architecture": FASTMRI_VARNET, "loss": "ssim", "model": cfg["model"],
                "mask": {**spec._asdict(), **mask.to_dict()}, "num_low_frequencies": nlf, "image_size": int(H),
                "n_coils": int(data.shape[1]), "data_hash": tensor_hash(data), "n_train_slices": len(data),
                **(meta or {})}
    return train(model, data, varnet_loss(mask, nlf), TrainConfig.from_dict(cfg["train"]), out_stem,
                 meta=run_meta, device=dev, progress=progress)


def train_varnet(manifest: dict, mask_spec, cfg: dict, out_stem, device="auto", progress: bool = True) -> dict:
    """Train the E2E-VarNet of one mask family on the manifest's train split (``cfg``: the ``mri.varnet`` block)."""
    return fit_varnet(multicoil_slices(manifest, "train"), mask_spec, cfg, out_stem, device=device,
                      meta={"dataset": manifest["name"]}, progress=progress)


@torch.no_grad()
def varnet_reconstruct(kspace: np.ndarray, mask: np.ndarray, network: nn.Module,
                       num_low_frequencies: int | None = None, batch_limit: int = 8) -> np.ndarray:
    """VarNet(y, M, num_low_frequencies) slice by slice; ``kspace`` (S, C, H, W) complex measured (masked),
    ``mask`` (H, W); returns the RSS magnitude (S, H, W) float32 (``num_low_frequencies`` None or 0:
    fastMRI finds the fully sampled centre columns in the mask). Runs on the network's device."""
    if kspace.ndim != 4:
        raise ValueError(f"E2E-VarNet reconstructs multi-coil k-space (S, C, H, W), got shape {kspace.shape}")
    if tuple(mask.shape) != tuple(kspace.shape[-2:]):
        raise ValueError(f"mask {tuple(mask.shape)} does not fit the k-space grid {tuple(kspace.shape[-2:])}")
    device = next(network.parameters()).device
    y = torch.view_as_real(torch.from_numpy(np.ascontiguousarray(kspace, dtype=np.complex64)))   # (S, C, H, W, 2)
    nlf = int(num_low_frequencies) if num_low_frequencies else None
    out = torch.empty(y.shape[0], *y.shape[-3:-1])
    for i in range(0, len(y), batch_limit):
        yb = y[i:i + batch_limit].to(device)
        out[i:i + batch_limit] = network(yb, varnet_mask(mask, yb.shape[0], device), nlf).cpu()
    return out.numpy().astype(np.float32)
