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
    assert "| DDS | 25 | **26.50** |" in md and "demo · sv8" in md
    assert pd.read_csv(out["steps_csv"]).shape[0] == 3
    assert out["steps_png"].stat().st_size > 1000
    # no jump variants configured: the files still exist and say so
    assert "No variants configured" in out["jump_md"].read_text()
    assert out["jump_png"].is_file() and out["jump_csv"].is_file()


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="steps<N> or jump<J>"):
        ablation_tables({("dds", "foo"): _metrics(1.0, 1)})


# ----------------------------------------------------------------------------- MRI steps study
MRI_CFG = {
    "mri": {"datasets": ["b"], "masks": ["gaussian1d"], "accelerations": [{"factor": 4, "acs_fraction": 0.12}],
            "coil_modes": ["magnitude", "singlecoil", "multicoil"], "methods": ["zero_filled", "score"],
            "learned_settings": None, "score": {"n_steps": 60, "n_samples": 2},
            "score_multicoil": {"n_samples": 1},
            "ablation": {"dataset": "b", "settings": ["*-magnitude", "*-multicoil"], "method": "score",
                         "max_cases": 1, "steps": [20, 60], "steps_multicoil": [10, 60]}},
}


def test_mri_ablation_runs_and_params_follow_the_cells():
    from diffrecon.experiment import Experiment

    x = Experiment(MRI_CFG)
    mag, multi = "gaussian1d-R4-acs0.12-magnitude", "gaussian1d-R4-acs0.12-multicoil"
    assert x.mri_ablation_runs() == [(mag, "score", "steps20"), (mag, "score", "steps60"),
                                     (multi, "score", "steps10"), (multi, "score", "steps60")]
    assert x.mri_ablation_params(mag, "score", "steps20") == {"n_steps": 20, "n_samples": 2, "max_cases": 1}
    assert x.mri_ablation_params(multi, "score", "steps10") == {"n_steps": 10, "n_samples": 1, "max_cases": 1}
    # the variants equal to their cell (apart from max_cases) reuse its reconstruction
    assert x.reuses_cell("mri", "b", mag, "score", "steps60") and x.reuses_cell("mri", "b", multi, "score", "steps60")
    assert not x.reuses_cell("mri", "b", mag, "score", "steps20")
    one_sample = Experiment({"mri": {**MRI_CFG["mri"], "ablation": {**MRI_CFG["mri"]["ablation"], "n_samples": 1}}})
    assert not one_sample.reuses_cell("mri", "b", mag, "score", "steps60")      # 1 sample vs the cell's 2
    assert one_sample.reuses_cell("mri", "b", multi, "score", "steps60")


def test_reduced_steps_note_names_methods_below_the_paper():
    from diffrecon.experiment import Experiment

    note = Experiment(MRI_CFG).reduced_steps_note("mri")
    assert "score 60 (paper 2000), 60 (paper 500)" in note and "mri_ablation_steps" in note
    full = {"mri": {**MRI_CFG["mri"], "score": {"n_steps": 2000}, "score_multicoil": {"n_steps": 500}}}
    assert Experiment(full).reduced_steps_note("mri") == ""


def test_evaluate_scores_only_the_first_max_cases(tmp_path):
    from diffrecon import io
    from diffrecon.stages.evaluate import evaluate

    target, recon = tmp_path / "t.h5", tmp_path / "r.h5"
    rng = np.random.default_rng(0)
    with io.CaseWriter(target) as w:
        for c in ("v0", "v1"):
            w.add(c, target=rng.random((2, 16, 16)).astype(np.float32))
        w.finish({"modality": "mri", "dataset": "b", "setting": "s"})
    with io.CaseWriter(recon) as w:
        for c in ("v0", "v1"):
            w.add(c, reconstruction=rng.random((2, 16, 16)).astype(np.float32))
    df = evaluate(target, recon, tmp_path / "m.csv", "b", "s", "score", subset=True, max_cases=1)
    assert list(df["case"]) == ["v0"]
    assert list(evaluate(target, recon, tmp_path / "m2.csv", "b", "s", "score")["case"]) == ["v0", "v1"]


def test_mri_ablation_report_writes_table_and_plot(tmp_path):
    from diffrecon.stages.report import mri_ablation_report

    files = {}
    for setting, n, psnr in (("gaussian1d-R4-acs0.12-magnitude", 20, 20.0), ("gaussian1d-R4-acs0.12-magnitude", 60, 24.0),
                             ("gaussian1d-R4-acs0.12-multicoil", 10, 18.0)):
        p = tmp_path / f"{setting}_{n}.csv"
        pd.DataFrame([{"case": "v0", "view": "image", "psnr": psnr, "ssim": 0.5 + psnr / 100, "nfe": 2 * n,
                       "seconds": 1.0}]).to_csv(p, index=False)
        files[(setting, "score", f"steps{n}")] = p
    out = {"steps_csv": tmp_path / "s.csv", "steps_md": tmp_path / "s.md", "steps_png": tmp_path / "s.png"}
    tables = mri_ablation_report(files, out, "b · first 1 test volume(s)")
    df = tables["steps"]
    assert list(df["steps"]) == [20, 60, 10] or sorted(df["steps"]) == [10, 20, 60]
    assert set(df["method"]) == {"score-MRI Alg. 2 · gaussian1d-R4-acs0.12-magnitude",
                                 "score-MRI Alg. 4 · gaussian1d-R4-acs0.12-multicoil"}
    text = out["steps_md"].read_text()
    assert text.startswith("**MRI ablation: PSNR and SSIM vs number of steps N") and "**24.00**" in text
    assert out["steps_png"].stat().st_size > 5000
    assert "jump" not in tables or tables["jump"].empty
