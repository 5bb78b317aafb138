# CT diffusion priors: train them (retrain=true) or install the shipped demo weights.
# kind: patch (DiffusionBlend), slice (DDS), score (DiffusionMBIR).

if config.get("ct_priors") and config["retrain"]:

    rule train_ct_prior:
        """Train one CT prior on the train split of its dataset (CUDA when present, resumable)."""
        input:
            manifest=f"{RESULTS}/data/ct/{{dataset}}/manifest.json",
        output:
            weights=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.safetensors",
            sidecar=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.json",
        log:
            "logs/train_ct_prior/{kind}_{dataset}.log",
        wildcard_constraints:
            kind="patch|slice|score",
        threads: THREADS
        priority: PRIORITY_LONG
        resources:
            gpu=1,
            runtime=720,
        params:
            cfg=lambda w: config["ct_priors"][w.kind],
        conda:
            ENV
        script:
            "../scripts/train.py"

elif config.get("ct_priors"):

    rule install_weights_ct_prior:
        """Copy one shipped CT prior after checking its sha256."""
        input:
            weights=lambda w: shipped_weights_ct(w.kind),
        output:
            weights=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.safetensors",
            sidecar=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.json",
        log:
            "logs/install_weights_ct_prior/{kind}_{dataset}.log",
        priority: PRIORITY_UNLOCKS
        wildcard_constraints:
            kind="patch|slice|score",
        conda:
            ENV
        script:
            "../scripts/install_weights.py"
