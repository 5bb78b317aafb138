"""Rule runtime_table: wall time per volume and NFE of every method (CSV, Markdown)."""
from diffrecon.logs import log_to
from diffrecon.stages.report import runtime_tables

with log_to(snakemake.log[0]):
    out = snakemake.output
    runtime_tables(snakemake.input[0], snakemake.wildcards.modality, out.csv, out.md, methods=snakemake.params.methods,
                   steps_note=snakemake.params.steps_note)
