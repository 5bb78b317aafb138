"""Rule figure: comparison grid of one setting."""
from diffrecon.logs import log_to
from diffrecon.stages.report import setting_figure

with log_to(snakemake.log[0]):
    recons = {k[len("recon_"):]: v for k, v in snakemake.input.items() if k.startswith("recon_")}
    setting_figure(snakemake.input.target, snakemake.input.measurements, recons, snakemake.output[0],
                   case_index=snakemake.params.case_index)
