"""Rule uncertainty_figure: posterior mean, std and |error| of a score-MRI cell."""
from diffrecon.logs import log_to
from diffrecon.stages.report import posterior_figure

with log_to(snakemake.log[0]):
    posterior_figure(snakemake.input.target, snakemake.input.recon, snakemake.output[0],
                     case_index=snakemake.params.case_index)
