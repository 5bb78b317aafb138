"""The workflow through snakemake: lint, config errors, and the tiny config end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("config_tiny.yaml")
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

pytestmark = pytest.mark.slow


def snakemake(*args, cwd, check=True):
    proc = subprocess.run([*SNAKEMAKE, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(cwd), *args],
                          capture_output=True, text=True, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the whole tiny experiment matrix once; return the working directory."""
    work = tmp_path_factory.mktemp("tiny")
    snakemake("--configfile", str(TINY), "--cores", "2", cwd=work)
    return work


def test_lint_passes(tmp_path):
    proc = subprocess.run([*SNAKEMAKE, "--lint"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "good condition" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda c: c["mri"].update(masks=["gaussian3d"]), "config: mri.masks[0]: 'gaussian3d' is not one of gaussian1d"),
        (lambda c: c.update(bogus=1), "config: (top level): unknown key 'bogus'"),
        (lambda c: c["ct"].update(settings=["sv0"]), "config: ct.settings[0]: 'sv0'"),
        (lambda c: c["datasets"]["demo_thorax"].update(slices=9), "config: datasets.demo_thorax.slices: 9 is less than the minimum of 27"),
        (lambda c: c["mri"]["robustness"][0].update(of="demo_thorax"), "config: mri.robustness[0].of: 'demo_thorax' is not one of mri.datasets"),
        (lambda c: c["ct"].update(case_groups={"count": 0}), "config: ct.case_groups"),
        (lambda c: c["mri"].update(blocks={"count": 2}, case_groups={"count": 3}), "config: mri.case_groups: 'score' is also in mri.blocks"),
    ],
)
def test_bad_config_stops_with_one_line(tmp_path, edit, expected):
    cfg = yaml.safe_load(TINY.read_text())
    edit(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("config:")]
    assert len(lines) == 1 and lines[0].startswith(expected), proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_one_cell_builds_only_its_chain(tmp_path):
    # targets go before --configfile, which takes several values
    proc = snakemake("-n", "results/ct/demo_thorax/sv8/fbp/metrics.csv", "--configfile", str(TINY), cwd=tmp_path)
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    jobs = {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert jobs == {"prepare_dataset": 1, "simulate_ct": 1, "reconstruct": 1, "total": 3}


def _job_counts(proc) -> dict:
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    return {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}


@pytest.mark.parametrize("method, model, setting", [
    ("varnet", "varnet", "mri/demo_brain/gaussian1d-R4-acs0.12-multicoil"),
    ("unet", "unet", "mri/demo_brain/gaussian1d-R4-acs0.12-magnitude"),
    ("fbp_unet", "fbp_unet", "ct/demo_thorax/sv8"),
])
def test_a_supervised_baseline_cell_installs_its_shipped_weights_or_trains(tmp_path, method, model, setting):
    """The demo's supervised baselines install the weights shipped for their mask family / CT
    setting; with retrain, or for a family without shipped weights, the cell trains its model."""
    cell = f"results/{setting}/{method}/metrics.csv"
    stage = "simulate_" + setting.split("/")[0]
    family = "sv8" if model == "fbp_unet" else "gaussian1d-R4-acs0.12"
    dataset = setting.split("/")[1]
    proc = snakemake("-n", cell, "--configfile", str(ROOT / "config.yaml"), cwd=tmp_path)
    assert _job_counts(proc) == {"prepare_dataset": 1, stage: 1, f"install_weights_{model}": 1, "reconstruct": 1,
                                 "total": 4}
    assert f"results/models/{model}/{dataset}/{family}/model.safetensors" in proc.stdout
    trained = {"prepare_dataset": 1, stage: 1, f"train_{model}": 1, "reconstruct": 1, "total": 4}
    proc = snakemake("-n", cell, "--configfile", str(ROOT / "config.yaml"), "--config", "retrain=true", cwd=tmp_path)
    assert _job_counts(proc) == trained
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    block = cfg["ct"]["fbp_unet"] if model == "fbp_unet" else cfg["mri"][model]
    shipped = block["weights"].pop(family)
    block["weights"]["uniform1d-R8-acs0.04" if model != "fbp_unet" else "sv4"] = shipped
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(cfg))
    assert _job_counts(snakemake("-n", cell, "--configfile", str(tmp_path / "other.yaml"), cwd=tmp_path)) == trained
    block["weights"] = {family: "weights/missing.safetensors"}          # a missing file: one line, no run
    (tmp_path / "missing.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", cell, "--configfile", str(tmp_path / "missing.yaml"), cwd=tmp_path, check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("config:")]
    assert proc.returncode != 0 and len(lines) == 1 and f".{model}.weights.{family}:" in lines[0]
    assert "weights/missing.safetensors" in lines[0]


