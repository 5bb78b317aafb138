"""Rules reconstruct_mri / reconstruct_ct: one method on every case of one setting."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

import torch  # noqa: E402

from diffrecon import pipeline  # noqa: E402
from diffrecon.logs import log_to  # noqa: E402

with log_to(snakemake.log[0]):
    torch.set_num_threads(snakemake.threads)
    params = dict(snakemake.params.method_params)
    if snakemake.rule == "reconstruct_mri":
        model = snakemake.input.get("model")
        pipeline.reconstruct_mri(snakemake.input.measurements, snakemake.wildcards.method, snakemake.output[0], params,
                                 model=Path(model).with_suffix("") if model else None)
    else:
        params.setdefault("n_threads", snakemake.threads)
        model = snakemake.input.get("model")
        pipeline.reconstruct_ct(snakemake.input.measurements, snakemake.wildcards.method, snakemake.output[0], params,
                                model=Path(model).with_suffix("") if model else None)
