"""Rule figure: comparison grid of one setting."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    recons = {k[len("recon_"):]: v for k, v in snakemake.input.items() if k.startswith("recon_")}
    pipeline.setting_figure(snakemake.input.target, snakemake.input.measurements, recons, snakemake.output[0],
                            case_index=snakemake.params.case_index)
