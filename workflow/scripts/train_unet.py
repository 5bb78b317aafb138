"""Rules train_unet / train_fbp_unet: the supervised U-Net baselines (CUDA when present)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

import torch  # noqa: E402

from diffrecon.baselines.unet import MaskSpec, train_unet  # noqa: E402
from diffrecon.data.datasets import load_manifest  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402
from diffrecon.models.checkpoint import publish_checkpoint  # noqa: E402

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    cfg, w = snakemake.params.cfg, snakemake.wildcards
    stem = Path(snakemake.output.weights).with_suffix("")
    resumable = stem.parent / "checkpoint"          # not an output: survives an interrupted job
    if snakemake.rule == "train_fbp_unet":
        from diffrecon.baselines.fbp_unet import train_fbp_unet
        from diffrecon.settings import CTSetting

        train_fbp_unet(load_manifest(snakemake.input.manifest), CTSetting.parse(w.setting), cfg, resumable,
                       device=cfg.get("device", "auto"), n_threads=snakemake.threads)
    else:
        # the seed of simulate_mri's masks, so the network is trained for the mask it is tested on
        spec = MaskSpec(w.mask, float(w.acc), float(w.acs), snakemake.params.seed)
        train_unet(load_manifest(snakemake.input.manifest), spec, cfg, resumable, device=cfg.get("device", "auto"))
    publish_checkpoint(resumable, stem)
