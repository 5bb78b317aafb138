# Stage 6: ablations. CT (`ct.ablation`, one cell): DiffusionBlend's PSNR vs DDIM steps and vs
# jump frequency. MRI (`mri.ablation`): score-MRI's PSNR and SSIM vs predictor-corrector steps N.
# Each variant is one job: reconstructed (or its table cell's reconstruction copied) and scored.


rule reconstruct_ablation:
    """One ablation variant (steps<N> or jump<J>) of a diffusion method on the first test volumes,
    scored in the same job; a variant whose computation is its table cell's copies the cell's
    reconstruction instead of running it again."""
    input:
        unpack(ablation_inputs),
        target=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/target.h5",
    output:
        recon=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/ablation/{{method}}/{{variant}}/recon.h5",
        metrics=f"{RESULTS}/{{modality}}/{{dataset}}/{{setting}}/ablation/{{method}}/{{variant}}/metrics.csv",
    log:
        "logs/reconstruct_ablation/{modality}/{dataset}/{setting}/{method}/{variant}.log",
    threads: THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=gpu_request,
    params:
        modality=lambda w: w.modality,
        method_params=ablation_params,
        subset=True,
        max_cases=lambda w: X.ablation_max_cases(w.modality),
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"


#: report subcategory of the CT ablation (its one cell)
CT_ABLATION_SUBCATEGORY = f"{X.ablation()['dataset']} · {X.ablation()['setting']}" if X.ablation() else "none"


rule ablation_report:
    """CT: tables and plots of PSNR vs DDIM steps (NFE) and PSNR vs jump frequency."""
    input:
        ablation_metrics_files(),
    output:
        steps_csv=f"{RESULTS}/tables/ct_ablation_steps.csv",
        steps_md=report(f"{RESULTS}/tables/ct_ablation_steps.md", caption="../report/ablation.rst",
                        category="Ablations", subcategory=CT_ABLATION_SUBCATEGORY,
                        labels={"result": "CT PSNR vs DDIM steps · table"}),
        jump_csv=f"{RESULTS}/tables/ct_ablation_jump.csv",
        jump_md=report(f"{RESULTS}/tables/ct_ablation_jump.md", caption="../report/ablation.rst",
                       category="Ablations", subcategory=CT_ABLATION_SUBCATEGORY,
                       labels={"result": "CT PSNR vs jump frequency · table"}),
        steps_png=report(f"{RESULTS}/figures/ct/ablation_steps.png", caption="../report/ablation.rst",
                         category="Ablations", subcategory=CT_ABLATION_SUBCATEGORY,
                         labels={"result": "CT PSNR vs DDIM steps · plot"}),
        jump_png=report(f"{RESULTS}/figures/ct/ablation_jump.png", caption="../report/ablation.rst",
                        category="Ablations", subcategory=CT_ABLATION_SUBCATEGORY,
                        labels={"result": "CT PSNR vs jump frequency · plot"}),
        steps_pdf=f"{RESULTS}/figures/ct/ablation_steps.pdf",
        jump_pdf=f"{RESULTS}/figures/ct/ablation_jump.pdf",
    log:
        "logs/ablation_report/ct.log",
    params:
        modality="ct",
        variants=X.ablation_variants(),
        where=X.ablation_where(),
        convention=metric_convention("ct"),
        setting_notes=[setting_description("ct", X.ablation()["setting"])] if X.ablation() else [],
    conda:
        ENV
    script:
        "../scripts/ablation_report.py"


rule mri_ablation_report:
    """MRI: table and plot of PSNR and SSIM vs the number of score-MRI steps N (Alg. 2 / Alg. 4)."""
    input:
        mri_ablation_metrics_files(),
    output:
        steps_csv=f"{RESULTS}/tables/mri_ablation_steps.csv",
        steps_md=report(f"{RESULTS}/tables/mri_ablation_steps.md", caption="../report/ablation.rst",
                        category="Ablations", subcategory=mri_ablation_subcategory(),
                        labels={"result": "MRI PSNR and SSIM vs score-MRI steps · table"}),
        steps_png=report(f"{RESULTS}/figures/mri/ablation_steps.png", caption="../report/ablation.rst",
                         category="Ablations", subcategory=mri_ablation_subcategory(),
                         labels={"result": "MRI PSNR and SSIM vs score-MRI steps · plot"}),
        steps_pdf=f"{RESULTS}/figures/mri/ablation_steps.pdf",
    log:
        "logs/ablation_report/mri.log",
    params:
        modality="mri",
        variants=X.mri_ablation_runs(),
        where=X.mri_ablation_where(),
        convention=metric_convention("mri"),
        setting_notes=list(dict.fromkeys(setting_description("mri", s) for s, _, _ in X.mri_ablation_runs())),
    conda:
        ENV
    script:
        "../scripts/ablation_report.py"
