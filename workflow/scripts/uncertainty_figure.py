"""Rule uncertainty_figure: posterior mean / std / error of one score-MRI cell."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    pipeline.posterior_figure(snakemake.input.target, snakemake.input.recon, snakemake.output[0],
                              case_index=snakemake.params.case_index)
