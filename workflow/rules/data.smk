# Stage 1: datasets (generate the embedded demo, convert DICOM / NIfTI CT, or index user files) -> manifest.json


rule prepare_dataset:
    """Generate (demo), convert into the CT store (dicom, nifti; the data are read when the job runs,
    not when the DAG is built) or index (files) one dataset, and write its manifest."""
    output:
        f"{RESULTS}/data/{{modality}}/{{dataset}}/manifest.json",
    log:
        "logs/prepare_dataset/{modality}_{dataset}.log",
    priority: PRIORITY_UNLOCKS
    params:
        cfg=dataset_config,
        seed=config["seed"],
    conda:
        ENV
    script:
        "../scripts/prepare_dataset.py"
