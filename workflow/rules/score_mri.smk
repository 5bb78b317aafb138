# score-MRI prior: train the VE score network, or install the shipped demo weights.

if config.get("score_mri") and config["retrain"]:

    rule train_score_mri:
        """Train the VE-SDE score network on the magnitude slices of a dataset's train split."""
        input:
            manifest=f"{RESULTS}/data/mri/{{dataset}}/manifest.json",
        output:
            weights=f"{RESULTS}/models/score_mri/{{dataset}}/model.safetensors",
            sidecar=f"{RESULTS}/models/score_mri/{{dataset}}/model.json",
        log:
            "logs/train_score_mri/{dataset}.log",
        threads: THREADS
        priority: PRIORITY_LONG
        resources:
            gpu=1,
            runtime=720,
        params:
            cfg=config.get("score_mri"),
        conda:
            ENV
        script:
            "../scripts/train.py"

elif config.get("score_mri"):

    rule install_weights_score_mri:
        """Copy the shipped demo weights after checking their sha256."""
        input:
            weights=shipped_weights("score_mri"),
        output:
            weights=f"{RESULTS}/models/score_mri/{{dataset}}/model.safetensors",
            sidecar=f"{RESULTS}/models/score_mri/{{dataset}}/model.json",
        log:
            "logs/install_weights_score_mri/{dataset}.log",
        priority: PRIORITY_UNLOCKS
        conda:
            ENV
        script:
            "../scripts/install_weights.py"
