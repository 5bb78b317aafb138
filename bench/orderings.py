"""The papers' orderings, checked on a run's summary tables, and a held-out run to check them on.

Orderings (mean PSNR of a cell; CT: 8 views; MRI: Gaussian 1-D ×4):

* CT, as DiffusionBlend's table: DiffusionBlend++ ≥ DiffusionBlend > DDS > DDS 2D > FBP-UNet > FBP;
* MRI, as score-MRI's tables, in every coil mode: score-MRI > TV > zero-filled;
* MRI robustness (score-MRI's distribution-shift claim): score-MRI ≥ U-Net on each robustness set.

``--results DIR`` reads ``DIR/tables/{mri,ct}_summary.csv`` of a finished run (e.g. the demo's
``results``) and prints each ordering with its values and PASS / FAIL.

``--heldout`` first runs the **held-out** matrix, data the demo never tunes on, with the demo's
models (shipped priors, U-Net / VarNet / FBP-UNet trained on the demo's training sets): MRI on
the synthetic head phantoms (``source: demo``; the prior learned real anatomy), CT on the
``heldout`` thorax family (thin, off-centre, rotated patients, effusions, emphysema). The
config is derived from ``config.yaml`` (same models, steps and masks), written to
``DIR/config.yaml`` and run with ``snakemake --cores 2`` in ``DIR`` (``--keep DIR``, default a
temporary folder).

    python bench/orderings.py --results results
    python bench/orderings.py --heldout --keep /tmp/heldout
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
CT_ORDER = ["diffusion_blend_pp", "diffusion_blend", "dds", "dds_2d", "fbp_unet", "fbp"]   # best first
MRI_ORDER = ["score", "tv", "zero_filled"]
CT_SETTING = "sv8"
MRI_SETTING = "gaussian1d-R4-acs0.12-{coil_mode}"


def heldout_config(base: dict) -> dict:
    """The held-out matrix: the demo config with held-out test sets and only the ordering cells."""
    cfg = yaml.safe_load(yaml.safe_dump(base))
    brain, thorax = base["datasets"]["demo_brain"], base["datasets"]["demo_thorax"]
    cfg["datasets"]["heldout_brain"] = {"modality": "mri", "source": "demo", "size": brain["size"],
                                        "coils": brain["coils"], "slices": brain["slices"], "volumes": {"test": 2}}
    cfg["datasets"]["heldout_thorax"] = {"modality": "ct", "source": "demo", "size": thorax["size"],
                                         "slices": thorax["slices"], "volumes": {"test": 1},
                                         "families": {"test": "heldout"}}
    mri = cfg["mri"]
    mri.update(datasets=["heldout_brain"], masks=["gaussian1d"], accelerations=[{"factor": 4, "acs_fraction": 0.12}],
               methods=[m for m in mri["methods"] if m in ("zero_filled", "tv", "unet", "score")])
    for key in ("ablation", "robustness", "prospective"):
        mri.pop(key, None)
    ct = cfg["ct"]
    ct.update(datasets=["heldout_thorax"], settings=[CT_SETTING], methods=[m for m in ct["methods"] if m in CT_ORDER])
    ct.setdefault("fbp_unet", {})["dataset"] = "demo_thorax"
    ct.pop("ablation", None)
    for block in ("unet", "varnet"):
        mri.setdefault(block, {})["dataset"] = "demo_brain"
    return cfg


def _psnr(summary: pd.DataFrame, dataset: str, setting: str, method: str) -> float | None:
    rows = summary[(summary.dataset == dataset) & (summary.setting == setting) & (summary.method == method)]
    if "view" in rows and (rows.view == "axial").any():
        rows = rows[rows.view == "axial"]
    return float(rows.psnr_mean.iloc[0]) if len(rows) else None


def _chain(label: str, values: dict[str, float | None], weak_first: bool) -> tuple[str, bool]:
    """One ordering best → worst: PASS when each value beats the next (the first pair ≥ when weak_first)."""
    names = [m for m, v in values.items() if v is not None]
    ok = all((values[a] >= values[b]) if (weak_first and i == 0) else (values[a] > values[b])
             for i, (a, b) in enumerate(zip(names, names[1:])))
    chain = " ".join(f"{m} {values[m]:.2f}" + ("" if i == len(names) - 1 else (" ≥" if weak_first and i == 0 else " >"))
                     for i, m in enumerate(names))
    missing = [m for m, v in values.items() if v is None]
    return f"{'PASS' if ok else 'FAIL'}  {label}: {chain}" + (f"  (no cell: {', '.join(missing)})" if missing else ""), ok


def check(results: Path) -> list[tuple[str, bool]]:
    """Every ordering that the run's summaries hold cells for."""
    out = []
    ct_path, mri_path = results / "tables" / "ct_summary.csv", results / "tables" / "mri_summary.csv"
    if ct_path.is_file():
        ct = pd.read_csv(ct_path)
        for dataset in sorted(ct.dataset.unique()):
            values = {m: _psnr(ct, dataset, CT_SETTING, m) for m in CT_ORDER}
            out.append(_chain(f"CT {dataset} {CT_SETTING} PSNR", values, weak_first=True))
    if mri_path.is_file():
        mri = pd.read_csv(mri_path)
        in_dist = [d for d in sorted(mri.dataset.unique()) if not d.endswith("_ood")]
        for dataset in in_dist:
            for coil_mode in ("magnitude", "singlecoil", "multicoil"):
                setting = MRI_SETTING.format(coil_mode=coil_mode)
                values = {m: _psnr(mri, dataset, setting, m) for m in MRI_ORDER}
                if any(v is not None for v in values.values()):
                    out.append(_chain(f"MRI {dataset} {setting} PSNR", values, weak_first=False))
        for dataset in sorted(set(mri.dataset.unique()) - set(in_dist)):
            for setting in sorted(mri[mri.dataset == dataset].setting.unique()):
                values = {m: _psnr(mri, dataset, setting, m) for m in ("score", "unet")}
                if all(v is not None for v in values.values()):
                    out.append(_chain(f"MRI robustness {dataset} {setting} PSNR", values, weak_first=True))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, help="a finished run's results folder")
    ap.add_argument("--heldout", action="store_true", help="run the held-out matrix first, then check it")
    ap.add_argument("--keep", type=Path, help="working folder of the held-out run (default: a temporary one)")
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    if args.heldout:
        work = args.keep or Path(tempfile.mkdtemp(prefix="diffrecon-heldout-"))
        work.mkdir(parents=True, exist_ok=True)
        cfg = heldout_config(yaml.safe_load((ROOT / "config.yaml").read_text()))
        (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
               "--cores", args.cores, "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            print(f"held-out run FAILED after {time.perf_counter() - t0:.0f} s ({work})")
            return 1
        print(f"held-out run: {time.perf_counter() - t0:.0f} s in {work}")
        results = work / cfg.get("results_dir", "results")
    elif args.results:
        results = args.results
    else:
        ap.error("give --results DIR or --heldout")
    lines = check(results)
    if not lines:
        print(f"{results}: no summary table with the orderings' cells")
        return 1
    for line, _ in lines:
        print(line)
    print(f"{sum(ok for _, ok in lines)} of {len(lines)} orderings hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