def test_a_tpdm_cell_installs_both_shipped_priors_or_trains_the_unshipped_one(tmp_path):
    """TPDM's demo cell installs the shipped axial and perpendicular priors; a config without
    weights for the perpendicular prior trains it (and only it) without retrain."""
    cell = "results/ct/demo_thorax/sv8/tpdm/metrics.csv"

    def jobs(cfg_path):
        proc = snakemake("-n", cell, "--configfile", str(cfg_path), cwd=tmp_path)
        stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
        return {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines()
                if len(ln.split()) == 2 and ln.split()[1].isdigit()}

    assert jobs(ROOT / "config.yaml") == {"prepare_dataset": 1, "simulate_ct": 1, "install_weights_ct_prior": 2,
                                          "reconstruct": 1, "total": 5}
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    del cfg["ct_priors"]["slice_perp"]["weights"]
    (tmp_path / "no_perp.yaml").write_text(yaml.safe_dump(cfg))
    assert jobs(tmp_path / "no_perp.yaml") == {"prepare_dataset": 1, "simulate_ct": 1, "install_weights_ct_prior": 1,
                                               "train_ct_prior": 1, "reconstruct": 1, "total": 5}


def test_tables_and_figures_exist(tiny_run):
    tables = tiny_run / "results" / "tables"
    for stem in ("mri_magnitude", "mri_multicoil", "ct_axial", "ct_coronal", "ct_sagittal"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{stem}.{ext}").stat().st_size > 0
    assert not (tables / "mri_image.md").exists()                   # MRI: one table per coil mode
    md = (tables / "mri_multicoil.md").read_text()
    assert "Zero-filled" in md and "TV" in md and "fastMRI" in md   # printed names
    assert "MRI reconstruction, multi-coil" in md and "Gaussian 1D ×4" in md and "Poisson ×4" in md
    assert "magnitude" not in md.split("\n| Method")[1]            # only this coil mode's columns
    assert set(pd.read_csv(tables / "mri_multicoil.csv").setting) == {"gaussian1d-R4-acs0.25-multicoil",
                                                                       "poisson-R4-acs0.25-multicoil"}
    pngs = sorted((tiny_run / "results" / "figures").rglob("*.png"))
    assert len(pngs) == 6 + 1          # 4 MRI + 2 CT settings, 1 out-of-distribution setting
    for png in pngs:                   # 300 dpi PNG and the vector PDF of the same figure
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_robustness_cells_test_the_held_out_split(tiny_run):
    """The out-of-distribution column reconstructs the `test_ood` cases with the same mask and
    appears next to the in-distribution column in its own table, not in the main table."""
    res = tiny_run / "results"
    setting = "gaussian1d-R4-acs0.25-magnitude"
    with h5py.File(res / "mri" / "demo_brain_ood" / setting / "measurements.h5") as f:
        assert f.attrs["split"] == "test_ood" and f.attrs["dataset"] == "demo_brain_ood"
        ood_cases, ood_mask = set(f["cases"]), f["mask"][()]
    with h5py.File(res / "mri" / "demo_brain" / setting / "measurements.h5") as f:
        cases, mask = set(f["cases"]), f["mask"][()]
    assert ood_cases and not ood_cases & cases
    assert all("test_ood" in c for c in ood_cases)
    np.testing.assert_array_equal(ood_mask, mask)
    table = pd.read_csv(res / "tables" / "mri_robustness.csv")
    assert set(zip(table.dataset, table.setting)) == {("demo_brain", setting), ("demo_brain_ood", setting)}
    md = (res / "tables" / "mri_robustness.md").read_text()
    assert "demo_brain_ood" in md and "| TV |" in md   # printed names
    assert "demo_brain_ood" not in set(pd.read_csv(res / "tables" / "mri_magnitude.csv").dataset)


def test_table_numbers_come_from_cell_files(tiny_run):
    """Every summary mean equals the mean of that cell's per-case metrics.csv."""
    summary = pd.read_csv(tiny_run / "results" / "tables" / "ct_summary.csv")
    for row in summary.itertuples():
        cell = pd.read_csv(tiny_run / "results" / "ct" / row.dataset / row.setting / row.method / "metrics.csv")
        cell = cell[cell.view == row.view]
        assert row.psnr_mean == pytest.approx(cell.psnr.mean())
        assert row.ssim_mean == pytest.approx(cell.ssim.mean())
    table = pd.read_csv(tiny_run / "results" / "tables" / "ct_axial.csv")
    assert set(table.setting) == {"sv8", "sv4"}


def test_results_are_physically_sane(tiny_run):
    s = pd.read_csv(tiny_run / "results" / "tables" / "ct_summary.csv").set_index(["setting", "view"])
    assert s.loc[("sv8", "axial"), "psnr_mean"] > s.loc[("sv4", "axial"), "psnr_mean"] + 1.0
    m = pd.read_csv(tiny_run / "results" / "tables" / "mri_summary.csv").set_index(["dataset", "setting", "method"])
    for dataset, setting in {i[:2] for i in m.index}:
        assert m.loc[(dataset, setting, "tv"), "psnr_mean"] > m.loc[(dataset, setting, "zero_filled"), "psnr_mean"]


def test_recon_files_follow_the_fastmri_prediction_layout(tiny_run):
    path = tiny_run / "results" / "mri" / "demo_brain" / "gaussian1d-R4-acs0.25-multicoil" / "tv" / "recon.h5"
    with h5py.File(path) as f:
        (case,) = list(f["cases"])
        rec = f["cases"][case]["reconstruction"][()]
    assert rec.shape == (2, 32, 32) and rec.dtype == np.float32
    meta = (path.parent.parent / "mask.json").read_text()
    assert "effective_acceleration" in meta


def test_rerun_is_a_no_op(tiny_run):
    proc = snakemake("-n", "--configfile", str(TINY), cwd=tiny_run)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def _report_data(html: str, name: str):
    """A JSON object the report page defines as `var <name> = {...}`."""
    import json

    start = html.index(f"var {name} = {{") + len(f"var {name} = ")
    return json.JSONDecoder().raw_decode(html[start:])[0]


def test_report_files_every_result_by_category(tiny_run, tmp_path):
    """`snakemake --report`: every table and figure in its modality's category (or Run time), under
    a subcategory, with a unique label and a caption stating the setting and metric convention."""
    import zipfile

    report = tmp_path / "report.zip"
    snakemake("--configfile", str(TINY), "--report", str(report), cwd=tiny_run)
    with zipfile.ZipFile(report) as z:
        html = z.read(next(n for n in z.namelist() if n.endswith("report.html"))).decode()
    categories, results = _report_data(html, "categories"), _report_data(html, "results")
    assert set(categories) == {"MRI", "CT", "Run time"}   # no ablation, no trained model in the tiny run
    assert set(categories["Run time"]) == {"MRI", "CT"}
    assert "tables" in categories["MRI"] and "demo_thorax · sv8" in categories["CT"]
    assert "demo_brain_ood · gaussian1d-R4-acs0.25-magnitude" in categories["MRI"]
    filed = [path for subcats in categories.values() for paths in subcats.values() for path in paths]
    assert sorted(filed) == sorted(results) and "Other" not in {s for c in categories.values() for s in c}
    labels = [r["labels"]["result"] for r in results.values()]
    assert len(set(labels)) == len(labels) == len(results)
    ct_figure = results["results/figures/ct/demo_thorax/sv4.png"]["caption"]
    assert "4 projection views" in ct_figure and "clipped to [0, 1]" in ct_figure
    mri_table = results["results/tables/mri_multicoil.md"]["caption"]
    assert "poisson mask, acceleration R = 4" in mri_table and "fastMRI convention" in mri_table
    assert "multicoil coil mode" in mri_table and "-magnitude:" not in mri_table   # its coil mode only


def test_demo_plots_the_loss_curve_of_every_model_it_uses(tmp_path):
    """Rule all of the demo config asks for one loss curve per trained or installed model."""
    proc = snakemake("-n", "--configfile", str(ROOT / "config.yaml"), cwd=tmp_path)
    outputs = " ".join(ln for ln in proc.stdout.splitlines() if ln.strip().startswith("output: results/figures/training/"))
    curves = set(re.findall(r"results/figures/training/([^,\s]+?\.png)", outputs))
    pdfs = set(re.findall(r"results/figures/training/([^,\s]+?)\.pdf", outputs))
    assert pdfs == {c[:-len(".png")] for c in curves}                  # each with its PDF
    assert curves == {f"{name}.png" for name in (
        "score_mri_demo_brain", "unet_demo_brain_gaussian1d-R4-acs0.12", "varnet_demo_brain_gaussian1d-R4-acs0.12",
        "ct_patch_demo_thorax", "ct_slice_demo_thorax", "ct_score_demo_thorax", "ct_slice_perp_demo_thorax",
        "fbp_unet_demo_thorax_sv8")}


def test_configfile_replaces_the_demo_config(tmp_path):
    """A paper config given with --configfile must not inherit the demo's MRI matrix."""
    proc = snakemake("-n", "--configfile", str(ROOT / "config" / "paper" / "aapm.yaml"), cwd=tmp_path)
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    assert "simulate_ct" in stats and "train_unet" not in stats and "simulate_mri" not in stats


def test_score_rules_retrain_end_to_end(tmp_path):
    """retrain=true: the training rule builds the prior; score and score_hybrid cells use it."""
    import json

    cfg = yaml.safe_load(TINY.read_text())
    cfg.pop("ct")
    cfg["datasets"].pop("demo_thorax")
    cfg["mri"].update(masks=["gaussian1d"], coil_modes=["magnitude", "multicoil"],
                      methods=["zero_filled", "score", "score_hybrid"],
                      score={"n_steps": 5, "n_samples": 2, "hybrid_every": 2},
                      ablation={"dataset": "demo_brain", "settings": ["*"], "steps": [2, 5], "steps_multicoil": [5]})
    cfg["retrain"] = True
    cfg["score_mri"] = {
        "dataset": "demo_brain",
        "model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1},
        "sde": {"sigma_min": 0.01, "sigma_max": 10.0},
        "train": {"steps": 20, "batch_size": 4, "lr": 1e-3, "warmup": 5, "grad_clip": 1.0, "ema_decay": 0.99,
                  "checkpoint_every": 10, "seed": 0},
    }
    config = tmp_path / "score.yaml"
    config.write_text(yaml.safe_dump(cfg))
    # one thread per job: two jobs at a time instead of one two-thread job oversubscribing the CPUs
    snakemake("results/tables/mri_magnitude.csv", "results/tables/mri_multicoil.csv", "results/tables/mri_ablation_steps.md",
              "--configfile", str(config),
              "--cores", "2", "--set-threads", "reconstruct=1", "reconstruct_ablation=1", "train_score_mri=1",
              cwd=tmp_path)

    results = tmp_path / "results"
    sidecar = json.loads((results / "models" / "score_mri" / "demo_brain" / "model.json").read_text())
    assert sidecar["step"] == 20
    assert [s for s, _ in sidecar["loss_history"]] == [10, 20]
    assert sidecar["train"]["steps"] == 20 and sidecar["dataset"] == "demo_brain"

    mag, multi = "gaussian1d-R4-acs0.25-magnitude", "gaussian1d-R4-acs0.25-multicoil"
    table = pd.concat([pd.read_csv(results / "tables" / f"mri_{c}.csv") for c in ("magnitude", "multicoil")])
    assert set(zip(table.setting, table.method)) == {
        (mag, "zero_filled"), (mag, "score"), (multi, "zero_filled"), (multi, "score"), (multi, "score_hybrid")}
    assert not (results / "mri" / "demo_brain" / mag / "score_hybrid").exists()

    for setting, method in ((mag, "score"), (multi, "score"), (multi, "score_hybrid")):
        with h5py.File(results / "mri" / "demo_brain" / setting / method / "recon.h5") as f:
            (case,) = list(f["cases"])
            group = f["cases"][case]
            rec, std = group["reconstruction"][()], group["std"][()]
        assert rec.shape == std.shape == (2, 32, 32), (setting, method)
        assert np.isfinite(rec).all() and np.isfinite(std).all()
        assert (std >= 0).all() and (std > 0).any(), (setting, method)

    # steps ablation: Alg. 2 at N = 2 runs on its own; N = 5 (both settings) is the cell's own run,
    # copied byte for byte (a second run would record its own run time)
    import filecmp

    ablation = pd.read_csv(results / "tables" / "mri_ablation_steps.csv")
    assert sorted(zip(ablation.method.str.contains("Alg. 4"), ablation.steps)) == [(False, 2), (False, 5), (True, 5)]
    assert (results / "mri" / "demo_brain" / mag / "ablation" / "score" / "steps2" / "recon.h5").exists()
    assert filecmp.cmp(results / "mri" / "demo_brain" / mag / "ablation" / "score" / "steps5" / "recon.h5",
                       results / "mri" / "demo_brain" / mag / "score" / "recon.h5", shallow=False)
    cell = pd.read_csv(results / "mri" / "demo_brain" / mag / "score" / "metrics.csv")
    reused = ablation[(ablation.steps == 5) & ~ablation.method.str.contains("Alg. 4")].iloc[0]
    assert reused.psnr_image == pytest.approx(cell.psnr.iloc[0])
    assert "score 5 (paper 2000), 5 (paper 500)" in (results / "tables" / "mri_multicoil.md").read_text()


def test_training_rule_launches_torchrun_for_two_processes(tmp_path):
    """train.gpus: 2 (CPU, gloo here): the rule requests gpu=2 and trains in two processes with the
    stream loader; the published sidecar records them."""
    import json

    cfg = yaml.safe_load(TINY.read_text())
    cfg.pop("ct")
    cfg["datasets"].pop("demo_thorax")
    cfg["retrain"] = True
    cfg["score_mri"] = {
        "dataset": "demo_brain", "device": "cpu",
        "model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1},
        "sde": {"sigma_min": 0.01, "sigma_max": 10.0},
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup": 2, "checkpoint_every": 2, "seed": 0,
                  "loader": "stream", "workers": 1, "gpus": 2},
    }
    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(cfg))
    weights = "results/models/score_mri/demo_brain/model.safetensors"
    proc = snakemake(weights, "--configfile", str(config), "--cores", "2", cwd=tmp_path)
    assert "gpu=2" in proc.stdout + proc.stderr
    sidecar = json.loads((tmp_path / weights).with_suffix(".json").read_text())
    assert sidecar["step"] == 4 and sidecar["world_size"] == 2 and sidecar["train"]["loader"] == "stream"
    log = (tmp_path / "logs" / "train_score_mri" / "demo_brain.log").read_text()
    assert "torch.distributed.run --standalone --nproc_per_node=2" in log

    # a batch that does not split evenly stops at the config check, in one line
    cfg["score_mri"]["train"]["batch_size"] = 3
    config.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", weights, "--configfile", str(config), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "score_mri.train.batch_size: 3 is not a multiple of train.gpus (2)" in proc.stderr


