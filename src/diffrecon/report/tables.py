"""Summaries of the per-case metrics and paper-shaped result tables.

Pipeline flow::

    metrics.csv (one per table cell, columns diffrecon.metrics.CASE_COLUMNS)
        -> pandas.concat -> summarize() -> paper_table() / write_table()

A paper table has one row per method (written as the papers print its name,
:attr:`diffrecon.methods.Method.label`; the CSV keeps the method names) and a three-level column header
``(dataset, setting, metric)`` with ``metric`` in ``("PSNR", "SSIM")``; each
cell reads ``"mean ± std"`` over the test cases of that cell.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from diffrecon.methods import label as method_label

__all__ = [
    "GROUP_COLUMNS",
    "MISSING",
    "SUMMARY_COLUMNS",
    "TABLE_METRICS",
    "paper_table",
    "paper_table_values",
    "summarize",
    "write_table",
]

#: columns a summary is grouped by (one summary row per combination)
GROUP_COLUMNS: tuple[str, ...] = ("modality", "dataset", "setting", "method", "view")

_METRICS = ("psnr", "ssim", "nmse")

#: all columns of :func:`summarize`'s result, in order
SUMMARY_COLUMNS: tuple[str, ...] = GROUP_COLUMNS + ("n",) + tuple(
    f"{m}_{s}" for m in _METRICS for s in ("mean", "std")
)

#: metric label in a paper table -> (summary column prefix, decimals)
TABLE_METRICS: dict[str, tuple[str, int]] = {"PSNR": ("psnr", 2), "SSIM": ("ssim", 3)}

#: text of a table cell without results
MISSING = "–"


# --------------------------------------------------------------------------- summary


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Aggregate per-case metrics to one row per (modality, dataset, setting, method, view).

    Returns the columns :data:`SUMMARY_COLUMNS`: the group keys, ``n`` (the
    number of per-case rows in the group) and ``{psnr,ssim,nmse}_{mean,std}``.
    The standard deviation is the population one (``ddof=0``), so a group with
    a single case has ``std = 0``.  NaN values (e.g. ``nmse`` of CT rows) are
    skipped; a metric that is NaN for every case gives NaN mean and std.
    Rows are sorted by the group keys.
    """
    missing = [c for c in GROUP_COLUMNS + ("psnr", "ssim") if c not in per_case.columns]
    if missing:
        raise ValueError(f"summarize: per-case table lacks columns {missing}")
    df = per_case.copy()
    if "nmse" not in df.columns:
        df["nmse"] = np.nan
    for col in GROUP_COLUMNS:
        df[col] = df[col].astype(str)
    for col in _METRICS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)

    keys = list(GROUP_COLUMNS)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=object if c in keys else float) for c in SUMMARY_COLUMNS})

    grouped = df.groupby(keys, sort=True, dropna=False)
    out = grouped.size().rename("n").to_frame()
    for metric in _METRICS:
        out[f"{metric}_mean"] = grouped[metric].mean()
        out[f"{metric}_std"] = grouped[metric].std(ddof=0)
    out = out.reset_index()
    out["n"] = out["n"].astype(int)
    return out[list(SUMMARY_COLUMNS)]


# --------------------------------------------------------------------------- paper table


