# Stage 5: per-cell summaries, paper-shaped tables and comparison figures.


rule summarize:
    """Collect every cell's metrics.csv into one per-cell summary (mean, std, n)."""
    input:
        metrics_files,
    output:
        summary=report(
            f"{RESULTS}/tables/{{modality}}_summary.csv",
            caption="../report/summary.rst",
            category=report_category,
            subcategory="tables",
            labels=lambda w: {"result": f"{REPORT_CATEGORY[w.modality]} per-cell summary"},
        ),
        cases=f"{RESULTS}/tables/{{modality}}_cases.csv",
    log:
        "logs/summarize/{modality}.log",
    params:
        convention=lambda w: metric_convention(w.modality),
        settings=lambda w: [setting_description(w.modality, s) for s in X.settings(w.modality)],
    conda:
        ENV
    script:
        "../scripts/summarize.py"


rule table:
    """One main table: CT per view, MRI per coil mode; rows = methods, column groups = dataset x setting."""
    input:
        f"{RESULTS}/tables/{{modality}}_summary.csv",
    output:
        csv=f"{RESULTS}/tables/{{modality}}_{{view}}.csv",
        md=report(
            f"{RESULTS}/tables/{{modality}}_{{view}}.md",
            caption="../report/table.rst",
            category=report_category,
            subcategory="tables",
            labels=lambda w: {"result": f"{REPORT_CATEGORY[w.modality]} table · {w.view}"
                                        + ("" if w.modality == "mri" else " view")},
        ),
        tex=f"{RESULTS}/tables/{{modality}}_{{view}}.tex",
    log:
        "logs/table/{modality}_{view}.log",
    params:
        modality=lambda w: w.modality,
        view=lambda w: "image" if w.modality == "mri" else w.view,
        methods=lambda w: X.methods(w.modality),
        settings=table_settings,
        datasets=lambda w: list(config[w.modality]["datasets"]),
        steps_note=lambda w: X.reduced_steps_note(w.modality),
        convention=lambda w: metric_convention(w.modality),
        setting_notes=lambda w: [setting_description(w.modality, s) for s in table_settings(w)],
        title=lambda w: f"MRI reconstruction, {COIL_TITLES[w.view]}" if w.modality == "mri" else None,
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
            category="MRI",
            subcategory="tables",
            labels={"result": "MRI robustness table (out-of-distribution test sets)"},
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
        convention=metric_convention("mri"),
        setting_notes=lambda w: [setting_description("mri", s) for s in X.robustness_columns()["settings"]],
        held_out=lambda w: [f"{name}: split {r['split']} of {r['of']}" for name, r in X.robustness_sets().items()],
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
            category=report_category,
            subcategory="{dataset} · {setting}",
            labels=lambda w: {"result": f"{REPORT_CATEGORY[w.modality]} comparison · {w.dataset} · {w.setting}"},
        ),
        f"{RESULTS}/figures/{{modality}}/{{dataset}}/{{setting}}.pdf",   # the same figure as vector PDF
    log:
        "logs/figure/{modality}/{dataset}/{setting}.log",
    wildcard_constraints:
        setting=TABLE_SETTING,
    params:
        case_index=config["figures"]["case_index"],
        convention=lambda w: metric_convention(w.modality),
        setting=lambda w: setting_description(w.modality, w.setting),
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
            caption="../report/prospective.rst",
            category="MRI",
            subcategory="{dataset} · prospective-{coil_mode}",
            labels={"result": "MRI prospective reconstructions · {dataset} · {coil_mode}"},
        ),
        f"{RESULTS}/figures/mri/{{dataset}}/prospective-{{coil_mode}}.pdf",   # the same figure as vector PDF
    log:
        "logs/figure/mri/{dataset}/prospective-{coil_mode}.log",
    params:
        case_index=config["figures"]["case_index"],
        setting=lambda w: setting_description("mri", f"prospective-{w.coil_mode}"),
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
            category="MRI",
            subcategory="{dataset} · {setting}",
            labels=lambda w: {"result": f"MRI uncertainty · {w.dataset} · {w.setting} · {methods.label(w.method)}"},
        ),
        f"{RESULTS}/figures/mri/{{dataset}}/uncertainty/{{setting}}_{{method}}.pdf",   # the same figure as vector PDF
    log:
        "logs/uncertainty_figure/{dataset}/{setting}_{method}.log",
    params:
        case_index=config["figures"]["case_index"],
        setting=lambda w: setting_description("mri", w.setting),
        method=lambda w: methods.label(w.method),
        n_samples=lambda w: X.n_samples(w.setting, w.method),
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
            category="Run time",
            subcategory=report_category,
            labels=lambda w: {"result": f"{REPORT_CATEGORY[w.modality]} run time per test volume and NFE"},
        ),
    log:
        "logs/runtime_table/{modality}.log",
    params:
        methods=lambda w: X.methods(w.modality),
        steps_note=lambda w: X.reduced_steps_note(w.modality),
        setting_notes=lambda w: [setting_description(w.modality, s) for s in X.settings(w.modality)],
    conda:
        ENV
    script:
        "../scripts/runtime_table.py"


if LOSS_CURVES:

    rule loss_curves:
        """Training loss against step of every trained model the run uses, from their sidecar JSONs
        (one job: a figure takes well under a second, a process start more)."""
        input:
            [c["sidecar"] for c in LOSS_CURVES.values()],
        output:
            [
                report(
                    f"{RESULTS}/figures/training/{name}.png",
                    caption="../report/training.rst",
                    category="Training",
                    subcategory=c["model"],
                    labels={"result": " · ".join(v for k, v in c.items() if k != "sidecar" and v)},
                )
                for name, c in LOSS_CURVES.items()
            ],
            [f"{RESULTS}/figures/training/{name}.pdf" for name in LOSS_CURVES],   # the same figures as vector PDF
        log:
            "logs/loss_curves.log",
        params:
            curves=[{k: c[k] for k in ("model", "dataset", "family")} for c in LOSS_CURVES.values()],
        conda:
            ENV
        script:
            "../scripts/loss_curve.py"
