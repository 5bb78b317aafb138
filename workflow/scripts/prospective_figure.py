"""Rule prospective_figure: zero-filled input and reconstructions of prospective data."""
from diffrecon.logs import log_to
from diffrecon.stages.report import prospective_figure

with log_to(snakemake.log[0]):
    recons = {k[len("recon_"):]: v for k, v in snakemake.input.items() if k.startswith("recon_")}
    prospective_figure(snakemake.input.measurements, recons, snakemake.output[0],
                       case_index=snakemake.params.case_index)
