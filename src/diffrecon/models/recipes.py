"""Training recipes: which data, network, diffusion process and loss each method's prior uses.

The builders (:func:`score_network`, :func:`noise_network`, :func:`vp_schedule`) turn a config
block (or a checkpoint sidecar, which records the same block) into a network or schedule;
:mod:`diffrecon.models.loading` uses them to rebuild trained priors.
"""

from __future__ import annotations

import logging

import torch

from diffrecon.data.training_sets import ct_patches, ct_slices, magnitude_slices, tensor_hash
from diffrecon.devices import pick_device
from diffrecon.diffusion.sde import VESDE, ve_dsm_loss
from diffrecon.diffusion.vp import VPSchedule, vp_eps_loss
from diffrecon.models.networks import NoiseNetwork, ScoreNetwork, UNetConfig, count_parameters
from diffrecon.models.training import TrainConfig, train

log = logging.getLogger("diffrecon.training")


def score_network(cfg: dict, size: int) -> ScoreNetwork:
    """The one-channel VE :class:`ScoreNetwork` of ``size`` × ``size`` images; ``cfg["model"]``: UNet sizes."""
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


# ------------------------------------------------------------------------------------ CT priors
def noise_network(cfg: dict, size: int, channels: int, n_labels: int | None) -> NoiseNetwork:
    """The VP :class:`NoiseNetwork` of ``channels``-channel ``size`` × ``size`` images, with
    ``n_labels`` class-label slots (None: unconditional); ``cfg["model"]``: UNet sizes."""
    return NoiseNetwork(UNetConfig.from_dict({**cfg["model"], "sample_size": size, "in_channels": channels,
                                              "out_channels": channels, "time_embedding": "positional",
                                              "num_class_embeds": n_labels}))


def vp_schedule(cfg: dict) -> VPSchedule:
    """The :class:`VPSchedule` of ``cfg["schedule"]`` (β_start, β_end, T; the papers' defaults)."""
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
