"""Rule evaluate_ablation: per-case metrics of one ablation variant (its first max_cases volumes)."""
from diffrecon.logs import log_to
from diffrecon.stages.evaluate import evaluate

with log_to(snakemake.log[0]):
    w = snakemake.wildcards
    evaluate(snakemake.input.target, snakemake.input.recon, snakemake.output[0], w.dataset, w.setting, w.method,
             subset=snakemake.params.subset, max_cases=snakemake.params.max_cases)
