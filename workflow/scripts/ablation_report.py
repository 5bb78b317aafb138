"""Rule ablation_report: CT ablation tables (CSV, Markdown) and plots."""
from diffrecon.logs import log_to
from diffrecon.stages.report import ct_ablation_report

with log_to(snakemake.log[0]):
    files = dict(zip([tuple(v) for v in snakemake.params.variants], snakemake.input))
    ct_ablation_report(files, dict(snakemake.output.items()), snakemake.params.where)
