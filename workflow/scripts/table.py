"""Rule table: one paper-shaped table (CSV, Markdown, LaTeX) per modality and view."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    w, out = snakemake.wildcards, snakemake.output
    pipeline.paper_tables(snakemake.input[0], w.modality, w.view, out.csv, out.md, out.tex,
                          methods=snakemake.params.methods, settings=snakemake.params.settings)
