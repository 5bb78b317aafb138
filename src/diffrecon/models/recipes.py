"""Training recipes: which data, network, diffusion process and loss each method's prior uses.

The builders (:func:`score_network`, :func:`noise_network`, :func:`vp_schedule`) turn a config
block (or a checkpoint sidecar, which records the same block) into a network or schedule;
:mod:`diffrecon.models.loading` uses them to rebuild trained priors.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from diffrecon.data.training_sets import ct_patches, ct_slices, magnitude_slices
from diffrecon.devices import pick_device
from diffrecon.diffusion.sde import VESDE, ve_dsm_loss
from diffrecon.diffusion.vp import VPSchedule, vp_eps_loss
from diffrecon.models.networks import NoiseNetwork, ScoreNetwork, UNetConfig, count_parameters
from diffrecon.models.published import init_record
from diffrecon.models.training import TrainConfig, train

log = logging.getLogger("diffrecon.training")


def score_network(cfg: dict, size: int) -> nn.Module:
    """The one-channel VE score network s_θ(x, σ) of ``size`` × ``size`` images from ``cfg["model"]``.

    ``architecture`` absent: the diffusers :class:`ScoreNetwork` (UNet sizes); ``ncsnpp``: the
    NCSN++ of the published score-MRI / DiffusionMBIR priors (its ``NCSNppConfig`` fields; σ range
    from the block, else from ``cfg["sde"]``). Both take x in [0, 1] and σ (B,). With
    ``cfg["init_from"]`` (training only), the network starts from those weights
    (:func:`diffrecon.models.published.init_from`).
    """
    block = cfg["model"]
    arch = block.get("architecture")
    if arch is None:
        model = ScoreNetwork(UNetConfig.from_dict({**block, "sample_size": size, "in_channels": 1,
                                                   "out_channels": 1, "time_embedding": "fourier"}))
    elif arch == "ncsnpp":
        from diffrecon.models.ncsnpp import NCSNpp, NCSNppConfig

        sde = {k: v for k, v in (cfg.get("sde") or {}).items() if k in ("sigma_min", "sigma_max")}
        settings = {**sde, **{k: v for k, v in block.items() if k != "architecture"}}
        if int(settings.get("in_channels", 1)) != 1:
            raise ValueError(f"model.in_channels: a score prior has 1 channel, got {settings['in_channels']}")
        model = NCSNpp(NCSNppConfig.from_dict({**settings, "image_size": size, "in_channels": 1}))
    else:
        raise ValueError(f"model.architecture: a VE score prior is the default UNet or 'ncsnpp', not {arch!r}")
    return _initialised(model, cfg)


def _initialised(model: nn.Module, cfg: dict) -> nn.Module:
    """``model`` started from ``cfg["init_from"]``'s weights when given (else unchanged)."""
    if cfg.get("init_from"):
        from diffrecon.models.published import init_from

        info = init_from(model, cfg["init_from"])
        log.info("initialised from %s (layout %s)", info["init_from"]["path"], info["init_from"]["layout"])
    return model


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
def noise_network(cfg: dict, size: int, channels: int, n_labels: int | None) -> nn.Module:
    """The VP ε-network of ``channels``-channel ``size`` × ``size`` images, with ``n_labels``
    class-label slots (None: unconditional), from ``cfg["model"]``.

    ``architecture`` absent: the diffusers :class:`NoiseNetwork` (UNet sizes); ``adm``: the
    :class:`~diffrecon.models.adm.ADMNoiseNetwork` of the block's ``ADMConfig`` fields (the
    published DDS / DiffusionBlend / ImageNet layouts; ``in_channels``/``out_channels`` follow
    ``channels`` and ``learn_sigma``; ``num_classes`` must be null exactly when unconditional and
    cover ``n_labels`` otherwise). Both take x_t in [−1, 1], the integer step t (B,) and labels,
    and return ε̂ (B, channels, H, W). With ``cfg["init_from"]`` (training only), the network
    starts from those weights (:func:`diffrecon.models.published.init_from`).
    """
    block = cfg["model"]
    arch = block.get("architecture")
    if arch is None:
        model = NoiseNetwork(UNetConfig.from_dict({**block, "sample_size": size, "in_channels": channels,
                                                   "out_channels": channels, "time_embedding": "positional",
                                                   "num_class_embeds": n_labels}))
    elif arch == "adm":
        model = _adm_noise_network(block, size, channels, n_labels)
    else:
        raise ValueError(f"model.architecture: a VP noise prior is the default UNet or 'adm', not {arch!r}")
    return _initialised(model, cfg)