def _natural_key(text: str) -> list:
    """Sort key that orders embedded integers numerically ("x4" < "x8" < "x12")."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok.lower()) for tok in re.split(r"(\d+)", text) if tok]


def _ordered(present: Iterable[str], order: Sequence[str] | None) -> list[str]:
    """Entries of ``order`` first (even if absent), then the rest naturally sorted."""
    present = list(dict.fromkeys(str(p) for p in present))
    head = [str(o) for o in order] if order is not None else []
    tail = sorted((p for p in present if p not in head), key=_natural_key)
    return head + tail


def _select(summary: pd.DataFrame, modality: str, view: str) -> pd.DataFrame:
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"summary lacks columns {missing}; build it with summarize()")
    sel = summary[
        (summary["modality"].astype(str) == str(modality)) & (summary["view"].astype(str) == str(view))
    ].copy()
    for col in ("dataset", "setting", "method"):
        sel[col] = sel[col].astype(str)
    dup = sel.duplicated(["dataset", "setting", "method"])
    if dup.any():
        raise ValueError(
            "summary has several rows for the same (dataset, setting, method) at "
            f"modality={modality!r}, view={view!r}"
        )
    return sel


def _layout(
    sel: pd.DataFrame,
    method_order: Sequence[str] | None,
    setting_order: Sequence[str] | None,
    dataset_order: Sequence[str] | None,
) -> tuple[pd.Index, pd.MultiIndex]:
    methods = _ordered(sel["method"], method_order)
    datasets = _ordered(sel["dataset"], dataset_order)
    settings = _ordered(sel["setting"], setting_order)
    index = pd.Index(methods, name="method", dtype=object)
    columns = pd.MultiIndex.from_tuples(
        [(d, s, m) for d in datasets for s in settings for m in TABLE_METRICS],
        names=["dataset", "setting", "metric"],
    )
    return index, columns


def paper_table_values(
    summary: pd.DataFrame,
    modality: str,
    view: str,
    method_order: Sequence[str] | None = None,
    setting_order: Sequence[str] | None = None,
    dataset_order: Sequence[str] | None = None,
    stat: str = "mean",
) -> pd.DataFrame:
    """Numeric twin of :func:`paper_table`: same index and columns, float cells.

    ``stat`` is ``"mean"``, ``"std"`` or ``"n"``; missing cells are NaN.  Used
    to find the best method per column (bold in the written tables).
    """
    if stat not in ("mean", "std", "n"):
        raise ValueError(f"stat must be 'mean', 'std' or 'n', got {stat!r}")
    sel = _select(summary, modality, view)
    index, columns = _layout(sel, method_order, setting_order, dataset_order)
    values = pd.DataFrame(np.nan, index=index, columns=columns, dtype=float)
    for rec in sel.itertuples(index=False):
        for label, (prefix, _) in TABLE_METRICS.items():
            col = (rec.dataset, rec.setting, label)
            field = "n" if stat == "n" else f"{prefix}_{stat}"
            values.loc[rec.method, col] = float(getattr(rec, field))
    return values


def _format_cell(mean: float, std: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    if std is None or math.isnan(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def paper_table(
    summary: pd.DataFrame,
    modality: str,
    view: str,
    method_order: Sequence[str] | None = None,
    setting_order: Sequence[str] | None = None,
    dataset_order: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A results table shaped like a paper's main table, as text cells.

    Rows are methods (index name ``method``); columns are a MultiIndex with
    levels ``(dataset, setting, metric)``, ``metric`` in ``("PSNR", "SSIM")``.
    Cells read ``"mean ± std"`` (PSNR with 2, SSIM with 3 decimals); cells
    without results read ``"–"``.

    ``method_order`` / ``setting_order`` / ``dataset_order`` put the named
    entries first in that order (a named method without any result gets a row
    of ``"–"``); entries not named follow in natural sort order.  The column
    grid is the full product datasets x settings x metrics.

    The numeric means behind the cells are available from
    :func:`paper_table_values` with the same arguments.
    """
    means = paper_table_values(summary, modality, view, method_order, setting_order, dataset_order, "mean")
    stds = paper_table_values(summary, modality, view, method_order, setting_order, dataset_order, "std")
    text = pd.DataFrame(MISSING, index=means.index, columns=means.columns, dtype=object)
    for col in means.columns:
        decimals = TABLE_METRICS[col[2]][1]
        for method in means.index:
            text.loc[method, col] = _format_cell(means.loc[method, col], stds.loc[method, col], decimals)
    return text


def _best_mask(means: pd.DataFrame) -> pd.DataFrame:
    """True where a cell holds the highest mean of its column (ties all marked)."""
    mask = pd.DataFrame(False, index=means.index, columns=means.columns)
    for col in means.columns:
        column = means[col]
        present = column.dropna()
        if present.empty:
            continue
        mask[col] = column == present.max()
    return mask


# --------------------------------------------------------------------------- writers


def _n_phrase(counts: pd.DataFrame) -> str:
    ns = sorted({int(v) for v in counts.to_numpy().ravel() if np.isfinite(v)})
    if not ns:
        return "n test cases"
    if len(ns) == 1:
        return f"n = {ns[0]} test cases"
    return f"n = {ns[0]}–{ns[-1]} test cases per cell"


def _caption_lead(modality: str, view: str) -> str:
    lead = f"{modality.upper()} reconstruction"
    if view and view != "image":
        lead += f", {view} view"
    return lead


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


#: the widest Markdown table written (columns, the method column included)
MAX_MD_COLUMNS = 12

_MASK_NAMES = {"gaussian1d": "Gaussian 1D", "uniform1d": "Uniform 1D", "gaussian2d": "Gaussian 2D",
               "uniform2d": "Uniform 2D", "poisson": "Poisson"}


def setting_label(setting: str, with_coil_mode: bool = True) -> str:
    """A setting as table headers print it: ``Gaussian 1D ×4`` (MRI; `` · multicoil`` unless the
    table is one coil mode's), ``8 views`` / ``90° limited angle`` (CT); other names unchanged."""
    from diffrecon.settings import CTSetting, MRISetting

    for kind in (MRISetting, CTSetting):
        try:
            parsed = kind.parse(str(setting))
        except ValueError:
            continue
        if kind is CTSetting:
            return parsed.label
        text = f"{_MASK_NAMES.get(parsed.mask, parsed.mask)} ×{parsed.acceleration:g}"
        return f"{text} · {parsed.coil_mode}" if with_coil_mode else text
    return str(setting)


