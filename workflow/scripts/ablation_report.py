"""Rules ablation_report / mri_ablation_report: ablation tables (CSV, Markdown) and plots."""
from diffrecon.logs import log_to
from diffrecon.stages.report import ct_ablation_report, mri_ablation_report

with log_to(snakemake.log[0]):
    p = snakemake.params
    files = dict(zip([tuple(v) for v in p.variants], snakemake.input))
    write = mri_ablation_report if p.modality == "mri" else ct_ablation_report
    write(files, dict(snakemake.output.items()), p.where)
