"""Rule loss_curves: training loss against step of each trained model (from its sidecar JSON)."""
from diffrecon.logs import log_to
from diffrecon.report.figures import loss_curve_figure

with log_to(snakemake.log[0]):
    for sidecar, png, c in zip(snakemake.input, snakemake.output, snakemake.params.curves):
        loss_curve_figure(sidecar, png, model=c["model"], dataset=c["dataset"], family=c["family"] or None)
