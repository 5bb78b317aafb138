"""Rules train_*: train a model (CUDA when present) with resumable checkpoints, then publish it.

A prior with gpus: N > 1 (the job's gpu resource) trains in N processes: this script runs
`torchrun --standalone --nproc_per_node N -m diffrecon.cli train ...` with the Python running it
(the rule's environment), its output going to the log; the first error line of any process ends
the job with that line.
"""
import json
import subprocess
import sys
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
    gpus = int(snakemake.resources.get("gpu", 1))
    if model in ("score_mri", "ct_prior") and gpus > 1:
        prior = "score_mri" if model == "score_mri" else f"ct_{w.kind}"
        merged = stem.parent / "train_config.json"          # the run's config, as this workflow sees it
        merged.write_text(json.dumps(dict(snakemake.config), indent=1, default=str))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "diffrecon.cli", "train", prior, "--config", str(merged), "--manifest", snakemake.input.manifest,
               "--out", str(resumable), "--device", device, "--threads", str(max(1, snakemake.threads // gpus))]
        print("launching:", " ".join(cmd), file=sys.stderr, flush=True)
        first_error = None
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            for line in proc.stdout:
                sys.stderr.write(line)
                if first_error is None and line.startswith("diffrecon: error: "):
                    first_error = line.strip().removeprefix("diffrecon: error: ")
        if proc.returncode != 0:
            raise ValueError(first_error or f"torchrun ({gpus} processes) exited with status {proc.returncode}; "
                                            f"see {snakemake.log[0]}")
    elif model == "score_mri":
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
    elif model == "varnet":
        from diffrecon.baselines.varnet import train_varnet
        from diffrecon.baselines.unet import MaskSpec

        train_varnet(manifest, MaskSpec(w.mask, float(w.acc), float(w.acs), snakemake.params.seed), cfg, resumable,
                     device=device)
    elif model == "fbp_unet":
        from diffrecon.baselines.fbp_unet import train_fbp_unet
        from diffrecon.settings import CTSetting

        train_fbp_unet(manifest, CTSetting.parse(w.setting), cfg, resumable, device=device, n_threads=snakemake.threads)
    else:
        raise ValueError(f"unknown model kind {model!r}")
    publish_checkpoint(resumable, stem)
