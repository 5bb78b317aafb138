"""Rule ablation_report: CT ablation tables (CSV, Markdown) and plots."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    files = dict(zip([tuple(v) for v in snakemake.params.variants], snakemake.input))
    pipeline.ct_ablation_report(files, dict(snakemake.output.items()), snakemake.params.where)
