"""Ablations: image quality against the number of sampling steps, and DiffusionBlend's jump frequency.

CT: two studies on one cell (dataset × setting), each a set of *variants* of a diffusion method:

* ``steps<N>``  – the method with ``n_steps = N`` DDIM steps (NFE = N full-volume network passes
  for the VP methods);
* ``jump<J>``   – DiffusionBlend++ with a jump-3 partition every ``J``-th step and adjacent
  partitions otherwise; ``J = 0`` never jumps (plain DiffusionBlend: adjacent only), ``J = 1``
  jumps at every step.

MRI: one steps study of score-MRI (``steps<N>`` = N predictor-corrector steps) in one or more
settings — a magnitude setting runs Algorithm 2, a multi-coil one Algorithm 4.

Variant results live under ``results/{modality}/{dataset}/{setting}/ablation/{method}/{variant}/``;
this module names the variants, turns their per-case metrics into tables (CSV + Markdown, one row
per variant, PSNR/SSIM per view) and draws the plots.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from diffrecon.methods import label as method_label

__all__ = ["VARIANT", "ablation_variants", "parse_variant", "variant_params", "ablation_tables", "write_ablation"]

VARIANT = re.compile(r"^(steps|jump)([0-9]+)$")
JUMP_METHOD = "diffusion_blend_pp"


def ablation_variants(cfg: Mapping | None) -> list[tuple[str, str]]:
    """``[(method, variant)]`` of the ``ct.ablation`` config block (empty without one)."""
    if not cfg:
        return []
    out = [(m, f"steps{n}") for m in cfg.get("steps_methods", [JUMP_METHOD]) for n in cfg.get("steps", [])]
    out += [(JUMP_METHOD, f"jump{j}") for j in cfg.get("jump_every", [])]
    return out


def parse_variant(variant: str) -> tuple[str, int]:
    """``("steps" | "jump", value)`` of a variant name such as ``steps50`` or ``jump2``."""
    m = VARIANT.match(variant)
    if not m:
        raise ValueError(f"ablation variant '{variant}' is not steps<N> or jump<J>")
    return m.group(1), int(m.group(2))


def variant_params(method: str, variant: str, method_block: Mapping | None, max_cases: int | None) -> dict:
    """Sampler parameters of one variant: the method's ``ct.<method>`` block with the studied key replaced."""
    kind, value = parse_variant(variant)
    params = dict(method_block or {})
    if kind == "steps":
        if value < 1:
            raise ValueError(f"ablation variant '{variant}': at least one step is needed")
        params["n_steps"] = value
    else:
        if method != JUMP_METHOD:
            raise ValueError(f"jump-frequency variants apply to {JUMP_METHOD}, not {method}")
        params["jump_every"] = value
    if max_cases:
        params["max_cases"] = int(max_cases)
    return params


def _jump_label(j: int) -> str:
    if j == 0:
        return "adjacent only (DiffusionBlend)"
    if j == 1:
        return "jump every step"
    suffix = "th" if 10 <= j % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(j % 10, "th")
    return f"adjacent + jump every {j}{suffix} step"


