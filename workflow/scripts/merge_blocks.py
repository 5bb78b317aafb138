"""Rule merge_blocks: one cell's recon.h5 from the files of its slice blocks."""
from diffrecon.logs import log_to
from diffrecon.stages.reconstruct import merge_blocks

with log_to(snakemake.log[0]):
    merge_blocks(list(snakemake.input), snakemake.output[0])
