# Stage 2: measure the test split of a dataset in one setting (MRI: retrospective
# undersampling; CT: slice-wise parallel-beam projection).


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
        modality="mri",
        seed=config["seed"],
        max_cases=config.get("mri", {}).get("max_cases"),
        central_slices=config.get("mri", {}).get("central_slices"),
        split=lambda w: X.test_source(w.dataset)[1],
    conda:
        ENV
    script:
        "../scripts/simulate.py"


rule simulate_ct:
    """Project the test volumes for one setting (sparse view or limited angle)."""
    input:
        manifest=f"{RESULTS}/data/ct/{{dataset}}/manifest.json",
    output:
        measurements=f"{RESULTS}/ct/{{dataset}}/{{setting}}/measurements.h5",
        target=f"{RESULTS}/ct/{{dataset}}/{{setting}}/target.h5",
    log:
        "logs/simulate_ct/{dataset}/{setting}.log",
    threads: THREADS
    priority: simulate_priority("ct")
    params:
        modality="ct",
        seed=config["seed"],
        projector=config.get("ct", {}).get("projector", "linear"),
        max_cases=config.get("ct", {}).get("max_cases"),
        noise=config.get("ct", {}).get("noise"),
    conda:
        ENV
    script:
        "../scripts/simulate.py"


ruleorder: measure_mri > simulate_mri


rule measure_mri:
    """Prospective data: measurements from the files' own k-space and masks (nothing simulated)."""
    input:
        manifest=f"{RESULTS}/data/mri/{{dataset}}/manifest.json",
    output:
        measurements=f"{RESULTS}/mri/{{dataset}}/prospective-{{coil_mode,multicoil|singlecoil}}/measurements.h5",
    log:
        "logs/measure_mri/{dataset}/prospective-{coil_mode}.log",
    params:
        max_cases=config.get("mri", {}).get("max_cases"),
        central_slices=config.get("mri", {}).get("central_slices"),
    conda:
        ENV
    script:
        "../scripts/measure.py"
