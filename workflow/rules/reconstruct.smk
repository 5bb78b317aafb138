# Stage 3: one reconstruction per table cell (any method of the registry, either modality).


rule reconstruct:
    """Reconstruct every test case of one setting with one method."""
    input:
        unpack(reconstruct_inputs),
    output:
        f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/recon.h5",
    log:
        "logs/reconstruct/{modality}/{dataset}/{setting}/{method}.log",
    threads: reconstruct_threads
    priority: method_priority
    resources:
        gpu=gpu_request,
    params:
        modality=lambda w: w.modality,
        method_params=method_params,
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"
