"""Rule merge_cases: one cell's recon.h5 from the files of its case groups."""
from diffrecon.logs import log_to
from diffrecon.stages.reconstruct import merge_cases

with log_to(snakemake.log[0]):
    merge_cases(list(snakemake.input), snakemake.output[0])
