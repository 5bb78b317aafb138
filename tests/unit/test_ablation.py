"""CT ablation variants, tables and plots (diffrecon.report.ablation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diffrecon.report.ablation import ablation_tables, ablation_variants, variant_params, write_ablation


def test_variants_follow_the_config_block():
    assert ablation_variants(None) == []
    cfg = {"steps": [10, 50], "steps_methods": ["dds", "diffusion_blend_pp"], "jump_every": [0, 2]}
    assert ablation_variants(cfg) == [("dds", "steps10"), ("dds", "steps50"), ("diffusion_blend_pp", "steps10"),
                                      ("diffusion_blend_pp", "steps50"), ("diffusion_blend_pp", "jump0"),
                                      ("diffusion_blend_pp", "jump2")]


def test_variant_params_replace_only_the_studied_key():
    block = {"n_steps": 25, "jump_every": 2, "rho": 0.5}
    assert variant_params("diffusion_blend_pp", "steps10", block, None) == {"n_steps": 10, "jump_every": 2, "rho": 0.5}
    assert variant_params("diffusion_blend_pp", "jump0", block, 1) == {"n_steps": 25, "jump_every": 0, "rho": 0.5,
                                                                         "max_cases": 1}
    assert block == {"n_steps": 25, "jump_every": 2, "rho": 0.5}  # the config block is left alone
    with pytest.raises(ValueError, match="jump-frequency"):
        variant_params("dds", "jump2", {}, None)
    with pytest.raises(ValueError, match="steps<N> or jump<J>"):
        variant_params("dds", "eta5", {}, None)
    with pytest.raises(ValueError, match="at least one step"):
        variant_params("dds", "steps0", {}, None)


def _metrics(psnr: float, nfe: int, cases=("a", "b")) -> pd.DataFrame:
    rows = []
    for i, case in enumerate(cases):
        for view, dssim in (("axial", 0.0), ("coronal", 0.01), ("sagittal", 0.02)):
            rows.append({"case": case, "view": view, "psnr": psnr + i, "ssim": 0.8 + dssim, "nfe": nfe,
                         "seconds": 2.0 + i})
    return pd.DataFrame(rows)


def test_tables_average_cases_and_sort_variants():
    tables = ablation_tables({
        ("diffusion_blend_pp", "steps50"): _metrics(30.0, 50),
        ("diffusion_blend_pp", "steps10"): _metrics(25.0, 10),
        ("diffusion_blend_pp", "jump2"): _metrics(28.0, 25),
        ("diffusion_blend_pp", "jump0"): _metrics(27.0, 25, cases=("a",)),
    })
    steps, jump = tables["steps"], tables["jump"]
    assert steps["steps"].tolist() == [10, 50]
    np.testing.assert_allclose(steps["psnr_axial"], [25.5, 30.5])
    np.testing.assert_allclose(steps["ssim_sagittal"], [0.82, 0.82])
    np.testing.assert_allclose(steps["nfe"], [10, 50])
    np.testing.assert_allclose(steps["seconds"], [2.5, 2.5])
    assert jump["jump_every"].tolist() == [0, 2]
    assert jump["n_cases"].tolist() == [1, 2]
    assert jump.loc[0, "partitions"].startswith("adjacent only")
    assert jump.loc[1, "partitions"] == "adjacent + jump every 2nd step"
    np.testing.assert_allclose(jump["psnr_coronal"], [27.0, 28.5])


def test_write_ablation_writes_tables_and_plots(tmp_path):
    out = {f"{k}_{ext}": tmp_path / f"ablation_{k}.{ext}" for k in ("steps", "jump") for ext in ("csv", "md", "png")}
    write_ablation({("dds", "steps10"): _metrics(24.0, 10), ("dds", "steps25"): _metrics(26.0, 25),
                    ("diffusion_blend_pp", "steps10"): _metrics(25.0, 10)}, out, where="demo · sv8")
    md = out["steps_md"].read_text()
    assert "| dds | 25 | **26.50** |" in md and "demo · sv8" in md
    assert pd.read_csv(out["steps_csv"]).shape[0] == 3
    assert out["steps_png"].stat().st_size > 1000
    # no jump variants configured: the files still exist and say so
    assert "No variants configured" in out["jump_md"].read_text()
    assert out["jump_png"].is_file() and out["jump_csv"].is_file()


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="steps<N> or jump<J>"):
        ablation_tables({("dds", "foo"): _metrics(1.0, 1)})