def _one_coil_mode(settings) -> bool:
    """Whether every setting is an MRI setting of one coil mode (headers then leave it out)."""
    from diffrecon.settings import MRISetting

    try:
        return len({MRISetting.parse(str(s)).coil_mode for s in settings}) == 1
    except ValueError:
        return False


def _column_chunks(columns, max_columns: int = MAX_MD_COLUMNS) -> list[list[tuple]]:
    """Consecutive (dataset, setting) groups of ``(dataset, setting, quantity)`` columns, as many per
    part as fit in ``max_columns`` columns beside the method column (a group is never split)."""
    groups = list(dict.fromkeys((d, s) for d, s, _ in columns))
    per_group = max(1, len(columns) // max(1, len(groups)))
    fit = max(1, (max_columns - 1) // per_group)
    return [[c for c in columns if (c[0], c[1]) in groups[i:i + fit]] for i in range(0, len(groups), fit)]


def _write_markdown(path: Path, text: pd.DataFrame, best: pd.DataFrame, caption: str,
                    one_coil_mode: bool = False) -> None:
    """The table, in parts of at most :data:`MAX_MD_COLUMNS` columns (same rows, next column groups)."""
    parts = _column_chunks(text.columns)
    lines = [caption]
    for i, cols in enumerate(parts):
        if len(parts) > 1:
            lines += ["", f"*Part {i + 1} of {len(parts)}.*"]
        header = ["Method"] + [f"{d} / {setting_label(s, not one_coil_mode)} {m}" for d, s, m in cols]
        lines += ["", "| " + " | ".join(_md_escape(h) for h in header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * len(cols)) + "|")
        for method in text.index:
            cells = [_md_escape(method_label(method))]
            for col in cols:
                cell = _md_escape(text.loc[method, col])
                cells.append(f"**{cell}**" if best.loc[method, col] else cell)
            lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "–": "--",
    "—": "---",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
}


def _tex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _tex_label(stem: Path) -> str:
    return "tab:" + re.sub(r"[^A-Za-z0-9:-]+", "-", stem.name).strip("-")


def _write_latex(path: Path, text: pd.DataFrame, best: pd.DataFrame, caption: str, label: str,
                 one_coil_mode: bool = False) -> None:
    datasets = list(dict.fromkeys(d for d, _, _ in text.columns))
    groups = list(dict.fromkeys((d, s) for d, s, _ in text.columns))
    n_metrics = len(TABLE_METRICS)
    spec = "l" + "".join(" " + "c" * n_metrics for _ in groups)

    lines = [
        r"% requires \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    # dataset row
    cells, rules, start = [""], [], 2
    for d in datasets:
        width = n_metrics * sum(1 for g in groups if g[0] == d)
        cells.append(rf"\multicolumn{{{width}}}{{c}}{{{_tex_escape(d)}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    lines += [" & ".join(cells) + r" \\", "".join(rules)]
    # setting row
    cells, rules, start = [""], [], 2
    for _, s in groups:
        cells.append(rf"\multicolumn{{{n_metrics}}}{{c}}{{{_tex_escape(setting_label(s, not one_coil_mode))}}}")
        rules.append(rf"\cmidrule(lr){{{start}-{start + n_metrics - 1}}}")
        start += n_metrics
    lines += [" & ".join(cells) + r" \\", "".join(rules)]
    # metric row
    lines.append(" & ".join(["Method"] + [_tex_escape(m) for _, _, m in text.columns]) + r" \\")
    lines.append(r"\midrule")
    for method in text.index:
        cells = [_tex_escape(method_label(method))]
        for col in text.columns:
            cell = _tex_escape(text.loc[method, col])
            cells.append(rf"\textbf{{{cell}}}" if best.loc[method, col] else cell)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_table(
    summary: pd.DataFrame,
    modality: str,
    view: str,
    stem: str | Path,
    convention_note: str,
    method_order: Sequence[str] | None = None,
    setting_order: Sequence[str] | None = None,
    dataset_order: Sequence[str] | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Write one paper table as ``{stem}.csv``, ``{stem}.md`` and ``{stem}.tex``.

    ``title`` replaces the caption's lead ("MRI reconstruction", "CT reconstruction, axial view").

    * ``.csv``: the summary rows of this table (modality, view) in table order,
      numeric columns :data:`SUMMARY_COLUMNS`; machine-readable, no formatting.
    * ``.md``: a Markdown pipe table, header ``"dataset / setting metric"``,
      the best (highest mean) PSNR and SSIM of every (dataset, setting) column
      group in bold (ties all bold), preceded by a caption line naming the
      convention and stating that values are mean ± std over n test cases.
    * ``.tex``: a booktabs ``table`` with ``\\multicolumn`` dataset and setting
      headers, best values in ``\\textbf``, and the same caption.

    Parent directories are created.  Returns ``{"csv": path, "md": path, "tex": path}``.
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    args = (summary, modality, view, method_order, setting_order, dataset_order)
    text = paper_table(*args)
    means = paper_table_values(*args, stat="mean")
    counts = paper_table_values(*args, stat="n")
    best = _best_mask(means)

    sel = _select(summary, modality, view)
    rank = {
        "method": {m: i for i, m in enumerate(text.index)},
        "dataset": {d: i for i, d in enumerate(dict.fromkeys(c[0] for c in text.columns))},
        "setting": {s: i for i, s in enumerate(dict.fromkeys(c[1] for c in text.columns))},
    }
    sel = sel.assign(
        _d=sel["dataset"].map(rank["dataset"]),
        _s=sel["setting"].map(rank["setting"]),
        _m=sel["method"].map(rank["method"]),
    ).sort_values(["_d", "_s", "_m"])
    paths = {"csv": Path(f"{stem}.csv"), "md": Path(f"{stem}.md"), "tex": Path(f"{stem}.tex")}
    sel[list(SUMMARY_COLUMNS)].to_csv(paths["csv"], index=False)

    lead = title or _caption_lead(modality, view)
    n_text = _n_phrase(counts)
    note = convention_note.strip()
    md_caption = (
        f"**{lead}.** Values are mean ± std over {n_text}; best PSNR and SSIM per column "
        f"in bold. {note}"
    ).strip()
    tex_caption = (
        f"{_tex_escape(lead)}. Values are mean $\\pm$ std over {_tex_escape(n_text)}; "
        f"best PSNR and SSIM per column in bold. {_tex_escape(note)}"
    ).strip()
    one_coil = _one_coil_mode(sel["setting"])
    _write_markdown(paths["md"], text, best, md_caption, one_coil)
    _write_latex(paths["tex"], text, best, tex_caption, _tex_label(stem), one_coil)
    return paths


def runtime_table(cases: pd.DataFrame, method_order: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows = methods, columns = (dataset, setting, ``seconds`` | ``NFE``).

    ``seconds``: mean wall time of one test volume (one reconstruction call), ``NFE``: mean number
    of full-volume network evaluations (NaN for methods without a network or not recording it).
    Per-case rows repeat per view, so each case counts once.
    """
    need = {"dataset", "setting", "method", "case", "seconds"}
    if not need <= set(cases.columns):
        raise ValueError(f"runtime_table: per-case table lacks columns {sorted(need - set(cases.columns))}")
    df = cases.drop_duplicates(["dataset", "setting", "method", "case"]).copy()
    if "nfe" not in df.columns:
        df["nfe"] = np.nan
    agg = df.groupby(["method", "dataset", "setting"], sort=True)[["seconds", "nfe"]].mean()
    table = agg.rename(columns={"seconds": "seconds", "nfe": "NFE"}).unstack(["dataset", "setting"])
    table.columns = table.columns.reorder_levels([1, 2, 0])
    table = table.sort_index(axis=1, level=[0, 1], sort_remaining=False)
    order = [m for m in (method_order or []) if m in table.index]
    table = table.reindex(order + [m for m in table.index if m not in order])
    table.index.name = "method"
    return table


def write_runtime_table(table: pd.DataFrame, out_csv, out_md, modality: str, note: str = "") -> None:
    """CSV (flat columns ``dataset/setting/quantity``) and a Markdown table of :func:`runtime_table`."""
    flat = table.copy()
    flat.columns = [f"{d}/{s}/{q}" for d, s, q in table.columns]
    flat.to_csv(out_csv)
    lines = [f"**{modality.upper()} run time.** Wall time per test volume (s, mean over cases) and NFE "
             "(full-volume network evaluations) of each method, from the per-case result files."
             + (f" {note}" if note else "")]
    parts = _column_chunks(table.columns)
    for k, cols in enumerate(parts):
        if len(parts) > 1:
            lines += ["", f"*Part {k + 1} of {len(parts)}.*"]
        header = ["Method"] + [f"{d} / {setting_label(s)} {q}" for d, s, q in cols]
        lines += ["", "| " + " | ".join(_md_escape(h) for h in header) + " |", "|:---|" + "---:|" * len(cols)]
        for method, row in table[cols].iterrows():
            cells = [MISSING if pd.isna(v) else (f"{v:.0f}" if q == "NFE" else f"{v:.2f}")
                     for (_, _, q), v in zip(cols, row)]
            lines.append("| " + " | ".join([_md_escape(method_label(method)), *cells]) + " |")
    Path(out_md).write_text("\n".join(lines) + "\n")
