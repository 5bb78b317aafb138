"""Rule prepare_dataset: generate the demo data or index user files, write manifest.json."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon.data.datasets import prepare_dataset  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    out_dir = Path(snakemake.output[0]).parent
    prepare_dataset(snakemake.wildcards.dataset, snakemake.params.cfg, out_dir, snakemake.params.seed)
