"""Training recipes: which data, network, SDE and loss each method's prior uses."""

from __future__ import annotations

import logging

import torch

from diffrecon.devices import pick_device  # noqa: F401  (re-exported)
from diffrecon.data.training_sets import ct_patches, ct_slices, magnitude_slices, tensor_hash
from diffrecon.diffusion.networks import NoiseNetwork, ScoreNetwork, UNetConfig, count_parameters
from diffrecon.diffusion.sde import VESDE
from diffrecon.diffusion.training import TrainConfig, train, ve_dsm_loss
from diffrecon.diffusion.vp import VPSchedule, vp_eps_loss

log = logging.getLogger("diffrecon.training")


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


# ------------------------------------------------------------------------------------ CT priors
def noise_network(cfg: dict, size: int, channels: int, n_labels: int | None) -> NoiseNetwork:
    return NoiseNetwork(UNetConfig.from_dict({**cfg["model"], "sample_size": size, "in_channels": channels,
                                              "out_channels": channels, "time_embedding": "positional",
                                              "num_class_embeds": n_labels}))


def vp_schedule(cfg: dict) -> VPSchedule:
    s = cfg.get("schedule", {})
    return VPSchedule(s.get("beta_start", 1e-4), s.get("beta_end", 0.02), s.get("n_train_steps", 1000))


def train_ct_prior(manifest: dict, cfg: dict, out_stem, kind: str, device: str = "auto",
                   progress: bool = True) -> dict:
    """Train a CT prior on the manifest's train split.

    * ``kind="patch"`` — DiffusionBlend: VP ε-network on 3-slice patches (3 channels) of every
      spacing in ``cfg["spacings"]``, the spacing as class label (learned embedding added to the
      time embedding; label slots 0 … max spacing).
    * ``kind="slice"`` — DDS: VP ε-network on single axial slices (1 channel).
    * ``kind="score"`` — DiffusionMBIR: VE score network on single axial slices (as score-MRI).

    Images enter VP networks as 2u − 1 (u in [0, 1]); the VE network centres them itself.
    """
    torch.manual_seed(cfg["train"].get("seed", 0))
    dev = pick_device(device)
    tcfg = TrainConfig.from_dict(cfg["train"])
    labels = None
    if kind == "patch":
        spacings = tuple(int(k) for k in cfg.get("spacings", (1, 3)))
        data, labels = ct_patches(manifest, spacings)
        model = noise_network(cfg, data.shape[-1], 3, max(spacings) + 1)
        extra = {"spacings": list(spacings), "schedule": cfg.get("schedule", {})}
        loss = vp_eps_loss(vp_schedule(cfg))
        inputs = 2 * data - 1
    elif kind == "slice":
        data = ct_slices(manifest)
        model = noise_network(cfg, data.shape[-1], 1, None)
        extra = {"schedule": cfg.get("schedule", {})}
        loss = vp_eps_loss(vp_schedule(cfg))
        inputs = 2 * data - 1
    elif kind == "score":
        data = ct_slices(manifest)
        model = score_network(cfg, data.shape[-1])
        extra = {"sde": cfg["sde"]}
        loss = ve_dsm_loss(VESDE(cfg["sde"]["sigma_min"], cfg["sde"]["sigma_max"]))
        inputs = data
    else:
        raise ValueError(f"CT prior kind '{kind}' is not one of patch, slice, score")
    log.info("%s prior: %d parameters, %d training images, device %s", kind, count_parameters(model), len(data), dev)
    meta = {"method": f"ct_{kind}", "kind": kind, "model": cfg["model"], "image_size": data.shape[-1],
            "dataset": manifest["name"], "data_hash": tensor_hash(data), "n_train_images": len(data), **extra}
    return train(model, inputs, loss, tcfg, out_stem, meta=meta, device=dev, progress=progress, labels=labels)


def load_ct_prior(stem, expected_sha256: str | None = None, use_ema: bool = True, device="cpu"):
    """Rebuild a trained CT prior: (network, VPSchedule or VESDE, meta)."""
    from diffrecon.diffusion.checkpoint import load_checkpoint, unprefixed

    tensors, meta = load_checkpoint(stem, expected_sha256)
    kind = meta.get("kind")
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
    weights = unprefixed("ema" if use_ema and any(k.startswith("ema.") for k in tensors) else "model", tensors)
    model.load_state_dict(weights)
    return model.to(device).eval().requires_grad_(False), process, meta
