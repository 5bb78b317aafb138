"""Training recipes: which data, network, SDE and loss each method's prior uses."""

from __future__ import annotations

import logging

import torch

from diffrecon.data.training_sets import magnitude_slices, tensor_hash
from diffrecon.diffusion.networks import ScoreNetwork, UNetConfig, count_parameters
from diffrecon.diffusion.sde import VESDE
from diffrecon.diffusion.training import TrainConfig, train, ve_dsm_loss

log = logging.getLogger("diffrecon.training")


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def score_network(cfg: dict, size: int) -> ScoreNetwork:
    return ScoreNetwork(UNetConfig.from_dict({**cfg["model"], "sample_size": size, "in_channels": 1,
                                              "out_channels": 1, "time_embedding": "fourier"}))


def train_score_mri(manifest: dict, cfg: dict, out_stem, device: str = "auto", progress: bool = True) -> dict:
    """Train the VE score model on the magnitude slices of the manifest's train split.

    ``cfg`` is the config's ``score_mri`` block: ``model`` (UNet sizes), ``sde``
    (sigma_min, sigma_max) and ``train`` (:class:`TrainConfig` fields).
    """
    data = magnitude_slices(manifest, "train")
    sde = VESDE(cfg["sde"]["sigma_min"], cfg["sde"]["sigma_max"])
    torch.manual_seed(cfg["train"].get("seed", 0))           # weight initialisation
    model = score_network(cfg, data.shape[-1])
    dev = pick_device(device)
    log.info("score model: %d parameters, %d training slices, device %s", count_parameters(model), len(data), dev)
    meta = {"method": "score_mri", "model": cfg["model"], "sde": cfg["sde"], "image_size": data.shape[-1],
            "dataset": manifest["name"], "data_hash": tensor_hash(data), "n_train_slices": len(data)}
    return train(model, data, ve_dsm_loss(sde), TrainConfig.from_dict(cfg["train"]), out_stem, meta=meta,
                 device=dev, progress=progress)


def load_score_network(stem, expected_sha256: str | None = None, use_ema: bool = True, device="cpu"):
    """Rebuild a trained :class:`ScoreNetwork` (EMA weights by default) and its SDE from a checkpoint."""
    from diffrecon.diffusion.checkpoint import load_checkpoint, unprefixed

    tensors, meta = load_checkpoint(stem, expected_sha256)
    model = score_network({"model": meta["model"]}, meta["image_size"])
    weights = unprefixed("ema" if use_ema and any(k.startswith("ema.") for k in tensors) else "model", tensors)
    model.load_state_dict(weights)
    sde = VESDE(meta["sde"]["sigma_min"], meta["sde"]["sigma_max"])
    return model.to(device).eval().requires_grad_(False), sde, meta
