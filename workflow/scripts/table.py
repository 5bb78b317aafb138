"""Rules table / robustness_table: paper-shaped tables (CSV, Markdown, LaTeX) from the summary."""
from diffrecon.logs import log_to
from diffrecon.stages.report import paper_tables

with log_to(snakemake.log[0]):
    out, p = snakemake.output, snakemake.params
    paper_tables(snakemake.input[0], p.modality, p.view, out.csv, out.md, out.tex, methods=p.methods,
                 settings=p.settings, datasets=p.datasets, title=p.get("title"), steps_note=p.steps_note)
