"""Rules install_weights_*: copy shipped demo weights into results/ after checking their sha256."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon.logs import log_to  # noqa: E402
from diffrecon.models.checkpoint import install_weights  # noqa: E402

with log_to(snakemake.log[0]):
    install_weights(snakemake.input.weights, Path(snakemake.output.weights).with_suffix(""))
