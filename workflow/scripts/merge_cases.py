"""Rule merge_cases: one cell's recon.h5 from the files of its case groups, scored (metrics.csv)."""
from diffrecon.logs import log_to
from diffrecon.stages.evaluate import evaluate
from diffrecon.stages.reconstruct import merge_cases

with log_to(snakemake.log[0]):
    merge_cases(list(snakemake.input.groups), snakemake.output.recon)
    w = snakemake.wildcards
    evaluate(snakemake.input.target, snakemake.output.recon, snakemake.output.metrics, w.dataset, w.setting, w.method)
