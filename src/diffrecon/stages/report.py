"""Stage ``report``: per-cell summaries, paper-shaped tables, run-time tables, comparison and
uncertainty figures, ablation tables and plots — all built from the stage files, never typed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from diffrecon.io import read_attrs, read_cases, read_mask
from diffrecon.methods import label

def summarize_metrics(metrics_files, out_summary, out_cases):
    """Concatenate per-case metrics of every cell; write all rows and the per-cell summary."""
    import pandas as pd

    from diffrecon.report.tables import summarize

    cases = pd.concat([pd.read_csv(p) for p in metrics_files], ignore_index=True)
    cases.to_csv(out_cases, index=False)
    summary = summarize(cases)
    summary.to_csv(out_summary, index=False)
    return summary


def runtime_tables(cases_csv, modality: str, out_csv, out_md, methods=None, steps_note: str = ""):
    """Wall time per test volume and NFE of every method and setting (from the per-case rows)."""
    import pandas as pd

    from diffrecon.report.tables import runtime_table, write_runtime_table

    table = runtime_table(pd.read_csv(cases_csv), method_order=methods)
    write_runtime_table(table, out_csv, out_md, modality, note=steps_note)
    return table


def paper_tables(summary_csv, modality: str, view: str, out_csv, out_md, out_tex, methods=None, settings=None,
                 datasets=None, title=None, steps_note: str = ""):
    """Write one paper-shaped table (CSV, Markdown, LaTeX) from the per-cell summary.

    ``datasets`` / ``settings`` (when given) keep only those column groups, in that order;
    ``title`` replaces the caption's lead.
    """
    import pandas as pd

    from diffrecon.metrics.ct import CT_CONVENTION
    from diffrecon.metrics.mri import MRI_CONVENTION
    from diffrecon.report.tables import write_table

    summary = pd.read_csv(summary_csv)
    if datasets is not None:
        summary = summary[summary["dataset"].isin(list(datasets))]
    if settings is not None:
        summary = summary[summary["setting"].isin(list(settings))]
    stem = Path(out_csv).with_suffix("")
    convention = MRI_CONVENTION if modality == "mri" else CT_CONVENTION
    paths = write_table(summary, modality, view, stem, f"{convention} {steps_note}".strip(),
                        method_order=methods, setting_order=settings, dataset_order=datasets, title=title)
    for produced, wanted in zip((paths["csv"], paths["md"], paths["tex"]), (out_csv, out_md, out_tex)):
        if Path(produced) != Path(wanted):
            Path(produced).replace(wanted)
    return paths


def setting_figure(target_path, measurements_path, recon_paths: dict, out_png, case_index: int = 0):
    """Comparison figure of one setting for one test case (MRI: middle slice; CT: three views)."""
    from diffrecon.metrics.ct import ct_view_metrics
    from diffrecon.metrics.mri import fastmri_metrics
    from diffrecon.report.figures import comparison_figure, ct_views_figure

    attrs = read_attrs(measurements_path)
    targets = read_cases(target_path, "target")
    case = list(targets)[min(case_index, len(targets) - 1)]
    target = targets[case]
    recons = {label(m): read_cases(p, "reconstruction")[case] for m, p in recon_paths.items()}
    title = f"{attrs['dataset']} · {attrs['setting']} · {case}"
    if attrs["modality"] == "ct":
        metrics = {m: ct_view_metrics(target, r) for m, r in recons.items()}
        return ct_views_figure(target, recons, out_png, metrics_by_view=metrics, title=title)
    mask = read_mask(measurements_path)
    meta = json.loads(attrs["mask"])
    k = target.shape[0] // 2
    metrics = {m: fastmri_metrics(target, r) for m, r in recons.items()}
    return comparison_figure(target[k], {m: r[k] for m, r in recons.items()}, out_png, measurement=mask,
                             measurement_label=f"mask (R_eff = {meta['effective_acceleration']:.2f})",
                             metrics=metrics, title=f"{title} · slice {k} (metrics over the volume)")


def posterior_figure(target_path, recon_path, out_png, case_index: int = 0):
    """Uncertainty figure of a posterior-sampling cell: middle slice of one case (mean, std, error)."""
    from diffrecon.report.figures import uncertainty_figure

    targets = read_cases(target_path, "target")
    case = list(targets)[min(case_index, len(targets) - 1)]
    try:
        std = read_cases(recon_path, "std")[case]
    except KeyError:
        raise ValueError(f"{recon_path}: case {case} has no 'std' (not a posterior-sampling method)") from None
    mean = read_cases(recon_path, "reconstruction")[case]
    attrs = read_attrs(recon_path)
    params = json.loads(attrs.get("params", "{}"))
    k = mean.shape[0] // 2
    title = f"{label(attrs['method'])} · {attrs['setting']} · {case} · slice {k}"
    return uncertainty_figure(targets[case][k], mean[k], std[k], out_png, n_samples=params.get("n_samples"), title=title)


def ct_ablation_report(metrics_files: dict, out: dict, where: str = ""):
    """Ablation tables and plots from ``{(method, variant): metrics.csv}`` (see :mod:`diffrecon.report.ablation`)."""
    import pandas as pd

    from diffrecon.report.ablation import write_ablation

    return write_ablation({key: pd.read_csv(path) for key, path in metrics_files.items()}, out, where)


def mri_ablation_report(metrics_files: dict, out: dict, where: str = ""):
    """score-MRI steps ablation from ``{(setting, method, variant): metrics.csv}``: one curve per
    setting, labelled with its algorithm (magnitude: Alg. 2, single-coil: Alg. 3, multi-coil: Alg. 4)."""
    import pandas as pd

    from diffrecon.report.ablation import write_ablation
    from diffrecon.settings import MRISetting

    algorithm = {"magnitude": "Alg. 2", "singlecoil": "Alg. 3", "multicoil": "Alg. 4"}
    metrics = {}
    for (setting, method, variant), path in metrics_files.items():
        coil = MRISetting.parse(setting).coil_mode
        curve = f"{label('score')} {algorithm[coil] if method == 'score' else 'Alg. 5'} · {setting}"
        metrics[(curve, variant)] = pd.read_csv(path)
    return write_ablation(metrics, out, where, modality="mri")


def prospective_figure(measurements_path, recon_paths: dict, out_png, case_index: int = 0):
    """Prospective data (no target): the case's own mask, its zero-filled magnitude (RSS over
    coils) and each method's reconstruction, middle slice; no metrics."""
    import torch

    from diffrecon.io import read_case_masks
    from diffrecon.physics.fft import ifft2c
    from diffrecon.report.figures import reconstructions_figure

    attrs = read_attrs(measurements_path)
    kspace = read_cases(measurements_path, "kspace")
    case = list(kspace)[min(case_index, len(kspace) - 1)]
    mask = read_case_masks(measurements_path).get(case, read_mask(measurements_path))
    k = kspace[case].shape[0] // 2
    zf = ifft2c(torch.from_numpy(kspace[case][k])).numpy()
    zf = np.sqrt((np.abs(zf) ** 2).sum(axis=0)) if zf.ndim == 3 else np.abs(zf)
    images = {"zero-filled input": zf}
    images.update({label(m): read_cases(p, "reconstruction")[case][k] for m, p in recon_paths.items()})
    r_eff = mask.size / max(float(mask.sum()), 1.0)
    return reconstructions_figure(images, out_png, measurement=mask, measurement_label=f"own mask (R_eff = {r_eff:.2f})",
                                  title=f"{attrs['dataset']} · {attrs['setting']} · {case} · slice {k} (no reference)")
