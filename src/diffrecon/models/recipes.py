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
    (sigma_min, sigma_max) and ``train`` (:class:`TrainConfig` fields; ``loader: stream`` reads
    the slices one at a time, :class:`~diffrecon.data.streaming.MagnitudeSlices`). Under
    ``torchrun`` every process calls this (data-parallel training, :func:`train`).
    """
    from diffrecon.data.streaming import MagnitudeSlices
    from diffrecon.models import distributed

    tcfg = TrainConfig.from_dict(cfg["train"])
    env, dev = distributed.setup(pick_device(device))
    stream = MagnitudeSlices(manifest, "train")              # the index: file headers only
    data = stream if tcfg.loader == "stream" else magnitude_slices(manifest, "train")
    size = stream.sample_shape[-1]
    sde = VESDE(cfg["sde"]["sigma_min"], cfg["sde"]["sigma_max"])
    torch.manual_seed(cfg["train"].get("seed", 0))           # weight initialisation
    model = score_network(cfg, size)
    log.info("score model: %d parameters, %d training slices, %s loader, device %s, %d process(es)",
             count_parameters(model), len(stream), tcfg.loader, dev, env.world)
    meta = {"method": "score_mri", "model": cfg["model"], "sde": cfg["sde"], "image_size": size,
            "dataset": manifest["name"], "data_hash": distributed.from_main(stream.data_hash),
            "n_train_slices": len(stream)}
    return train(model, data, ve_dsm_loss(sde), tcfg, out_stem, meta=meta, device=dev, progress=progress)


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
    from diffrecon.data.streaming import CTPatches, CTSlices
    from diffrecon.models import distributed

    tcfg = TrainConfig.from_dict(cfg["train"])
    env, dev = distributed.setup(pick_device(device))
    memory = tcfg.loader != "stream"
    labels = None
    if kind == "patch":
        spacings = tuple(int(k) for k in cfg.get("spacings", (1, 3)))
        stream = CTPatches(manifest, spacings, centered=True)
        extra = {"spacings": list(spacings), "schedule": cfg.get("schedule", {})}
        loss = vp_eps_loss(vp_schedule(cfg))
        if memory:
            data, labels = ct_patches(manifest, spacings)
    elif kind in ("slice", "score"):
        stream = CTSlices(manifest, centered=kind == "slice")
        if kind == "slice":
            extra = {"schedule": cfg.get("schedule", {})}
            loss = vp_eps_loss(vp_schedule(cfg))
        else:
            extra = {"sde": cfg["sde"]}
            loss = ve_dsm_loss(VESDE(cfg["sde"]["sigma_min"], cfg["sde"]["sigma_max"]))
        if memory:
            data = ct_slices(manifest)
    else:
        raise ValueError(f"CT prior kind '{kind}' is not one of patch, slice, score")
    # VP networks take 2u - 1 (the stream set centres each sample itself); the VE network takes u
    inputs = stream if not memory else (2 * data - 1 if kind in ("patch", "slice") else data)
    channels, size = stream.sample_shape[0], stream.sample_shape[-1]
    torch.manual_seed(cfg["train"].get("seed", 0))
    if kind == "score":
        model = score_network(cfg, size)
    else:
        model = noise_network(cfg, size, channels, max(spacings) + 1 if kind == "patch" else None)
    log.info("%s prior: %d parameters, %d training images, %s loader, device %s, %d process(es)", kind,
             count_parameters(model), len(stream), tcfg.loader, dev, env.world)
    meta = {"method": f"ct_{kind}", "kind": kind, "model": cfg["model"], "image_size": size,
            "dataset": manifest["name"], "data_hash": distributed.from_main(stream.data_hash),
            "n_train_images": len(stream), **extra}
    return train(model, inputs, loss, tcfg, out_stem, meta=meta, device=dev, progress=progress, labels=labels)
