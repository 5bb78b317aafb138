"""Rules install_weights_*: copy shipped demo weights into results/ after checking their sha256."""
from pathlib import Path

from diffrecon.logs import log_to
from diffrecon.models.checkpoint import install_weights

# the prior these weights are installed as: ct_{kind} for a CT prior's rule, else score-MRI's
kind = getattr(snakemake.wildcards, "kind", None)
method = f"ct_{kind}" if kind else "score_mri"

with log_to(snakemake.log[0]):
    install_weights(snakemake.input.weights, Path(snakemake.output.weights).with_suffix(""), method=method)
