"""Rules simulate_mri / simulate_ct: measure the test split in one setting."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from diffrecon import pipeline  # noqa: E402
from diffrecon.data.datasets import load_manifest  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402
from diffrecon.settings import CTSetting, MRISetting  # noqa: E402

with log_to(snakemake.log[0]):
    manifest = load_manifest(snakemake.input.manifest)
    out, p = snakemake.output, snakemake.params
    if snakemake.rule == "simulate_mri":
        pipeline.simulate_mri(manifest, MRISetting.parse(snakemake.wildcards.setting), out.measurements, out.target,
                              out.mask, seed=p.seed, max_cases=p.max_cases, central_slices=p.central_slices,
                              split=p.split, name=snakemake.wildcards.dataset)
    else:
        pipeline.simulate_ct(manifest, CTSetting.parse(snakemake.wildcards.setting), out.measurements, out.target,
                             projector=p.projector, n_threads=snakemake.threads, max_cases=p.max_cases,
                             noise=p.noise, seed=p.seed)
