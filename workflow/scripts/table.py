"""Rules table / robustness_table: paper-shaped tables (CSV, Markdown, LaTeX) from the summary."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    out, p = snakemake.output, snakemake.params
    modality, view = snakemake.wildcards.get("modality", "mri"), snakemake.wildcards.get("view", "image")
    pipeline.paper_tables(snakemake.input[0], modality, view, out.csv, out.md, out.tex,
                          methods=p.methods, settings=p.settings, datasets=p.datasets,
                          title=p.get("title"))
