"""Rules reconstruct / reconstruct_prospective / reconstruct_block / reconstruct_cases /
reconstruct_ablation: one method on every case of one setting (reconstruct_block: one block of
every volume's slices; reconstruct_cases: one group of the cases). Rules with a ``metrics``
output also score the reconstruction (reconstruct_ablation: its first max_cases volumes); an
ablation variant given its table cell's reconstruction (input ``cell``) copies it instead of
reconstructing."""
import shutil
from pathlib import Path

import torch

from diffrecon.logs import log_to
from diffrecon.stages.reconstruct import reconstruct

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    w = snakemake.wildcards
    if "cell" in snakemake.input.keys():
        from diffrecon.io import atomic_path

        with atomic_path(snakemake.output[0]) as tmp:
            shutil.copyfile(snakemake.input.cell, tmp)
    else:
        params = dict(snakemake.params.method_params)
        if snakemake.params.modality == "ct":
            params.setdefault("n_threads", snakemake.threads)       # ASTRA worker threads
        model = snakemake.input.get("model")
        from diffrecon.methods import get as method_entry
        for key in method_entry(w.method).extra_models:              # further models: checkpoint stems
            params[key] = str(Path(snakemake.input[key]).with_suffix(""))
        reconstruct(snakemake.input.measurements, w.method, snakemake.output[0], params,
                    model=Path(model).with_suffix("") if model else None,
                    slices=getattr(snakemake.params, "slices", None),
                    cases=getattr(snakemake.params, "cases", None),
                    checkpoint_slices=getattr(snakemake.params, "checkpoint_slices", None))
    if "metrics" in snakemake.output.keys():
        from diffrecon.stages.evaluate import evaluate

        evaluate(snakemake.input.target, snakemake.output.recon, snakemake.output.metrics, w.dataset, w.setting,
                 w.method, subset=getattr(snakemake.params, "subset", False),
                 max_cases=getattr(snakemake.params, "max_cases", None))
