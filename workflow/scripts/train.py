"""Rules train_*: train a diffusion prior (CUDA when present) with resumable checkpoints."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

import torch  # noqa: E402

from diffrecon.data.datasets import load_manifest  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402
from diffrecon.models import recipes  # noqa: E402
from diffrecon.models.checkpoint import publish_checkpoint  # noqa: E402

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    cfg = snakemake.params.cfg
    stem = Path(snakemake.output.weights).with_suffix("")
    resumable = stem.parent / "checkpoint"          # not an output: survives an interrupted job
    manifest = load_manifest(snakemake.input.manifest)
    if snakemake.rule == "train_ct_prior":
        recipes.train_ct_prior(manifest, cfg, resumable, snakemake.wildcards.kind, device=cfg.get("device", "auto"))
    else:
        recipes.train_score_mri(manifest, cfg, resumable, device=cfg.get("device", "auto"))
    publish_checkpoint(resumable, stem)