def test_ct_diffusion_rules_retrain_end_to_end(tmp_path):
    """retrain=true: the CT prior rules train the patch and slice priors; the diffusion cells use them."""
    import json

    cfg = yaml.safe_load(TINY.read_text())
    cfg.pop("mri")
    cfg["datasets"].pop("demo_brain")
    cfg["ct"].update(settings=["sv8", "sv4"], learned_settings=["sv8"],
                     methods=["fbp", "fbp_unet", "dds_2d", "diffusion_blend_pp"],
                     ablation={"dataset": "demo_thorax", "setting": "sv8", "max_cases": 1, "steps": [2, 3],
                               "steps_methods": ["dds_2d", "diffusion_blend_pp"], "jump_every": [0, 1, 2]},
                     dds_2d={"n_steps": 3}, diffusion_blend_pp={"n_steps": 3},
                     fbp_unet={"model": {"channels": [8, 16], "attention": [False, False], "norm_num_groups": 4},
                               "train": {"steps": 30, "batch_size": 8, "lr": 1e-3, "warmup": 2,
                                         "checkpoint_every": 30}})
    cfg["retrain"] = True
    tiny = {"model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1},
            "train": {"steps": 6, "batch_size": 2, "warmup": 2, "checkpoint_every": 3, "seed": 0}}
    cfg["ct_priors"] = {"patch": {"dataset": "demo_thorax", "spacings": [1, 3], **tiny},
                        "slice": {"dataset": "demo_thorax", **tiny}}
    config = tmp_path / "ct.yaml"
    config.write_text(yaml.safe_dump(cfg))
    snakemake("results/tables/ct_axial.csv", "results/tables/ct_ablation_steps.md", "--configfile", str(config),
              "--cores", "2", "--set-threads", "reconstruct=1", "reconstruct_ablation=1", "train_ct_prior=1",
              "train_fbp_unet=1", cwd=tmp_path)

    results = tmp_path / "results"
    for kind in ("patch", "slice"):
        sidecar = json.loads((results / "models" / f"ct_{kind}" / "demo_thorax" / "model.json").read_text())
        assert sidecar["step"] == 6 and sidecar["kind"] == kind
    table = pd.read_csv(results / "tables" / "ct_axial.csv")
    assert set(table["method"]) == {"fbp", "fbp_unet", "dds_2d", "diffusion_blend_pp"}
    # learned methods only where `learned_settings` says: sv4 has FBP alone
    assert set(table.loc[table["setting"] == "sv4", "method"]) == {"fbp"}
    assert not (results / "ct" / "demo_thorax" / "sv4" / "dds_2d").exists()
    table = table[table["setting"] == "sv8"].set_index("method")
    assert table.loc["fbp_unet", "psnr_mean"] > table.loc["fbp", "psnr_mean"]     # 30 supervised steps already help
    # ablations: one row per variant, NFE = steps, the jump study on DiffusionBlend++
    steps = pd.read_csv(results / "tables" / "ct_ablation_steps.csv")
    assert list(zip(steps["method"], steps["steps"])) == [("dds_2d", 2), ("dds_2d", 3), ("diffusion_blend_pp", 2),
                                                          ("diffusion_blend_pp", 3)]
    assert (steps["nfe"] == steps["steps"]).all() and (steps["n_cases"] == 1).all()
    jump = pd.read_csv(results / "tables" / "ct_ablation_jump.csv")
    assert jump["jump_every"].tolist() == [0, 1, 2] and np.isfinite(jump["psnr_sagittal"]).all()
    # jump2 at the configured 3 steps is the steps3 run of DiffusionBlend++: computed once, reported in both
    ablation_dir = results / "ct" / "demo_thorax" / "sv8" / "ablation" / "diffusion_blend_pp"
    assert not (ablation_dir / "jump2").exists()
    pp3 = steps[(steps["method"] == "diffusion_blend_pp") & (steps["steps"] == 3)].iloc[0]
    assert jump.loc[jump["jump_every"] == 2, "psnr_axial"].item() == pp3["psnr_axial"]
    for kind in ("steps", "jump"):
        assert (results / "figures" / "ct" / f"ablation_{kind}.png").stat().st_size > 1000
    assert (results / "models" / "fbp_unet" / "demo_thorax" / "sv8" / "model.safetensors").is_file()
    snakemake("results/tables/ct_runtime.csv", "--configfile", str(config), "--cores", "1", cwd=tmp_path)
    runtime = pd.read_csv(results / "tables" / "ct_runtime.csv", index_col="method")
    assert runtime.loc["diffusion_blend_pp", "demo_thorax/sv8/NFE"] == 3
    assert np.isnan(runtime.loc["fbp", "demo_thorax/sv8/NFE"])
    assert (runtime["demo_thorax/sv8/seconds"] > 0).all()
    with h5py.File(results / "ct" / "demo_thorax" / "sv8" / "diffusion_blend_pp" / "recon.h5") as f:
        (case,) = list(f["cases"])
        assert f["cases"][case].attrs["nfe"] == 3
        assert np.isfinite(f["cases"][case]["reconstruction"][()]).all()


