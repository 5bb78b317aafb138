"""Rules reconstruct / reconstruct_ablation: one method on every case of one setting."""
from pathlib import Path

import torch

from diffrecon.logs import log_to
from diffrecon.stages.reconstruct import reconstruct

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    params = dict(snakemake.params.method_params)
    if snakemake.params.modality == "ct":
        params.setdefault("n_threads", snakemake.threads)       # ASTRA worker threads
    model = snakemake.input.get("model")
    reconstruct(snakemake.input.measurements, snakemake.wildcards.method, snakemake.output[0], params,
                model=Path(model).with_suffix("") if model else None)
