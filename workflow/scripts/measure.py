"""Rule measure_mri: measurements of prospective data with the files' own masks."""
from diffrecon.data.datasets import load_manifest
from diffrecon.logs import log_to
from diffrecon.stages.measure import measure_prospective

with log_to(snakemake.log[0]):
    p, w = snakemake.params, snakemake.wildcards
    measure_prospective(load_manifest(snakemake.input.manifest), snakemake.output.measurements, w.coil_mode,
                        max_cases=p.max_cases, central_slices=p.central_slices, name=w.dataset)
