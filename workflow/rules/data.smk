# Stage 1: datasets (generate the embedded demo, index user files, or preprocess raw fastMRI files)
# -> manifest.json. Raw files are globbed when the rule runs, so the DAG builds without them.


rule prepare_dataset:
    """Generate (source: demo), index (source: files) or preprocess (source: fastmri) one dataset
    and write its manifest."""
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
