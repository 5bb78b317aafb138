# Stage 1: datasets (generate the embedded demo, index user files, convert DICOM / NIfTI CT, or
# preprocess raw fastMRI files) -> manifest.json. Source data are read when the job runs, not when
# the DAG is built, so a dry run needs none of them.


rule prepare_dataset:
    """Generate (demo), index (files), convert into the CT store (dicom, nifti) or preprocess
    (fastmri) one dataset, and write its manifest."""
    input:
        unpack(dataset_inputs),
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


rule download_dataset:
    """Fetch the archives of a dataset's `download` block from the user's own links (resumable,
    checked, extracted); the record names files only, never links."""
    output:
        f"{RESULTS}/data/downloads/{{dataset}}.json",
    log:
        "logs/download_dataset/{dataset}.log",
    params:
        download=lambda w: config["datasets"][w.dataset]["download"],
    conda:
        ENV
    script:
        "../scripts/download.py"
