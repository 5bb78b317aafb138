"""Rule summarize: all cells' metrics.csv -> per-cell summary (mean, std, n) and all per-case rows."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    pipeline.summarize_metrics(list(snakemake.input), snakemake.output.summary, snakemake.output.cases)
