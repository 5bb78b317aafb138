# Supervised U-Net baseline: one image-domain U-Net per mask family (kind x R x ACS fraction),
# trained on the magnitude slices of a dataset's train split. Always trained (no shipped weights).


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
    threads: 2
    resources:
        gpu=1,
    params:
        cfg=config.get("mri", {}).get("unet"),
        seed=config["seed"],
    conda:
        ENV
    script:
        "../scripts/train_unet.py"