def _adm_noise_network(block: dict, size: int, channels: int, n_labels: int | None):
    from diffrecon.models.adm import ADMConfig, ADMNoiseNetwork

    settings = {k: v for k, v in block.items() if k != "architecture"}
    learn_sigma = bool(settings.get("learn_sigma", ADMConfig.learn_sigma))
    want = {"in_channels": channels, "out_channels": channels * (2 if learn_sigma else 1)}
    for key, value in want.items():
        if key in settings and int(settings[key]) != value:
            raise ValueError(f"model.{key}: this prior has {channels}-channel images, so {key} is {value} "
                             f"(learn_sigma {learn_sigma}), not {settings[key]}")
    classes = settings.get("num_classes")
    if n_labels is None and classes is not None:
        raise ValueError(f"model.num_classes: an unconditional prior needs num_classes null, not {classes}")
    if n_labels is not None and (classes is None or int(classes) < n_labels):
        raise ValueError(f"model.num_classes: the labels 0 … {n_labels - 1} need num_classes ≥ {n_labels}, "
                         f"got {classes}")
    return ADMNoiseNetwork(ADMConfig.from_dict({**settings, **want, "image_size": size}))


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
    * ``kind="slice_perp"`` — TPDM's auxiliary prior: VP ε-network on coronal and sagittal slices
      in z windows (:func:`train_perp_prior`).

    Images enter VP networks as 2u − 1 (u in [0, 1]); the VE network centres them itself.
    """
    from diffrecon.data.streaming import CTPatches, CTSlices
    from diffrecon.models import distributed

    if kind == "slice_perp":
        return train_perp_prior(manifest, cfg, out_stem, device=device, progress=progress)
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
        raise ValueError(f"CT prior kind '{kind}' is not one of patch, slice, score, slice_perp")
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
    meta.update(init_record(cfg))           # init_from: which weights the network started from
    return train(model, inputs, loss, tcfg, out_stem, meta=meta, device=dev, progress=progress, labels=labels)


def perp_window(cfg: dict, n_slices: int) -> int:
    """z window of the auxiliary prior: ``cfg["z_window"]`` or, when absent/null, the largest
    multiple of the network's down-sampling factor 2^(levels − 1) not above ``n_slices``."""
    levels = len(cfg["model"].get("channels", (32, 64, 64)))
    factor = 2 ** (levels - 1)
    window = cfg.get("z_window") or (n_slices // factor) * factor
    if window < factor or window % factor:
        raise ValueError(f"ct_priors.slice_perp.z_window: {window} slices is not a positive multiple of the "
                         f"network's down-sampling factor {factor} (the volumes have {n_slices} slices)")
    return int(window)


def train_perp_prior(manifest: dict, cfg: dict, out_stem, device: str = "auto", progress: bool = True) -> dict:
    """Train TPDM's auxiliary prior: a VP ε-network (1 channel) on the slices that contain z —
    coronal and sagittal, (z_window, side) each, window starts every ``z_stride`` slices (default 1)
    (:func:`~diffrecon.data.training_sets.ct_perpendicular_slices`). Rectangular images: the
    network is convolutional and sees the native z sampling (no resampling of anisotropic
    volumes). In-memory data (the set is small: one image per row/column and window start)."""
    from diffrecon.data.ct_volumes import read_ct_volume
    from diffrecon.data.training_sets import ct_perpendicular_slices, tensor_hash

    tcfg = TrainConfig.from_dict({**cfg["train"], "loader": "memory"})
    dev = pick_device(device)
    first = manifest["splits"].get("train") or []
    if not first:
        raise ValueError(f"dataset {manifest['name']}: split 'train' has no volumes")
    n_slices = min(read_ct_volume(p).shape[0] for p in first)
    window = perp_window(cfg, n_slices)
    data = ct_perpendicular_slices(manifest, window, stride=int(cfg.get("z_stride") or 1))
    size = int(data.shape[-1])
    torch.manual_seed(cfg["train"].get("seed", 0))
    model = noise_network(cfg, size, 1, None)
    log.info("slice_perp prior: %d parameters, %d training images of %d x %d (z x side), device %s",
             count_parameters(model), data.shape[0], window, size, dev)
    meta = {"method": "ct_slice_perp", "kind": "slice_perp", "model": cfg["model"], "image_size": size,
            "z_window": window, "dataset": manifest["name"], "data_hash": tensor_hash(data),
            "n_train_images": int(data.shape[0]), "schedule": cfg.get("schedule", {})}
    meta.update(init_record(cfg))
    return train(model, 2 * data - 1, vp_eps_loss(vp_schedule(cfg)), tcfg, out_stem, meta=meta, device=dev,
                 progress=progress)
