"""Rule reconstruct_classical: every classical MRI method of one setting, each reconstructed into
its own cell's recon.h5 and scored into its metrics.csv, in one process."""
import torch

from diffrecon.logs import log_to
from diffrecon.stages.evaluate import evaluate
from diffrecon.stages.reconstruct import reconstruct

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    w, out = snakemake.wildcards, snakemake.output
    for method in snakemake.params.methods:
        recon = out[f"{method}_recon"]
        reconstruct(snakemake.input.measurements, method, recon, dict(snakemake.params.method_params[method]))
        evaluate(snakemake.input.target, recon, out[f"{method}_metrics"], w.dataset, w.setting, method)
