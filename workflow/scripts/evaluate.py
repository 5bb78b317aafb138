"""Rule evaluate: per-case metrics of one table cell."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    w = snakemake.wildcards
    pipeline.evaluate(snakemake.input.target, snakemake.input.recon, snakemake.output[0], w.dataset, w.setting, w.method,
                      subset=snakemake.rule == "evaluate_ablation")
