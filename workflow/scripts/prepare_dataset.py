"""Rule prepare_dataset: generate the demo data, convert DICOM / NIfTI CT into the store, or index user files; write manifest.json."""
from pathlib import Path

from diffrecon.data.datasets import prepare_dataset
from diffrecon.logs import log_to

with log_to(snakemake.log[0]):
    prepare_dataset(snakemake.wildcards.dataset, snakemake.params.cfg, Path(snakemake.output[0]).parent,
                    snakemake.params.seed)
