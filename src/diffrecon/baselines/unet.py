"""Supervised baseline: an image-domain U-Net from the zero-filled magnitude to the target.

score-MRI compares its prior against a supervised U-Net trained for one sampling pattern.
Here one network is trained per *mask family* (mask kind x acceleration R x ACS fraction,
one seeded mask), on the magnitude slices x0 (N, 1, H, W) in [0, 1] of a dataset's train
split (:func:`~diffrecon.data.training_sets.magnitude_slices`):

    x_zf = | F^-1 (M ⊙ F x0) | = | A^+ A x0 |          zero-filled magnitude, (B, 1, H, W)
    s    = max_pixels x_zf                             per-slice scale, (B, 1, 1, 1)
    x̂    = s * f_theta(x_zf / s),  f_theta(u) = u + g_theta(u)    residual U-Net
    loss = mean_{b, pixels} | x̂ - x0 |                 L1 (as the fastMRI U-Net baseline)

with F the centred orthonormal DFT (:func:`~diffrecon.physics.fft.fft2c`) and A = M F the
single-coil operator (:class:`~diffrecon.physics.mri.SingleCoilMRI`). The scale s makes
training and test inputs alike: every input has maximum 1, whatever the volume normalisation
of the test data; the output is multiplied back by s.

f_theta is :class:`~diffrecon.models.networks.ImageUNet`: g_theta a diffusers ``UNet2DModel`` with
a *positional* time embedding called at timestep 0 (a constant embedding, so a plain U-Net, no
diffusion). Input centring is off (inputs are in [0, 1]). Trained networks are rebuilt by
:func:`~diffrecon.models.loading.load_unet`.

At test time (:func:`unet_reconstruct`) the zero-filled image of the measured k-space is used
as is: |F^-1 y| for ``magnitude``/``singlecoil`` data, RSS_c |F^-1 y_c| for ``multicoil`` data
(the network was trained on single-coil magnitude images, as score-MRI's prior is; for complex
or multi-coil data the aliasing differs somewhat from the training inputs).
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from diffrecon.models.networks import count_parameters, image_unet
from diffrecon.physics.mri import SingleCoilMRI

log = logging.getLogger("diffrecon.training")

__all__ = ["MaskSpec", "supervised_loss", "fit_unet", "train_unet", "unet_reconstruct"]


class MaskSpec(NamedTuple):
    """One mask family: :func:`~diffrecon.physics.masks.make_mask` arguments except the shape."""

    kind: str
    acceleration: float
    acs_fraction: float
    seed: int = 0


def _slice_scale(x: torch.Tensor) -> torch.Tensor:
    """Per-slice maximum of (B, 1, H, W) images, (B, 1, 1, 1), floored to avoid dividing by 0."""
    return x.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)


def supervised_loss(mask) -> Callable:
    """L1 loss of the scaled residual U-Net on zero-filled inputs, for :func:`~diffrecon.models.training.train`.

    ``mask``: (H, W) 0/1 (numpy, tensor or :class:`~diffrecon.physics.masks.Mask`). The returned
    ``loss(model, x0, generator)`` takes clean slices x0 (B, 1, H, W) and returns
    mean |s f(x_zf / s) - x0| with x_zf = |F^-1(M F x0)| (the generator is unused: no noise).
    """
    op = SingleCoilMRI(np.asarray(getattr(mask, "array", mask), dtype=np.float32))

    def loss(model: nn.Module, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        x_zf = op.A_dagger(op.A(x0)).abs().to(x0.dtype)
        s = _slice_scale(x_zf)
        return (s * model(x_zf / s) - x0).abs().mean()

    return loss


def fit_unet(data: torch.Tensor, mask_spec, cfg: dict, out_stem, device="auto", meta: dict | None = None,
             progress: bool = True) -> dict:
    """Train an :class:`~diffrecon.models.networks.ImageUNet` on slices ``data`` (N, 1, H, W) in [0, 1]
    for one mask family.

    ``mask_spec``: a :class:`MaskSpec` or a (kind, acceleration, acs_fraction, seed) tuple; the mask
    is built for the training size (H, W). ``cfg``: ``model`` (UNet sizes) and ``train``
    (:class:`~diffrecon.models.training.TrainConfig` fields). Checkpoints, resume, EMA and the
    progress bar are those of :func:`~diffrecon.models.training.train`; returns its sidecar.
    """
    from diffrecon.data.training_sets import tensor_hash
    from diffrecon.devices import pick_device
    from diffrecon.models.training import TrainConfig, train
    from diffrecon.physics.masks import make_mask

    spec = MaskSpec(*mask_spec)
    mask = make_mask(spec.kind, tuple(data.shape[-2:]), spec.acceleration, spec.acs_fraction, spec.seed)
    torch.manual_seed(cfg["train"].get("seed", 0))                # weight initialisation
    model = image_unet(cfg["model"], data.shape[-1])
    dev = pick_device(device)
    log.info("unet %s-R%g-acs%g: %d parameters, %d training slices, effective R %.2f, device %s", spec.kind,
             spec.acceleration, spec.acs_fraction, count_parameters(model), len(data), mask.effective_acceleration, dev)
    run_meta = {"method": "unet", "loss": "l1", "model": cfg["model"], "mask": {**spec._asdict(), **mask.to_dict()},
                "image_size": data.shape[-1], "data_hash": tensor_hash(data), "n_train_slices": len(data),
                **(meta or {})}
    return train(model, data, supervised_loss(mask), TrainConfig.from_dict(cfg["train"]), out_stem,
                 meta=run_meta, device=dev, progress=progress)


def train_unet(manifest: dict, mask_spec, cfg: dict, out_stem, device="auto", progress: bool = True) -> dict:
    """Train the supervised U-Net of one mask family on the manifest's train split (see :func:`fit_unet`).

    ``cfg`` is the config's ``mri.unet`` block (``model``, ``train``).
    """
    from diffrecon.data.training_sets import magnitude_slices

    data = magnitude_slices(manifest, "train")
    return fit_unet(data, mask_spec, cfg, out_stem, device=device, meta={"dataset": manifest["name"]},
                    progress=progress)


@torch.no_grad()
def unet_reconstruct(kspace: np.ndarray, mask: np.ndarray, coil_mode: str, network: nn.Module,
                     batch_limit: int = 64) -> np.ndarray:
    """s * f(x_zf / s) slice by slice; ``kspace`` (S, H, W) or (S, C, H, W) measured; returns (S, H, W) float32.

    x_zf is :func:`~diffrecon.baselines.mri.zero_filled` (RSS over coils for ``multicoil``), s its
    per-slice maximum; the output is clipped at 0 (a magnitude). Runs on the network's device.
    """
    from diffrecon.baselines.mri import zero_filled

    device = next(network.parameters()).device
    x_zf = torch.from_numpy(zero_filled(kspace, mask, coil_mode))[:, None]          # (S, 1, H, W)
    out = torch.empty_like(x_zf)
    for i in range(0, len(x_zf), batch_limit):
        x = x_zf[i:i + batch_limit].to(device)
        s = _slice_scale(x)
        out[i:i + batch_limit] = (s * network(x / s)).clamp_min(0).cpu()
    return out[:, 0].numpy().astype(np.float32)