def test_two_runs_are_bit_identical(tiny_run, tmp_path):
    """A second full run of the tiny config gives the same reconstructions and metrics, bit for bit
    (wall seconds aside)."""
    from diffrecon.report.compare import compare_results

    snakemake("--configfile", str(TINY), "--cores", "2", cwd=tmp_path)
    assert compare_results(tiny_run / "results", tmp_path / "results") == []


def test_slice_blocks_merge_into_the_one_job_files(tiny_run, tmp_path):
    """mri.blocks: the tv cells run as one job per block of slices and a merge; the merged recon.h5
    holds the one-job run's numbers bit for bit, and no .partial directory is left."""
    import h5py

    cfg = yaml.safe_load(TINY.read_text())
    cfg["mri"]["blocks"] = {"count": 2, "methods": ["tv"]}
    cfg["mri"]["checkpoint_slices"] = 1
    config = tmp_path / "blocks.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cells = [f"results/mri/demo_brain/gaussian1d-R4-acs0.25-{mode}/{m}/recon.h5"
             for mode in ("magnitude", "multicoil") for m in ("tv", "zero_filled")]
    dry = snakemake("-n", *cells, "--configfile", str(config), cwd=tmp_path)
    stats = dry.stdout.split("Job stats:")[1].split("\n\n")[0]
    jobs = {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}
    assert jobs["reconstruct_block"] == 4 and jobs["merge_blocks"] == 2 and jobs["reconstruct"] == 2, stats
    snakemake(*cells, "--configfile", str(config), "--cores", "2", cwd=tmp_path)
    for cell in cells:
        with h5py.File(tiny_run / cell) as a, h5py.File(tmp_path / cell) as b:
            assert sorted(a["cases"]) == sorted(b["cases"])
            for case in a["cases"]:
                for key in a["cases"][case]:
                    assert a["cases"][case][key][()].tobytes() == b["cases"][case][key][()].tobytes(), (cell, key)
            assert "block" not in b.attrs
    assert not list((tmp_path / "results").rglob("*.partial"))
    blocks = sorted(p.name for p in (tmp_path / "results").rglob("blocks/*.h5"))
    assert blocks == ["1-of-2.h5", "1-of-2.h5", "2-of-2.h5", "2-of-2.h5"]


