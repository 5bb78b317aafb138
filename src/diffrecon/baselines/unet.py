"""Supervised baseline: the fastMRI U-Net from the zero-filled magnitude to the target.

score-MRI compares its prior against a supervised U-Net trained for one sampling pattern, the
fastMRI U-Net baseline (Zbontar et al., 2018). The network is fastMRI's own class
(``fastmri.models.Unet``, :mod:`diffrecon.models.fastmri_nets`: its state-dict keys are
fastMRI's, so weights of the fastMRI reference training load), and inputs are normalised as the
fastMRI reference training does (``UnetDataTransform``): per-slice instance normalisation of the
zero-filled magnitude, the target normalised with the *input's* mean and std, both clamped to
[-6, 6], L1 loss in the normalised domain. One network is trained per *mask family* (mask kind x
acceleration R x ACS fraction, one seeded mask), on the magnitude slices x0 (N, 1, H, W) in
[0, 1] of a dataset's train split (:func:`~diffrecon.data.training_sets.magnitude_slices`):

    x_zf = | F^-1 (M ⊙ F x0) | = | A^+ A x0 |                 zero-filled magnitude, (B, 1, H, W)
    μ, σ = mean, std over the pixels of each x_zf slice         (B, 1, 1, 1), σ + 1e-11
    u    = clamp((x_zf − μ) / σ, −6, 6),  v = clamp((x0 − μ) / σ, −6, 6)
    loss = mean_{b, pixels} | f_θ(u) − v |                     L1 (fastMRI's U-Net baseline)
    x̂    = σ f_θ(u) + μ                                        the reconstruction (clipped at 0)

with F the centred orthonormal DFT (:func:`~diffrecon.physics.fft.fft2c`, the same convention as
``fastmri.fft2c``) and A = M F the single-coil operator (:class:`~diffrecon.physics.mri.SingleCoilMRI`).
The normalisation makes the network indifferent to the data's scale: scaling the k-space by c
scales the reconstruction by c (up to the clamp and the 1e-11).

At test time (:func:`unet_reconstruct`) the zero-filled image of the measured k-space is used
as is: |F^-1 y| for ``magnitude``/``singlecoil`` data, RSS_c |F^-1 y_c| for ``multicoil`` data
(as fastMRI's multi-coil U-Net baseline takes the RSS of the zero-filled coil images; the network
was trained on single-coil magnitude images, as score-MRI's prior is).
"""

from __future__ import annotations

import logging
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from diffrecon.models.fastmri_nets import FASTMRI_UNET, fastmri_unet
from diffrecon.models.networks import count_parameters
from diffrecon.physics.mri import SingleCoilMRI

log = logging.getLogger("diffrecon.training")

__all__ = ["MaskSpec", "instance_norm", "supervised_loss", "fit_unet", "train_unet", "unet_reconstruct"]

#: fastMRI's UnetDataTransform: eps added to the std, clamp of the normalised images
EPS, CLAMP = 1e-11, 6.0


class MaskSpec(NamedTuple):
    """One mask family: :func:`~diffrecon.physics.masks.make_mask` arguments except the shape."""

    kind: str
    acceleration: float
    acs_fraction: float
    seed: int = 0


def instance_norm(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fastMRI's ``normalize_instance`` per slice: (x − μ) / (σ + 1e-11) clamped to [−6, 6], μ, σ.

    ``x`` (B, 1, H, W); μ and σ (B, 1, 1, 1) are the mean and (unbiased) std of each slice.
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    std = x.std(dim=(-2, -1), keepdim=True) + EPS
    return ((x - mean) / std).clamp(-CLAMP, CLAMP), mean, std


def supervised_loss(mask) -> Callable:
    """fastMRI's U-Net loss on zero-filled inputs, for :func:`~diffrecon.models.training.train`.

    ``mask``: (H, W) 0/1 (numpy, tensor or :class:`~diffrecon.physics.masks.Mask`). The returned
    ``loss(model, x0, generator)`` takes clean slices x0 (B, 1, H, W) and returns
    mean |f(u) − v| with u, v the instance-normalised zero-filled input and target (module
    docstring; the generator is unused: no noise).
    """
    op = SingleCoilMRI(np.asarray(getattr(mask, "array", mask), dtype=np.float32))

    def loss(model: nn.Module, x0: torch.Tensor, gen) -> torch.Tensor:
        x_zf = op.A_dagger(op.A(x0)).abs().to(x0.dtype)
        u, mean, std = instance_norm(x_zf)
        v = ((x0 - mean) / std).clamp(-CLAMP, CLAMP)
        return (model(u) - v).abs().mean()

    return loss


def fit_unet(data: torch.Tensor, mask_spec, cfg: dict, out_stem, device="auto", meta: dict | None = None,
             progress: bool = True) -> dict:
    """Train a fastMRI ``Unet`` on slices ``data`` (N, 1, H, W) in [0, 1] for one mask family.

    ``mask_spec``: a :class:`MaskSpec` or a (kind, acceleration, acs_fraction, seed) tuple; the mask
    is built for the training size (H, W). ``cfg``: ``model`` (``chans``, ``num_pool_layers``,
    ``drop_prob``) and ``train`` (:class:`~diffrecon.models.training.TrainConfig` fields).
    Checkpoints, resume, EMA and the progress bar are those of
    :func:`~diffrecon.models.training.train`; returns its sidecar.
    """
    from diffrecon.data.training_sets import tensor_hash
    from diffrecon.devices import pick_device
    from diffrecon.models.training import TrainConfig, train
    from diffrecon.physics.masks import make_mask

    spec = MaskSpec(*mask_spec)
    mask = make_mask(spec.kind, tuple(data.shape[-2:]), spec.acceleration, spec.acs_fraction, spec.seed)
    torch.manual_seed(cfg["train"].get("seed", 0))                # weight initialisation
    model = fastmri_unet(cfg["model"])
    dev = pick_device(device)
    log.info("unet %s-R%g-acs%g: %d parameters, %d training slices, effective R %.2f, device %s", spec.kind,
             spec.acceleration, spec.acs_fraction, count_parameters(model), len(data), mask.effective_acceleration, dev)
    run_meta = {"method": "unet", "architecture": FASTMRI_UNET, "normalisation": "instance", "loss": "l1",
                "model": cfg["model"], "mask": {**spec._asdict(), **mask.to_dict()},
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
    """σ f((x_zf − μ) / σ) + μ slice by slice; ``kspace`` (S, H, W) or (S, C, H, W) measured; returns (S, H, W) float32.

    x_zf is :func:`~diffrecon.baselines.mri.zero_filled` (RSS over coils for ``multicoil``), μ, σ
    its per-slice mean and std (:func:`instance_norm`); the output is clipped at 0 (a magnitude).
    Runs on the network's device.
    """
    from diffrecon.baselines.mri import zero_filled

    device = next(network.parameters()).device
    x_zf = torch.from_numpy(zero_filled(kspace, mask, coil_mode))[:, None]          # (S, 1, H, W)
    out = torch.empty_like(x_zf)
    for i in range(0, len(x_zf), batch_limit):
        u, mean, std = instance_norm(x_zf[i:i + batch_limit].to(device))
        out[i:i + batch_limit] = (std * network(u) + mean).clamp_min(0).cpu()
    return out[:, 0].numpy().astype(np.float32)
