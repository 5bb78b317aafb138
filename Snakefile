# diffrecon: diffusion-prior reconstruction for accelerated MRI and sparse-view / limited-angle CT.
#
# Table of contents. Results paths encode the table cell:
#   results/{modality}/{dataset}/{setting}/{method}/metrics.csv
# Rebuild one cell by asking for its file, e.g.
#   snakemake --cores all results/ct/demo_thorax/sv8/fbp/metrics.csv

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    modality="mri|ct",
    dataset="[A-Za-z0-9_]+",
    method="[A-Za-z0-9_]+",
    setting="[A-Za-z0-9.\-]+",
    view="image|axial|coronal|sagittal|magnitude|singlecoil|multicoil",
    variant="(steps|jump)[0-9]+",


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/reconstruct.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/ablation.smk"


rule all:
    """Every table and figure of the configured experiment matrix."""
    input:
        final_outputs(),