def ablation_tables(metrics: Mapping[tuple[str, str], pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``{"steps": df, "jump": df}`` from per-case metrics keyed by ``(method, variant)``.

    Each row is one variant: mean PSNR / SSIM over cases per view, mean NFE and seconds per volume,
    number of cases. Steps rows are sorted by method then N; jump rows by J.
    """
    rows = {"steps": [], "jump": []}
    for (method, variant), df in metrics.items():
        kind, value = parse_variant(variant)
        row = {"method": method, ("steps" if kind == "steps" else "jump_every"): value}
        if kind == "jump":
            row["partitions"] = _jump_label(value)
        for view, g in df.groupby("view", sort=False):
            row[f"psnr_{view}"] = g["psnr"].mean()
            row[f"ssim_{view}"] = g["ssim"].mean()
        per_case = df.drop_duplicates("case")
        row["nfe"] = per_case["nfe"].mean() if "nfe" in per_case else np.nan
        row["seconds"] = per_case["seconds"].mean() if "seconds" in per_case else np.nan
        row["n_cases"] = int(per_case.shape[0])
        rows[kind].append(row)
    steps = pd.DataFrame(rows["steps"])
    if not steps.empty:
        steps = steps.sort_values(["method", "steps"], kind="stable").reset_index(drop=True)
    jump = pd.DataFrame(rows["jump"])
    if not jump.empty:
        jump = jump.sort_values("jump_every", kind="stable").reset_index(drop=True)
    return {"steps": steps, "jump": jump}


def _markdown(df: pd.DataFrame, keys: Sequence[str], caption: str) -> str:
    views = [c[5:] for c in df.columns if c.startswith("psnr_")]
    header = [*keys, *(f"PSNR {v}" for v in views), *(f"SSIM {v}" for v in views), "NFE", "s / volume"]
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + ":---|" * len(keys) + "---:|" * (len(header) - len(keys))]
    best = {c: df[c].max() for c in df.columns if c.startswith(("psnr_", "ssim_"))}
    for _, r in df.iterrows():
        cells = [method_label(r[k]) if k == "method" else str(r[k]) for k in keys]
        for c in [f"psnr_{v}" for v in views] + [f"ssim_{v}" for v in views]:
            text = f"{r[c]:.2f}" if c.startswith("psnr") else f"{r[c]:.3f}"
            cells.append(f"**{text}**" if np.isclose(r[c], best[c]) else text)
        cells += ["–" if pd.isna(r["nfe"]) else f"{r['nfe']:.0f}", f"{r['seconds']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(df: pd.DataFrame, x: str, out_png, title: str, xlabel: str, by_method: bool, ssim: bool = False,
          logx: bool = False) -> Path:
    from diffrecon.report.figures import plt, save_figure

    views = [c[5:] for c in df.columns if c.startswith("psnr_")]
    if ssim:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.6), constrained_layout=True)
    else:
        fig, ax = plt.subplots(figsize=(5.2, 3.6), constrained_layout=True)
    groups = df.groupby("method", sort=False) if by_method else [("", df)]
    if views and np.allclose(df[[f"psnr_{v}" for v in views]].to_numpy(),
                             df[[f"psnr_{views[0]}"]].to_numpy()):
        views = views[:1]  # PSNR from one volume MSE: the same in every view
    for name, g in groups:
        for v in views:
            label = " · ".join(t for t in (method_label(name), v if len(views) > 1 else "") if t) or "PSNR"
            ax.plot(g[x], g[f"psnr_{v}"], marker="o", label=label)
            if ssim:
                ax2.plot(g[x], g[f"ssim_{v}"], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if ssim:
        ax2.set_xlabel(xlabel)
        ax2.set_ylabel("SSIM")
        ax2.grid(alpha=0.3)
        if logx:
            ax2.set_xscale("log")
    if logx:
        ax.set_xscale("log")
    if x == "jump_every":
        ax.set_xticks(df[x].to_numpy())
        ax.set_xticklabels(["adj. only" if j == 0 else str(j) for j in df[x]])
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def write_ablation(metrics: Mapping[tuple[str, str], pd.DataFrame], out: Mapping[str, str | Path],
                   where: str = "", modality: str = "ct") -> dict[str, pd.DataFrame]:
    """Tables (``<study>_csv``, ``<study>_md``) and plots (``<study>_png``) of the studies named in
    ``out`` (CT: ``steps`` and ``jump``; MRI: ``steps``); a study without variants gets a table
    saying so and no curve."""
    from diffrecon.report.figures import plt, save_figure

    tables = ablation_tables(metrics)
    if modality == "mri":
        specs = {"steps": (["method", "steps"], "steps", "PSNR and SSIM vs number of steps N (score-MRI)",
                           "predictor-corrector steps N", True)}
    else:
        specs = {
            "steps": (["method", "steps"], "steps", "PSNR vs number of DDIM steps (NFE)", "DDIM steps (= NFE)", True),
            "jump": (["jump_every", "partitions"], "jump_every", "PSNR vs jump frequency (DiffusionBlend++)",
                     "jump-3 partition every J-th step", False),
        }
    specs = {k: v for k, v in specs.items() if f"{k}_csv" in out}
    for kind, (keys, x, title, xlabel, by_method) in specs.items():
        df = tables[kind]
        Path(out[f"{kind}_csv"]).parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out[f"{kind}_csv"], index=False)
        caption = (f"**{modality.upper()} ablation: {title}{' — ' + where if where else ''}.** "
                   "Mean over test volumes; NFE counts network evaluations of all posterior samples.")
        if df.empty:
            Path(out[f"{kind}_md"]).write_text(caption + "\n\nNo variants configured.\n")
            fig, ax = plt.subplots(figsize=(4, 1.5))
            ax.axis("off")
            ax.text(0.5, 0.5, "no variants configured", ha="center", va="center")
            save_figure(fig, out[f"{kind}_png"])
            continue
        Path(out[f"{kind}_md"]).write_text(_markdown(df, keys, caption))
        _plot(df, x, out[f"{kind}_png"], f"{title}\n{where}" if where else title, xlabel, by_method,
              ssim=modality == "mri", logx=modality == "mri")
    return tables
