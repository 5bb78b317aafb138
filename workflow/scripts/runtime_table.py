"""Rule runtime_table: wall time per volume and NFE of every method (CSV, Markdown)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    out = snakemake.output
    pipeline.runtime_tables(snakemake.input[0], snakemake.wildcards.modality, out.csv, out.md,
                            methods=snakemake.params.methods)
