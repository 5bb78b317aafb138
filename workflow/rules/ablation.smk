# Stage 6 (CT): DiffusionBlend ablations on one cell (`ct.ablation`): PSNR vs steps, vs jump frequency.


rule reconstruct_ct_ablation:
    """One ablation variant (steps<N> or jump<J>) of a CT diffusion method on the first test volumes."""
    input:
        unpack(ablation_inputs),
    output:
        f"{RESULTS}/ct/{{dataset}}/{{setting}}/ablation/{{method}}/{{variant}}/recon.h5",
    log:
        "logs/reconstruct_ct_ablation/{dataset}/{setting}/{method}/{variant}.log",
    threads: THREADS
    priority: PRIORITY_LONG
    resources:
        gpu=gpu_request,
    params:
        modality="ct",
        method_params=ablation_params,
    conda:
        ENV
    script:
        "../scripts/reconstruct.py"


rule evaluate_ablation:
    """Per-view metrics of one ablation variant (only the volumes it reconstructed)."""
    input:
        target=f"{RESULTS}/ct/{{dataset}}/{{setting}}/target.h5",
        recon=f"{RESULTS}/ct/{{dataset}}/{{setting}}/ablation/{{method}}/{{variant}}/recon.h5",
    output:
        f"{RESULTS}/ct/{{dataset}}/{{setting}}/ablation/{{method}}/{{variant}}/metrics.csv",
    log:
        "logs/evaluate_ablation/{dataset}/{setting}/{method}/{variant}.log",
    params:
        subset=True,
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule ablation_report:
    """Tables and plots of the two studies: PSNR vs DDIM steps (NFE), PSNR vs jump frequency."""
    input:
        ablation_metrics_files(),
    output:
        steps_csv=f"{RESULTS}/tables/ct_ablation_steps.csv",
        steps_md=report(f"{RESULTS}/tables/ct_ablation_steps.md", caption="../report/ablation.rst", category="Ablations"),
        jump_csv=f"{RESULTS}/tables/ct_ablation_jump.csv",
        jump_md=report(f"{RESULTS}/tables/ct_ablation_jump.md", caption="../report/ablation.rst", category="Ablations"),
        steps_png=report(f"{RESULTS}/figures/ct/ablation_steps.png", caption="../report/ablation.rst",
                         category="Ablations"),
        jump_png=report(f"{RESULTS}/figures/ct/ablation_jump.png", caption="../report/ablation.rst",
                        category="Ablations"),
    log:
        "logs/ablation_report/ct.log",
    params:
        variants=X.ablation_variants(),
        where=X.ablation_where(),
    conda:
        ENV
    script:
        "../scripts/ablation_report.py"
