"""Rules train_*: train a model (CUDA when present) with resumable checkpoints, then publish it."""
from pathlib import Path

import torch

from diffrecon.data.datasets import load_manifest
from diffrecon.logs import log_to
from diffrecon.models.checkpoint import publish_checkpoint

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    cfg, w, model = snakemake.params.cfg, snakemake.wildcards, snakemake.params.model
    stem = Path(snakemake.output.weights).with_suffix("")
    resumable = stem.parent / "checkpoint"          # not an output: survives an interrupted job
    manifest = load_manifest(snakemake.input.manifest)
    device = cfg.get("device", "auto")
    if model == "score_mri":
        from diffrecon.models.recipes import train_score_mri

        train_score_mri(manifest, cfg, resumable, device=device)
    elif model == "ct_prior":
        from diffrecon.models.recipes import train_ct_prior

        train_ct_prior(manifest, cfg, resumable, w.kind, device=device)
    elif model == "unet":
        from diffrecon.baselines.unet import MaskSpec, train_unet

        # the seed of simulate_mri's masks, so the network is trained for the mask it is tested on
        train_unet(manifest, MaskSpec(w.mask, float(w.acc), float(w.acs), snakemake.params.seed), cfg, resumable,
                   device=device)
    elif model == "fbp_unet":
        from diffrecon.baselines.fbp_unet import train_fbp_unet
        from diffrecon.settings import CTSetting

        train_fbp_unet(manifest, CTSetting.parse(w.setting), cfg, resumable, device=device, n_threads=snakemake.threads)
    else:
        raise ValueError(f"unknown model kind {model!r}")
    publish_checkpoint(resumable, stem)
