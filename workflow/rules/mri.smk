# Stage 2 (MRI): retrospective undersampling, then one reconstruction per method.


rule simulate_mri:
    """Mask the test split's k-space for one setting (mask type, acceleration, ACS, coil mode)."""
    input:
        manifest=simulate_manifest,
    output:
        measurements=f"{RESULTS}/mri/{{dataset}}/{{setting}}/measurements.h5",
        target=f"{RESULTS}/mri/{{dataset}}/{{setting}}/target.h5",
        mask=f"{RESULTS}/mri/{{dataset}}/{{setting}}/mask.json",
    log:
        "logs/simulate_mri/{dataset}/{setting}.log",
    priority: simulate_priority("mri")
    params:
        seed=config["seed"],
        max_cases=config.get("mri", {}).get("max_cases"),
        central_slices=config.get("mri", {}).get("central_slices"),
        split=lambda w: test_source(w.dataset)[1],
    conda:
        ENV
    script:
        "../scripts/simulate.py"


rule reconstruct_mri:
    """Reconstruct every test case of one MRI setting with one method."""
    input:
        unpack(reconstruct_mri_inputs),
    output:
        f"{RESULTS}/mri/{{dataset}}/{{setting}}/{{method}}/recon.h5",
    log:
        "logs/reconstruct_mri/{dataset}/{setting}/{method}.log",
    threads: mri_threads
    priority: method_priority("mri")
    resources:
        gpu=gpu_request("mri"),
    params:
        method_params=method_params_mri,
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"
