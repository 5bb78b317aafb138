"""Rules install_weights_*: copy shipped demo weights into results/ after checking their sha256
(and, for a supervised baseline, that they were trained for this dataset and mask family or setting)."""
from pathlib import Path

from diffrecon.logs import log_to
from diffrecon.models.checkpoint import install_weights

with log_to(snakemake.log[0]):
    install_weights(snakemake.input.weights, Path(snakemake.output.weights).with_suffix(""),
                    method=snakemake.params.method, expect=dict(snakemake.params.get("expect") or {}))
