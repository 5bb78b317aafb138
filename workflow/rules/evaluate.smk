# Stage 4: per-case metrics of one table cell (fastMRI convention for MRI, per-view for CT).


rule evaluate:
    """Score one cell's reconstructions against the targets -> metrics.csv (one row per case/view)."""
    input:
        target=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/target.h5",
        recon=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/recon.h5",
    output:
        f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/metrics.csv",
    log:
        "logs/evaluate/{modality}/{dataset}/{setting}/{method}.log",
    params:
        subset=False,
        max_cases=None,
    conda:
        ENV
    script:
        "../scripts/evaluate.py"
