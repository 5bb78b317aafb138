"""Rules simulate_mri / simulate_ct: measure the test split in one setting."""
from diffrecon.data.datasets import load_manifest
from diffrecon.logs import log_to
from diffrecon.settings import CTSetting, MRISetting
from diffrecon.stages.simulate import simulate_ct, simulate_mri

with log_to(snakemake.log[0]):
    manifest = load_manifest(snakemake.input.manifest)
    out, p, w = snakemake.output, snakemake.params, snakemake.wildcards
    if p.modality == "mri":
        simulate_mri(manifest, MRISetting.parse(w.setting), out.measurements, out.target, out.mask, seed=p.seed,
                     max_cases=p.max_cases, central_slices=p.central_slices, split=p.split, name=w.dataset)
    else:
        simulate_ct(manifest, CTSetting.parse(w.setting), out.measurements, out.target, projector=p.projector,
                    n_threads=snakemake.threads, max_cases=p.max_cases, noise=p.noise, seed=p.seed)
