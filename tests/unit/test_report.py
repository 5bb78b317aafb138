"""Summaries, paper tables and figures of diffrecon.report."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from diffrecon.report import paper_table, paper_table_values, summarize, write_table

NAN = float("nan")


def _per_case() -> pd.DataFrame:
    rows = [
        # MRI, knee x4: dps has 2 cases, zf 2 cases
        ("mri", "knee", "x4", "dps", "c1", "image", 30.0, 0.80, 0.10),
        ("mri", "knee", "x4", "dps", "c2", "image", 32.0, 0.90, 0.30),
        ("mri", "knee", "x4", "zf", "c1", "image", 25.0, 0.60, 0.50),
        ("mri", "knee", "x4", "zf", "c2", "image", 27.0, 0.70, 0.70),
        # MRI, knee x8: only dps, one case
        ("mri", "knee", "x8", "dps", "c1", "image", 28.5, 0.75, 0.20),
        # MRI, brain x4: zf beats dps on SSIM only
        ("mri", "brain", "x4", "dps", "b1", "image", 35.0, 0.91, 0.05),
        ("mri", "brain", "x4", "zf", "b1", "image", 33.0, 0.95, 0.06),
        # CT, two views of one case
        ("ct", "aapm", "8views", "fbp", "L1", "axial", 20.0, 0.50, NAN),
        ("ct", "aapm", "8views", "fbp", "L1", "coronal", 20.0, 0.40, NAN),
        ("ct", "aapm", "8views", "fbp", "L2", "axial", 24.0, 0.70, NAN),
        ("ct", "aapm", "8views", "fbp", "L2", "coronal", 24.0, 0.60, NAN),
    ]
    cols = ["modality", "dataset", "setting", "method", "case", "view", "psnr", "ssim", "nmse"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture
def summary() -> pd.DataFrame:
    return summarize(_per_case())


def _row(summary, **keys):
    sel = summary
    for k, v in keys.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, keys
    return sel.iloc[0]


# ----------------------------------------------------------------------------- summarize


def test_summarize_columns_and_groups(summary):
    assert list(summary.columns) == [
        "modality", "dataset", "setting", "method", "view", "n",
        "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "nmse_mean", "nmse_std",
    ]
    assert len(summary) == 7  # 5 MRI groups + 2 CT (axial, coronal)


def test_summarize_hand_arithmetic(summary):
    r = _row(summary, dataset="knee", setting="x4", method="dps")
    # (30 + 32) / 2 = 31, population std = 1
    assert r["n"] == 2
    assert r["psnr_mean"] == pytest.approx(31.0)
    assert r["psnr_std"] == pytest.approx(1.0)
    # (0.8 + 0.9) / 2 = 0.85, std = 0.05 ; (0.1 + 0.3) / 2 = 0.2, std = 0.1
    assert r["ssim_mean"] == pytest.approx(0.85)
    assert r["ssim_std"] == pytest.approx(0.05)
    assert r["nmse_mean"] == pytest.approx(0.2)
    assert r["nmse_std"] == pytest.approx(0.1)

    single = _row(summary, dataset="knee", setting="x8", method="dps")
    assert single["n"] == 1 and single["psnr_std"] == 0.0 and single["ssim_std"] == 0.0

    ct = _row(summary, modality="ct", view="coronal")
    assert ct["n"] == 2
    assert ct["psnr_mean"] == pytest.approx(22.0) and ct["psnr_std"] == pytest.approx(2.0)
    assert ct["ssim_mean"] == pytest.approx(0.5) and ct["ssim_std"] == pytest.approx(0.1)
    assert math.isnan(ct["nmse_mean"])


def test_summarize_requires_columns():
    with pytest.raises(ValueError):
        summarize(_per_case().drop(columns=["view"]))


# ----------------------------------------------------------------------------- paper table


def test_paper_table_layout(summary):
    table = paper_table(summary, "mri", "image", method_order=["zf", "dps"], dataset_order=["knee", "brain"])
    assert list(table.index) == ["zf", "dps"]
    assert table.index.name == "method"
    assert list(table.columns.names) == ["dataset", "setting", "metric"]
    assert list(table.columns) == [
        (d, s, m) for d in ("knee", "brain") for s in ("x4", "x8") for m in ("PSNR", "SSIM")
    ]
    assert table.loc["dps", ("knee", "x4", "PSNR")] == "31.00 ± 1.00"
    assert table.loc["dps", ("knee", "x4", "SSIM")] == "0.850 ± 0.050"
    assert table.loc["dps", ("knee", "x8", "PSNR")] == "28.50 ± 0.00"
    # missing cells
    assert table.loc["zf", ("knee", "x8", "PSNR")] == "–"
    assert table.loc["zf", ("brain", "x8", "SSIM")] == "–"


def test_paper_table_orders_and_numeric_twin(summary):
    table = paper_table(summary, "mri", "image", setting_order=["x8"])
    assert list(table.columns.get_level_values("setting").unique()) == ["x8", "x4"]
    values = paper_table_values(summary, "mri", "image", setting_order=["x8"])
    assert values.index.equals(table.index) and values.columns.equals(table.columns)
    assert values.loc["zf", ("knee", "x4", "PSNR")] == pytest.approx(26.0)
    assert math.isnan(values.loc["zf", ("knee", "x8", "SSIM")])
    # a method named in the order but without results gets a row of dashes
    extra = paper_table(summary, "mri", "image", method_order=["ours"])
    assert (extra.loc["ours"] == "–").all()


def test_paper_table_ct_view(summary):
    table = paper_table(summary, "ct", "axial")
    assert list(table.index) == ["fbp"]
    assert table.loc["fbp", ("aapm", "8views", "SSIM")] == "0.600 ± 0.100"


# ----------------------------------------------------------------------------- write_table


def test_write_table_files(tmp_path, summary):
    note = "Toy convention with data_range = 1."
    paths = write_table(summary, "mri", "image", tmp_path / "tables" / "table2", note)
    assert set(paths) == {"csv", "md", "tex"}
    for key, path in paths.items():
        assert path.suffix == "." + key and path.exists() and path.stat().st_size > 0

    flat = pd.read_csv(paths["csv"])
    assert {"psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "n"} <= set(flat.columns)
    assert len(flat) == 5 and set(flat["modality"]) == {"mri"}
    assert flat["psnr_mean"].dtype.kind == "f"

    md = paths["md"].read_text(encoding="utf-8")
    assert note in md and "mean ± std" in md
    # best per column group: knee x4 -> dps on both; brain x4 -> dps PSNR, zf SSIM
    assert "**31.00 ± 1.00**" in md and "**0.850 ± 0.050**" in md
    assert "**35.00 ± 0.00**" in md and "**0.950 ± 0.000**" in md
    assert "**26.00" not in md and "**33.00" not in md and "**0.910" not in md and "**–**" not in md
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert "knee" in header and "x4" in header and "PSNR" in header and "SSIM" in header
    rows = [line.split(" | ")[0].lstrip("| ") for line in md.splitlines() if line.startswith("| ") and "Method" not in line]
    assert "DPS" in rows and "zf" in rows and "dps" not in rows     # printed names (unregistered: as given)
    assert set(flat["method"]) >= {"dps", "zf"}                     # the CSV keeps the keys

    tex = paths["tex"].read_text(encoding="utf-8")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn", r"\caption"):
        assert token in tex
    assert r"\textbf{31.00 $\pm$ 1.00}" in tex
    assert r"data\_range" in tex  # underscore escaped
    assert "±" not in tex
    assert "\nDPS & " in tex and "\nzf & " in tex


# ----------------------------------------------------------------------------- figures


def test_report_import_is_light():
    code = "import sys, diffrecon.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture
def phantom():
    yy, xx = np.mgrid[:48, :48]
    target = np.exp(-((yy - 22) ** 2 + (xx - 26) ** 2) / 200.0)
    rng = np.random.default_rng(3)
    return target, {"zero-filled": target + 0.1 * rng.standard_normal(target.shape), "dps": 0.95 * target}


def _png(path):
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img


def test_comparison_figure(tmp_path, phantom):
    import matplotlib.pyplot as plt

    from diffrecon.report.figures import comparison_figure

    target, recons = phantom
    mask = np.zeros((48, 48))
    mask[:, ::4] = 1
    metrics = {"zero-filled": {"psnr": 20.1, "ssim": 0.5}, "dps": {"psnr": 30.2, "ssim": 0.9}}
    out = comparison_figure(target, recons, tmp_path / "fig" / "cmp.png", measurement=mask,
                            metrics=metrics, zoom=(5, 5, 12), title="x4")
    img = _png(out)
    h, w = img.shape[:2]
    assert 300 <= h <= 3000 and 600 <= w <= 4000 and w > h  # one wide row of 4 panels over errors

    out2 = comparison_figure(target, {"dps": recons["dps"]}, tmp_path / "small.png")
    assert _png(out2).shape[1] < w  # fewer panels -> narrower
    assert plt.get_fignums() == []

    with pytest.raises(ValueError):
        comparison_figure(target, {"bad": target[:-1]}, tmp_path / "bad.png")
    with pytest.raises(ValueError):
        comparison_figure(target, recons, tmp_path / "bad.png", zoom=(40, 40, 20))


def test_ct_views_figure_and_preview(tmp_path):
    import matplotlib.pyplot as plt

    from diffrecon.report.figures import ct_views_figure, save_preview

    vol = np.clip(np.linspace(0, 1, 16)[:, None, None] * np.ones((16, 20, 24)), 0, 1)
    recons = {"fbp": vol + 0.05, "ours": vol * 0.98}
    metrics = {"fbp": {v: {"psnr": 26.0, "ssim": 0.8} for v in ("axial", "coronal", "sagittal")}}
    out = ct_views_figure(vol, recons, tmp_path / "ct.png", metrics_by_view=metrics, title="AAPM")
    h, w = _png(out).shape[:2]
    assert h > w and 600 <= h <= 5000  # six rows (3 views x image/error) of 3 columns

    # zoom insets: their outlines are drawn in the zoom colour in every view
    img = _png(ct_views_figure(vol, recons, tmp_path / "z.png", zoom={"axial": (2, 3, 8)}))
    zoom_rgb = np.array([1.0, 0xd2 / 255, 0x1f / 255])
    rows = np.nonzero((np.abs(img[..., :3] - zoom_rgb).max(axis=-1) < 0.05).any(axis=1))[0]
    assert rows.size > 0 and rows.max() - rows.min() > h / 2   # outlines in the upper and lower views
    with pytest.raises(ValueError, match="unknown views"):
        ct_views_figure(vol, recons, tmp_path / "bad.png", zoom={"oblique": (0, 0, 4)})
    with pytest.raises(ValueError, match="does not fit"):
        ct_views_figure(vol, recons, tmp_path / "bad.png", zoom={"coronal": (10, 0, 12)})

    prev = save_preview(vol, tmp_path / "prev.png", title="preview")
    ph, pw = _png(prev).shape[:2]
    assert 200 <= ph <= 1500 and 200 <= pw <= 1500
    assert plt.get_fignums() == []


def test_uncertainty_figure_writes_a_four_panel_png(tmp_path):
    import matplotlib.image

    from diffrecon.report.figures import uncertainty_figure

    rng = np.random.default_rng(0)
    target = rng.random((24, 24))
    mean = target + 0.05 * rng.standard_normal((24, 24))
    std = np.abs(0.05 * rng.standard_normal((24, 24)))
    out = uncertainty_figure(target, mean, std, tmp_path / "u.png", n_samples=4, title="t")
    img = matplotlib.image.imread(out)
    assert img.shape[1] > 2.5 * img.shape[0]          # four panels side by side
    with pytest.raises(ValueError, match="equal 2-D"):
        uncertainty_figure(target, mean[:5], std, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_runtime_table_counts_each_case_once(tmp_path):
    import pandas as pd

    from diffrecon.report.tables import runtime_table, write_runtime_table

    rows = []
    for method, secs, nfe in (("fbp", (1.0, 3.0), float("nan")), ("dds", (10.0, 20.0), 50.0)):
        for case, s in zip(("a", "b"), secs):
            for view in ("axial", "coronal", "sagittal"):       # repeated per view: must count once
                rows.append({"dataset": "d", "setting": "sv8", "method": method, "case": case, "view": view,
                             "seconds": s, "nfe": nfe})
    table = runtime_table(pd.DataFrame(rows), method_order=["dds", "fbp"])
    assert list(table.index) == ["dds", "fbp"]
    assert table.loc["dds", ("d", "sv8", "seconds")] == 15.0 and table.loc["fbp", ("d", "sv8", "seconds")] == 2.0
    assert table.loc["dds", ("d", "sv8", "NFE")] == 50.0 and pd.isna(table.loc["fbp", ("d", "sv8", "NFE")])
    write_runtime_table(table, tmp_path / "r.csv", tmp_path / "r.md", "ct")
    md = (tmp_path / "r.md").read_text()
    assert "| DDS | 15.00 | 50 |" in md and "| FBP | 2.00 | – |" in md   # printed names


def test_compare_results_finds_differences(tmp_path):
    import h5py
    import numpy as np
    import pandas as pd

    from diffrecon.report.compare import compare_results

    for run, value in (("a", 1.0), ("b", 1.0), ("c", 1.0 + 1e-7)):
        cell = tmp_path / run / "mri" / "d" / "s" / "tv"
        cell.mkdir(parents=True)
        with h5py.File(cell / "recon.h5", "w") as f:
            f["cases/c0/reconstruction"] = np.full((1, 2, 2), value, np.float32)
        pd.DataFrame({"case": ["c0"], "psnr": [30.0], "seconds": [float(ord(run))]}).to_csv(cell / "metrics.csv",
                                                                                          index=False)
    assert compare_results(tmp_path / "a", tmp_path / "b") == []
    assert [d.split()[0] for d in compare_results(tmp_path / "a", tmp_path / "c")] == ["DIFF"]
    (tmp_path / "b" / "mri" / "d" / "s" / "tv" / "metrics.csv").unlink()
    assert compare_results(tmp_path / "a", tmp_path / "b") == ["MISSING mri/d/s/tv/metrics.csv"]


def test_loss_curve_figure_writes_a_png(tmp_path):
    import json

    import matplotlib.pyplot as plt

    from diffrecon.report.figures import loss_curve_figure

    sidecar = tmp_path / "model.json"
    history = [[step, 2.0 * 0.7 ** (step / 100)] for step in range(100, 1100, 100)]
    sidecar.write_text(json.dumps({"method": "ct_slice", "dataset": "demo_thorax", "step": 1000,
                                   "loss_history": history, "exported_from": {"checkpoint": "x"}}))
    out = loss_curve_figure(sidecar, tmp_path / "training" / "ct_slice_demo_thorax.png")
    assert out.exists()
    _png(out)
    assert plt.get_fignums() == []
    # a supervised network's curve: family in the title, non-positive losses on a linear axis
    sidecar.write_text(json.dumps({"method": "unet", "loss_history": [[1, 0.5], [2, 0.0]]}))
    assert loss_curve_figure(sidecar, tmp_path / "u.png", model="fbp_unet", dataset="d", family="sv8").exists()


@pytest.mark.parametrize("meta", [{"method": "unet", "step": 10}, {"loss_history": []},
                                  {"loss_history": [1, 2, 3]}])
def test_loss_curve_figure_needs_a_loss_history(tmp_path, meta):
    import json

    from diffrecon.errors import DataFormatError
    from diffrecon.logs import error_line
    from diffrecon.report.figures import loss_curve_figure

    sidecar = tmp_path / "model.json"
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="loss_history") as err:
        loss_curve_figure(sidecar, tmp_path / "x.png")
    line = error_line(err.value)
    assert str(sidecar) in line and "\n" not in str(err.value)
    assert not (tmp_path / "x.png").exists()


def test_markdown_tables_are_at_most_twelve_columns_wide(tmp_path):
    """Eight MRI settings of one coil mode (16 metric columns): the Markdown table comes in parts of at
    most 12 columns with every row in each part, headers printed as the paper (mask, R); the LaTeX
    table keeps all columns in one table."""
    from diffrecon.report.tables import MAX_MD_COLUMNS, setting_label

    rows = []
    for mask in ("gaussian1d", "uniform1d", "gaussian2d", "poisson"):
        for r, acs in ((4, 0.08), (8, 0.04)):
            for method, psnr in (("zero_filled", 25.0), ("score", 30.0)):
                for case in ("a", "b"):
                    rows.append({"modality": "mri", "dataset": "knee", "setting": f"{mask}-R{r}-acs{acs}-multicoil",
                                 "method": method, "case": case, "view": "image", "psnr": psnr + (case == "b"),
                                 "ssim": 0.8, "nmse": 0.01})
    paths = write_table(summarize(pd.DataFrame(rows)), "mri", "image", tmp_path / "mri_multicoil", "note")
    md = paths["md"].read_text()
    tables = [ln for ln in md.splitlines() if ln.startswith("| Method")]
    assert len(tables) == 2 and "*Part 1 of 2.*" in md and "*Part 2 of 2.*" in md
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.count(" | ") + 1 <= MAX_MD_COLUMNS
    assert sum(ln.startswith("| score-MRI |") for ln in md.splitlines()) == 2
    assert "knee / Gaussian 1D ×4 PSNR" in tables[0] and "knee / Poisson ×8 SSIM" in tables[1]
    assert "multicoil" not in tables[0] + tables[1]                 # one coil mode: not repeated per column
    tex = paths["tex"].read_text()
    assert tex.count(r"\begin{tabular}") == 1 and tex.count("Gaussian 1D $\\times$4") == 1
    assert setting_label("sv8") == "8 views" and setting_label("la90") == "90° limited angle"
    assert setting_label("poisson-R4-acs0.08-singlecoil") == "Poisson ×4 · singlecoil"
    assert setting_label("prospective-multicoil") == "prospective-multicoil"
