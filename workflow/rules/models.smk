# Trained models (diffrecon.methods.MODELS): the diffusion priors are trained (retrain=true) or
# installed from the shipped demo weights; the supervised U-Nets are always trained (MRI: one per
# mask family = kind x R x ACS fraction; CT: one FBP-U-Net per setting).
# A prior whose train block asks for gpus: N > 1 trains in N data-parallel processes on one node:
# its job requests gpu=N and the script launches `torchrun --standalone --nproc_per_node N`.
# (train_gpus: common.smk)


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
            gpu=train_gpus(config.get("score_mri")),
            runtime=720,
        params:
            model="score_mri",
            cfg=config.get("score_mri"),
        conda:
            ENV
        script:
            "../scripts/train.py"

elif config.get("score_mri"):

    rule install_weights_score_mri:
        """Copy the shipped demo weights after checking their sha256."""
        input:
            weights=repository_path(config["score_mri"]["weights"]),
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


#: CT priors trained here: every one with retrain, else those without shipped weights (only
#: TPDM's perpendicular prior may lack them); the others are installed from weights/.
CT_TRAINED = [k for k, c in (config.get("ct_priors") or {}).items() if config["retrain"] or not c.get("weights")]
CT_SHIPPED = [k for k in (config.get("ct_priors") or {}) if k not in CT_TRAINED]

if CT_TRAINED:

    rule train_ct_prior:
        """Train one CT prior (patch, slice, score or slice_perp) on the train split of its dataset."""
        input:
            manifest=f"{RESULTS}/data/ct/{{dataset}}/manifest.json",
        output:
            weights=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.safetensors",
            sidecar=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.json",
        log:
            "logs/train_ct_prior/{kind}_{dataset}.log",
        wildcard_constraints:
            kind="|".join(CT_TRAINED),
        threads: THREADS
        priority: PRIORITY_LONG
        resources:
            gpu=lambda w: train_gpus(config["ct_priors"][w.kind]),
            runtime=720,
        params:
            model="ct_prior",
            cfg=lambda w: config["ct_priors"][w.kind],
        conda:
            ENV
        script:
            "../scripts/train.py"

if CT_SHIPPED:

    rule install_weights_ct_prior:
        """Copy one shipped CT prior after checking its sha256."""
        input:
            weights=lambda w: repository_path(config["ct_priors"][w.kind]["weights"]),
        output:
            weights=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.safetensors",
            sidecar=f"{RESULTS}/models/ct_{{kind}}/{{dataset}}/model.json",
        log:
            "logs/install_weights_ct_prior/{kind}_{dataset}.log",
        priority: PRIORITY_UNLOCKS
        wildcard_constraints:
            kind="|".join(CT_SHIPPED),
        conda:
            ENV
        script:
            "../scripts/install_weights.py"


rule train_unet:
    """Train the supervised U-Net (zero-filled magnitude -> target) of one mask family."""
    input:
        manifest=f"{RESULTS}/data/mri/{{dataset}}/manifest.json",
    output:
        weights=f"{RESULTS}/models/unet/{{dataset}}/{{mask}}-R{{acc}}-acs{{acs}}/model.safetensors",
        sidecar=f"{RESULTS}/models/unet/{{dataset}}/{{mask}}-R{{acc}}-acs{{acs}}/model.json",
    log:
        "logs/train_unet/{dataset}/{mask}-R{acc}-acs{acs}.log",
    wildcard_constraints:
        mask="[a-z0-9]+",
        acc="[0-9.]+",
        acs="[0-9.]+",
    threads: THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=1,
    params:
        model="unet",
        cfg=config.get("mri", {}).get("unet"),
        seed=config["seed"],
    conda:
        ENV
    script:
        "../scripts/train.py"


rule train_fbp_unet:
    """Train the FBP-U-Net (FBP of the setting -> target) of one CT setting."""
    input:
        manifest=f"{RESULTS}/data/ct/{{dataset}}/manifest.json",
    output:
        weights=f"{RESULTS}/models/fbp_unet/{{dataset}}/{{setting}}/model.safetensors",
        sidecar=f"{RESULTS}/models/fbp_unet/{{dataset}}/{{setting}}/model.json",
    log:
        "logs/train_fbp_unet/{dataset}/{setting}.log",
    threads: THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=1,
    params:
        model="fbp_unet",
        cfg=lambda w: {"projector": config["ct"].get("projector", "linear"), **config["ct"].get("fbp_unet", {})},
    conda:
        ENV
    script:
        "../scripts/train.py"


rule train_varnet:
    """Train E2E-VarNet (masked multi-coil k-space -> RSS target) of one mask family."""
    input:
        manifest=f"{RESULTS}/data/mri/{{dataset}}/manifest.json",
    output:
        weights=f"{RESULTS}/models/varnet/{{dataset}}/{{mask}}-R{{acc}}-acs{{acs}}/model.safetensors",
        sidecar=f"{RESULTS}/models/varnet/{{dataset}}/{{mask}}-R{{acc}}-acs{{acs}}/model.json",
    log:
        "logs/train_varnet/{dataset}/{mask}-R{acc}-acs{acs}.log",
    wildcard_constraints:
        mask="[a-z0-9]+",
        acc="[0-9.]+",
        acs="[0-9.]+",
    threads: THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=1,
    params:
        model="varnet",
        cfg=config.get("mri", {}).get("varnet"),
        seed=config["seed"],
    conda:
        ENV
    script:
        "../scripts/train.py"
