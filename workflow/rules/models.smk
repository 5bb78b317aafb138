# Trained models (diffrecon.methods.MODELS): the diffusion priors are trained (retrain=true) or
# installed from the shipped demo weights; the supervised baselines (MRI: one U-Net / E2E-VarNet per
# mask family = kind x R x ACS fraction; CT: one FBP-U-Net per setting) are installed where their
# block ships weights for that family or setting (`weights: {family: file}`) and trained otherwise.
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
        params:
            method="score_mri",
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
        params:
            method=lambda w: f"ct_{w.kind}",
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


# Shipped supervised baselines (none with retrain): installed instead of trained for the mask
# families / CT settings their `weights` map names (shipped_baselines: common.smk); the sidecar must
# record the same dataset and family / setting.
for _baseline, _shipped in shipped_baselines().items():

    rule:
        name:
            f"install_weights_{_baseline}"
        input:
            weights=lambda w, files=_shipped: repository_path(files[w.family]),
        output:
            weights=f"{RESULTS}/models/{_baseline}/{{dataset}}/{{family}}/model.safetensors",
            sidecar=f"{RESULTS}/models/{_baseline}/{{dataset}}/{{family}}/model.json",
        log:
            f"logs/install_weights_{_baseline}/{{dataset}}/{{family}}.log",
        priority: PRIORITY_UNLOCKS
        wildcard_constraints:
            family="|".join(re.escape(k) for k in _shipped),
        params:
            method=_baseline,
            expect=lambda w, b=_baseline: {"dataset": w.dataset,
                                           ("setting" if b == "fbp_unet" else "mask_family"): w.family},
        conda:
            ENV
        script:
            "../scripts/install_weights.py"


if "unet" in shipped_baselines():

    ruleorder: install_weights_unet > train_unet


if "varnet" in shipped_baselines():

    ruleorder: install_weights_varnet > train_varnet


if "fbp_unet" in shipped_baselines():

    ruleorder: install_weights_fbp_unet > train_fbp_unet
