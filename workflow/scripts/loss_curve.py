"""Rule loss_curve: training loss against step of one trained model (from its sidecar JSON)."""
from diffrecon.logs import log_to
from diffrecon.report.figures import loss_curve_figure

with log_to(snakemake.log[0]):
    p = snakemake.params
    loss_curve_figure(snakemake.input.sidecar, snakemake.output[0], model=p.model, dataset=p.dataset,
                      family=p.family or None)
