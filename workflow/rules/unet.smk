# Supervised U-Net baselines, always trained (no shipped weights): MRI, one image-domain U-Net
# per mask family (kind x R x ACS fraction) on the magnitude slices of a train split; CT, one
# FBP-U-Net per setting on the axial slices of a train split.


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
        cfg=config.get("mri", {}).get("unet"),
        seed=config["seed"],
    conda:
        ENV
    script:
        "../scripts/train_unet.py"


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
        cfg=lambda w: {"projector": config["ct"].get("projector", "linear"), **config["ct"].get("fbp_unet", {})},
    conda:
        ENV
    script:
        "../scripts/train_unet.py"
