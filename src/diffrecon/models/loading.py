"""Rebuild trained networks from checkpoints (:mod:`diffrecon.models.checkpoint`).

The sidecar of a checkpoint records the config block the network was built from (``model``,
``image_size`` and the method's extras), so the network is rebuilt with the same builder as in
training and then given the checkpoint's weights: the EMA weights (``ema.*``) by default when
present, else the raw ones (``model.*``). Every loader returns the network on ``device``, in
eval mode and without gradients, with the sidecar metadata; a given ``expected_sha256`` is
checked against the weights file before it is read.
"""

from __future__ import annotations

import torch
from torch import nn

from diffrecon.diffusion.sde import VESDE
from diffrecon.models.checkpoint import load_checkpoint, unprefixed
from diffrecon.models.networks import ImageUNet, NoiseNetwork, ScoreNetwork, image_unet
from diffrecon.models.recipes import noise_network, score_network, vp_schedule


def _with_weights(model: nn.Module, tensors: dict[str, torch.Tensor], use_ema: bool, device) -> nn.Module:
    """``model`` with the ``ema.*`` (if ``use_ema`` and present) or ``model.*`` weights, frozen on ``device``."""
    prefix = "ema" if use_ema and any(k.startswith("ema.") for k in tensors) else "model"
    model.load_state_dict(unprefixed(prefix, tensors))
    return model.to(device).eval().requires_grad_(False)


def load_score_network(stem, expected_sha256: str | None = None, use_ema: bool = True,
                       device="cpu") -> tuple[ScoreNetwork, VESDE, dict]:
    """The score-MRI prior of checkpoint ``stem``: (:class:`ScoreNetwork`, its :class:`VESDE`, metadata)."""
    tensors, meta = load_checkpoint(stem, expected_sha256)
    model = score_network({"model": meta["model"]}, meta["image_size"])
    sde = VESDE(meta["sde"]["sigma_min"], meta["sde"]["sigma_max"])
    return _with_weights(model, tensors, use_ema, device), sde, meta


def load_ct_prior(stem, expected_sha256: str | None = None, use_ema: bool = True, device="cpu"):
    """A CT prior of checkpoint ``stem`` by the sidecar's ``kind``: (network, process, metadata).

    ``patch`` (DiffusionBlend): 3-channel :class:`NoiseNetwork` with labels 0 … max spacing and its
    :class:`~diffrecon.diffusion.vp.VPSchedule`; ``slice`` (DDS): 1-channel :class:`NoiseNetwork`
    and its schedule; ``score`` (DiffusionMBIR): :class:`ScoreNetwork` and its :class:`VESDE`.
    """
    tensors, meta = load_checkpoint(stem, expected_sha256)
    kind = meta.get("kind")
    model: NoiseNetwork | ScoreNetwork
    if kind == "patch":
        model = noise_network({"model": meta["model"]}, meta["image_size"], 3, max(meta["spacings"]) + 1)
        process = vp_schedule(meta)
    elif kind == "slice":
        model = noise_network({"model": meta["model"]}, meta["image_size"], 1, None)
        process = vp_schedule(meta)
    elif kind == "score":
        model = score_network({"model": meta["model"]}, meta["image_size"])
        process = VESDE(meta["sde"]["sigma_min"], meta["sde"]["sigma_max"])
    else:
        raise ValueError(f"{stem}: not a CT prior checkpoint (kind {kind!r})")
    return _with_weights(model, tensors, use_ema, device), process, meta


def load_unet(stem, device="cpu", use_ema: bool = True, expected_sha256: str | None = None) -> tuple[ImageUNet, dict]:
    """A supervised :class:`ImageUNet` (MRI U-Net or CT FBP-U-Net, by the sidecar's ``kind``) and its metadata."""
    tensors, meta = load_checkpoint(stem, expected_sha256)
    if meta.get("method") != "unet":
        raise ValueError(f"{stem}: not a U-Net checkpoint (method {meta.get('method')!r})")
    model = image_unet(meta["model"], meta["image_size"])
    return _with_weights(model, tensors, use_ema, device), meta