def _job_counts(proc) -> dict:
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    return {ln.split()[0]: int(ln.split()[1]) for ln in stats.splitlines()
            if len(ln.split()) == 2 and ln.split()[1].isdigit()}


def test_case_groups_make_one_job_per_group_and_a_merge(tmp_path):
    """mri.case_groups / ct.case_groups: every cell of their methods runs as N reconstruct_cases jobs
    (.../<method>/cases/K-of-N.h5) and one merge_cases job writing its recon.h5; the other cells
    stay one reconstruct job."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["ct"]["case_groups"] = {"count": 3, "methods": ["fbp"]}
    cfg["mri"]["case_groups"] = {"count": 2, "methods": ["tv"]}
    config = tmp_path / "groups.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cells = [f"results/ct/demo_thorax/{s}/fbp/recon.h5" for s in ("sv8", "sv4")]
    cells += [f"results/mri/demo_brain/gaussian1d-R4-acs0.25-magnitude/{m}/recon.h5" for m in ("tv", "zero_filled")]
    dry = snakemake("-n", *cells, "--configfile", str(config), cwd=tmp_path)
    jobs = _job_counts(dry)
    assert jobs["reconstruct_cases"] == 2 * 3 + 2 and jobs["merge_cases"] == 3 and jobs["reconstruct"] == 1, jobs
    assert "merge_blocks" not in jobs and "reconstruct_block" not in jobs
    for k in (1, 2, 3):
        assert f"results/ct/demo_thorax/sv4/fbp/cases/{k}-of-3.h5" in dry.stdout
    assert "gaussian1d-R4-acs0.25-magnitude/tv/cases/2-of-2.h5" in dry.stdout
    # off (the shipped config): no case group job
    assert "reconstruct_cases" not in _job_counts(snakemake("-n", *cells, "--configfile", str(TINY), cwd=tmp_path))


def test_case_groups_merge_into_the_one_job_file(tmp_path):
    """A CT cell in 3 case groups (one test volume: two groups are empty), run and merged: the
    recon.h5 of the one-job run, bit for bit, without the group attributes."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["ct"]["case_groups"] = {"count": 3, "methods": ["fbp"]}
    config = tmp_path / "groups.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cell = "results/ct/demo_thorax/sv8/fbp/recon.h5"
    (tmp_path / "one").mkdir(), (tmp_path / "groups").mkdir()
    snakemake(cell, "--configfile", str(TINY), "--cores", "2", cwd=tmp_path / "one")
    snakemake(cell, "--configfile", str(config), "--cores", "2", cwd=tmp_path / "groups")
    with h5py.File(tmp_path / "one" / cell) as a, h5py.File(tmp_path / "groups" / cell) as b:
        assert list(a["cases"]) == list(b["cases"]) and len(a["cases"]) == 1
        for case in a["cases"]:
            assert set(a["cases"][case]) == set(b["cases"][case])
            for key in a["cases"][case]:
                assert a["cases"][case][key][()].tobytes() == b["cases"][case][key][()].tobytes(), key
        assert dict(a.attrs) == dict(b.attrs)
    groups = sorted(p.name for p in (tmp_path / "groups" / "results").rglob("cases/*.h5"))
    assert groups == ["1-of-3.h5", "2-of-3.h5", "3-of-3.h5"]


