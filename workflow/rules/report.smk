# Stage 5: per-cell summaries, paper-shaped tables and comparison figures.


rule summarize:
    """Collect every cell's metrics.csv into one per-cell summary (mean, std, n)."""
    input:
        metrics_files,
    output:
        summary=report(
            f"{RESULTS}/tables/{{modality}}_summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
        cases=f"{RESULTS}/tables/{{modality}}_cases.csv",
    log:
        "logs/summarize/{modality}.log",
    conda:
        ENV
    script:
        "../scripts/summarize.py"


rule table:
    """One table per modality and view: rows = methods, column groups = dataset x setting."""
    input:
        f"{RESULTS}/tables/{{modality}}_summary.csv",
    output:
        csv=f"{RESULTS}/tables/{{modality}}_{{view}}.csv",
        md=report(
            f"{RESULTS}/tables/{{modality}}_{{view}}.md",
            caption="../report/table.rst",
            category="Tables",
        ),
        tex=f"{RESULTS}/tables/{{modality}}_{{view}}.tex",
    log:
        "logs/table/{modality}_{view}.log",
    params:
        modality=lambda w: w.modality,
        view=lambda w: w.view,
        methods=lambda w: X.methods(w.modality),
        settings=lambda w: X.settings(w.modality),
        datasets=lambda w: list(config[w.modality]["datasets"]),
        steps_note=lambda w: X.reduced_steps_note(w.modality),
    conda:
        ENV
    script:
        "../scripts/table.py"


rule robustness_table:
    """Out-of-distribution check: each robustness set next to its in-distribution test set."""
    input:
        f"{RESULTS}/tables/mri_summary.csv",
    output:
        csv=f"{RESULTS}/tables/mri_robustness.csv",
        md=report(
            f"{RESULTS}/tables/mri_robustness.md",
            caption="../report/robustness.rst",
            category="Tables",
        ),
        tex=f"{RESULTS}/tables/mri_robustness.tex",
    log:
        "logs/table/mri_robustness.log",
    params:
        modality="mri",
        view="image",
        methods=lambda w: X.robustness_columns()["methods"],
        settings=lambda w: X.robustness_columns()["settings"],
        datasets=lambda w: X.robustness_columns()["datasets"],
        steps_note=X.reduced_steps_note("mri"),
        title="MRI robustness: in-distribution test set next to held-out sets, same models and masks",
    conda:
        ENV
    script:
        "../scripts/table.py"


rule figure:
    """Comparison grid of one setting: measurement | methods | ground truth, zoom and error maps."""
    input:
        unpack(figure_inputs),
    output:
        report(
            f"{RESULTS}/figures/{{modality}}/{{dataset}}/{{setting}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        "logs/figure/{modality}/{dataset}/{setting}.log",
    params:
        case_index=config["figures"]["case_index"],
    conda:
        ENV
    script:
        "../scripts/figure.py"


ruleorder: prospective_figure > figure


rule prospective_figure:
    """Prospective data: zero-filled input and every method's reconstruction (no target, no metrics)."""
    input:
        unpack(prospective_figure_inputs),
    output:
        report(
            f"{RESULTS}/figures/mri/{{dataset}}/prospective-{{coil_mode,multicoil|singlecoil}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
    log:
        "logs/figure/mri/{dataset}/prospective-{coil_mode}.log",
    params:
        case_index=config["figures"]["case_index"],
    conda:
        ENV
    script:
        "../scripts/prospective_figure.py"


rule uncertainty_figure:
    """Posterior mean, pixel-wise std over the samples and |error| of a score-MRI cell."""
    input:
        target=f"{RESULTS}/mri/{{dataset}}/{{setting}}/target.h5",
        recon=f"{RESULTS}/mri/{{dataset}}/{{setting}}/{{method}}/recon.h5",
    output:
        report(
            f"{RESULTS}/figures/mri/{{dataset}}/uncertainty/{{setting}}_{{method}}.png",
            caption="../report/uncertainty.rst",
            category="Figures",
        ),
    log:
        "logs/uncertainty_figure/{dataset}/{setting}_{method}.log",
    params:
        case_index=config["figures"]["case_index"],
    conda:
        ENV
    script:
        "../scripts/uncertainty_figure.py"


rule runtime_table:
    """Wall time per test volume and NFE of every method and setting."""
    input:
        f"{RESULTS}/tables/{{modality}}_cases.csv",
    output:
        csv=f"{RESULTS}/tables/{{modality}}_runtime.csv",
        md=report(
            f"{RESULTS}/tables/{{modality}}_runtime.md",
            caption="../report/runtime.rst",
            category="Tables",
        ),
    log:
        "logs/runtime_table/{modality}.log",
    params:
        methods=lambda w: X.methods(w.modality),
        steps_note=lambda w: X.reduced_steps_note(w.modality),
    conda:
        ENV
    script:
        "../scripts/runtime_table.py"
