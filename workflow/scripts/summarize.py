"""Rule summarize: all cells' metrics.csv -> per-cell summary (mean, std, n) and all per-case rows."""
from diffrecon.logs import log_to
from diffrecon.stages.report import summarize_metrics

with log_to(snakemake.log[0]):
    summarize_metrics(list(snakemake.input), snakemake.output.summary, snakemake.output.cases)
