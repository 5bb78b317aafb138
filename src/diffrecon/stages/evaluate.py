"""Stage ``evaluate``: per-case metrics of one table cell → ``metrics.csv`` (one row per case
and view; fastMRI's convention for MRI, per-view for CT)."""

from __future__ import annotations


import numpy as np

from diffrecon.io import read_attrs, read_case_attrs, read_cases, atomic_path


def evaluate(target_path, recon_path, out_csv, dataset: str, setting: str, method: str, subset: bool = False,
             max_cases: int | None = None):
    """Score ``recon_path`` against ``target_path``; write and return the rows.

    The reconstruction must hold every target case, or with ``subset`` (ablations limited to
    ``max_cases``) a non-empty subset of them; only those are scored — with ``max_cases``, only
    the first ``max_cases`` of them in target order.
    """
    import pandas as pd

    from diffrecon.metrics import case_rows
    from diffrecon.metrics.ct import CT_CONVENTION, ct_view_metrics
    from diffrecon.metrics.mri import MRI_CONVENTION, fastmri_metrics

    from diffrecon.errors import DataFormatError

    modality = read_attrs(target_path).get("modality")
    if modality not in ("mri", "ct"):
        raise DataFormatError(f"{target_path}: root attribute 'modality' is {modality!r}, not mri / ct: not a target file")
    targets = read_cases(target_path, "target")
    recons = read_cases(recon_path, "reconstruction")
    attrs = read_case_attrs(recon_path)
    if (not recons or not set(recons) <= set(targets)) if subset else set(targets) != set(recons):
        raise ValueError(f"{recon_path}: cases {sorted(recons)} differ from targets {sorted(targets)}")
    scored = [c for c in targets if c in recons][:max_cases or None]
    rows = []
    for case, target in targets.items():
        if case not in scored:
            continue
        if target.ndim != 3 or recons[case].shape != target.shape:
            raise DataFormatError(f"{recon_path}: case '{case}' reconstruction shape {recons[case].shape} "
                                  f"differs from the target's {target.shape} in {target_path}")
        if float(target.max()) == float(target.min()):
            raise DataFormatError(f"{target_path}: case '{case}' target is constant (every value "
                                  f"{float(target.min()):g}): PSNR/SSIM undefined")
        if modality == "mri":
            by_view = {"image": fastmri_metrics(target, recons[case])}
        else:
            by_view = ct_view_metrics(target, recons[case])
        new = case_rows(modality, dataset, setting, method, case, by_view)
        for row in new:
            row["seconds"] = float(attrs[case].get("seconds", np.nan))
            row["nfe"] = float(attrs[case].get("nfe", np.nan))
        rows += new
    df = pd.DataFrame(rows)
    df["convention"] = MRI_CONVENTION if modality == "mri" else CT_CONVENTION
    if out_csv is not None:                 # None: only return the rows (the command line)
        with atomic_path(out_csv) as tmp:
            df.to_csv(tmp, index=False)
    return df