def test_make_priors_retrains_and_exports_every_shipped_model(tmp_path):
    """`make priors` (dry run): one snakemake call that trains every model config.yaml ships
    weights for, with retrain, and one export-weights per model into exactly the file the config
    names — the priors and the supervised baselines' per-family files alike."""
    import shlex

    text = subprocess.run(["make", "-n", "priors"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    text = text.replace("\\\n", " ")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    shipped = {cfg["score_mri"]["weights"], *(p["weights"] for p in cfg["ct_priors"].values() if p.get("weights"))}
    shipped |= {*cfg["mri"]["unet"]["weights"].values(), *cfg["mri"]["varnet"]["weights"].values(),
                *cfg["ct"]["fbp_unet"]["weights"].values()}
    exports = re.findall(r"export-weights (\S+) (\S+)", text)
    assert {out for _, out in exports} == shipped and len(exports) == len(shipped) == 8
    call = next(ln for ln in text.splitlines() if "snakemake" in ln and "retrain=true" in ln)
    targets = shlex.split(call)[shlex.split(call).index("--") + 1:]
    assert sorted(targets) == sorted(src for src, _ in exports)
    proc = snakemake("-n", *targets, "--configfile", str(ROOT / "config.yaml"), "--config", "retrain=true",
                     cwd=tmp_path)
    counts = _job_counts(proc)
    assert counts["train_score_mri"] == 1 and counts["train_ct_prior"] == 4
    assert counts["train_unet"] == counts["train_varnet"] == counts["train_fbp_unet"] == 1
    assert not any(k.startswith("install_weights") for k in counts)
