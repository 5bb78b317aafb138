# Stage 3: one reconstruction per table cell (any method of the registry, either modality),
# scored in the same job (metrics.csv: one row per case and view, fastMRI's convention for MRI,
# per view for CT) — one process per cell instead of two. Prospective cells have no target: they
# write recon.h5 only. With mri.blocks, the cells of its methods run as one job per block of
# slices, merged into the same recon.h5 and scored there (reconstruct_block, merge_blocks). With
# mri.case_groups / ct.case_groups, the cells of their methods run as one job per group of the
# test volumes, merged and scored likewise (reconstruct_cases, merge_cases). The classical MRI
# methods of one setting share one job (reconstruct_classical; SHARED_CLASSICAL: common.smk).


rule reconstruct:
    """Reconstruct every test case of one setting with one method, and score it."""
    input:
        unpack(reconstruct_inputs),
        target=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/target.h5",
    output:
        recon=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/recon.h5",
        metrics=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/metrics.csv",
    log:
        "logs/reconstruct/{modality}/{dataset}/{setting}/{method}.log",
    wildcard_constraints:
        setting=TABLE_SETTING,
    threads: reconstruct_threads
    priority: method_priority
    resources:
        gpu=gpu_request,
    params:
        modality=lambda w: w.modality,
        method_params=method_params,
        checkpoint_slices=lambda w: (config.get("mri") or {}).get("checkpoint_slices") if w.modality == "mri" else None,
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"


rule reconstruct_prospective:
    """Reconstruct every case of a prospective dataset with one method (no target: no metrics)."""
    input:
        unpack(reconstruct_inputs),
    output:
        recon=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/recon.h5",
    log:
        "logs/reconstruct/{modality}/{dataset}/{setting}/{method}.log",
    wildcard_constraints:
        modality="mri",
        setting="prospective-[^/]+",
    threads: reconstruct_threads
    priority: method_priority
    resources:
        gpu=gpu_request,
    params:
        modality=lambda w: w.modality,
        method_params=method_params,
        checkpoint_slices=lambda w: (config.get("mri") or {}).get("checkpoint_slices"),
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"


if BLOCKED_METHODS:

    ruleorder: merge_blocks > reconstruct

    rule reconstruct_block:
        """Block k of n of every test volume's slices (MRI), one method."""
        input:
            unpack(reconstruct_inputs),
        output:
            f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/blocks/{{k}}-of-{{n}}.h5",
        log:
            "logs/reconstruct_block/{modality}/{dataset}/{setting}/{method}/{k}-of-{n}.log",
        wildcard_constraints:
            modality="mri",
            k="[0-9]+",
            n="[0-9]+",
        threads: reconstruct_threads
        priority: method_priority
        resources:
            gpu=gpu_request,
        params:
            modality=lambda w: w.modality,
            method_params=method_params,
            slices=lambda w: f"{w.k}/{w.n}",
            checkpoint_slices=lambda w: config["mri"].get("checkpoint_slices"),
        conda:
            ENV
        script:
            "../scripts/reconstruct.py"

    rule merge_blocks:
        """One cell's recon.h5 from its slice blocks (the file a one-job run writes), scored."""
        input:
            blocks=block_files,
            target=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/target.h5",
        output:
            recon=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/recon.h5",
            metrics=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/metrics.csv",
        log:
            "logs/merge_blocks/{modality}/{dataset}/{setting}/{method}.log",
        wildcard_constraints:
            setting=TABLE_SETTING,
            modality="mri",
            method="|".join(BLOCKED_METHODS),
        conda:
            ENV
        script:
            "../scripts/merge_blocks.py"


if GROUPED_MODALITIES:

    ruleorder: merge_cases > reconstruct

    rule reconstruct_cases:
        """Group k of n of a cell's test volumes (either modality), one method."""
        input:
            unpack(reconstruct_inputs),
        output:
            f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/cases/{{k}}-of-{{n}}.h5",
        log:
            "logs/reconstruct_cases/{modality}/{dataset}/{setting}/{method}/{k}-of-{n}.log",
        wildcard_constraints:
            modality="|".join(GROUPED_MODALITIES),
            k="[0-9]+",
            n="[0-9]+",
        threads: reconstruct_threads
        priority: method_priority
        resources:
            gpu=gpu_request,
        params:
            modality=lambda w: w.modality,
            method_params=method_params,
            cases=lambda w: f"{w.k}/{w.n}",
            checkpoint_slices=lambda w: (config.get("mri") or {}).get("checkpoint_slices") if w.modality == "mri" else None,
        conda:
            ENV
        script:
            "../scripts/reconstruct.py"

    rule merge_cases:
        """One cell's recon.h5 from its case groups (the file a one-job run writes), scored."""
        input:
            groups=case_files,
            target=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/target.h5",
        output:
            recon=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/recon.h5",
            metrics=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/{{method}}/metrics.csv",
        log:
            "logs/merge_cases/{modality}/{dataset}/{setting}/{method}.log",
        wildcard_constraints:
            setting=TABLE_SETTING,
            modality="|".join(GROUPED_MODALITIES),
            method="|".join(GROUPED_METHODS["mri"] + GROUPED_METHODS["ct"]),
        conda:
            ENV
        script:
            "../scripts/merge_cases.py"


if len(SHARED_CLASSICAL) > 1:

    ruleorder: reconstruct_classical > reconstruct

    rule reconstruct_classical:
        """Reconstruct and score every test case of one MRI setting with each classical method."""
        input:
            measurements=f"{RESULTS}/mri/{{dataset}}/{{setting}}/measurements.h5",
            target=f"{RESULTS}/mri/{{dataset}}/{{setting}}/target.h5",
        output:
            **{f"{m}_{part}": f"{RESULTS}/mri/{{dataset}}/{{setting}}/{m}/{part}.{ext}"
               for m in SHARED_CLASSICAL for part, ext in (("recon", "h5"), ("metrics", "csv"))},
        log:
            "logs/reconstruct_classical/mri/{dataset}/{setting}.log",
        wildcard_constraints:
            setting=TABLE_SETTING,
        params:
            methods=SHARED_CLASSICAL,
            method_params=lambda w: {m: X.method_params("mri", w.setting, m) for m in SHARED_CLASSICAL},
        conda:
            ENV
        script:
            "../scripts/reconstruct_classical.py"
