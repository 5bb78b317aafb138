"""Hostile configs: every wrong config stops `diffrecon check-config` with exit 2 and one line
naming the key, line or dataset (no traceback); a few also through snakemake itself."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from diffrecon.cli import main

REPO = Path(__file__).resolve().parents[2]
SHIPPED = yaml.safe_load((REPO / "config.yaml").read_text())
SHIPPED_TEXT = (REPO / "config.yaml").read_text()


def _set(path: str, value):
    """A mutation setting the dotted key path (list indices as integers) to ``value``."""
    def edit(c):
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node = c
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


def _del(path: str):
    def edit(c):
        *parents, last = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        del node[last]
    return edit


def _all(*edits):
    def edit(c):
        for e in edits:
            e(c)
    return edit


# (name, a mutation of config.yaml or the YAML text itself, fragment of the one line)
CASES = [
    # unknown keys at every level
    ("unknown_top", _set("bogus", 1), "(top level): unknown key 'bogus'"),
    ("unknown_mri", _set("mri.maskz", ["poisson"]), "mri: unknown key 'maskz'"),
    ("unknown_ct", _set("ct.setting", ["sv8"]), "ct: unknown key 'setting'"),
    ("unknown_dataset_key", _set("datasets.demo_brain.colis", 8), "datasets.demo_brain"),
    ("unknown_sampler_key", _set("mri.score.n_stepz", 5), "mri.score: unknown key 'n_stepz'"),
    ("unknown_ct_sampler_key", _set("ct.dds.rh0", 1.0), "ct.dds: unknown key 'rh0'"),
    ("unknown_prior_train_key", _set("ct_priors.patch.train.stepz", 3), "ct_priors.patch.train: unknown key 'stepz'"),
    ("unknown_acceleration_key", _set("mri.accelerations.0.acs", 0.1), "mri.accelerations[0]: unknown key 'acs'"),
    # wrong types
    ("seed_string", _set("seed", "zero"), "seed: 'zero' is not of type 'integer'"),
    ("masks_string", _set("mri.masks", "poisson"), "mri.masks: 'poisson' is not of type 'array'"),
    ("retrain_string", _set("retrain", "yes"), "retrain: 'yes' is not of type 'boolean'"),
    ("datasets_list", _set("datasets", ["demo_brain"]), "datasets:"),
    # out-of-range numbers
    ("seed_negative", _set("seed", -1), "seed: -1 is less than the minimum of 0"),
    ("threads_zero", _set("threads", 0), "threads: 0 is less than the minimum of 1"),
    ("factor_below_one", _set("mri.accelerations.0.factor", 0.5), "mri.accelerations[0].factor: 0.5"),
    ("acs_fraction_one", _set("mri.accelerations.0.acs_fraction", 1.0), "mri.accelerations[0].acs_fraction: 1.0"),
    ("ema_decay_above_one", _set("score_mri.train.ema_decay", 1.5), "score_mri.train.ema_decay: 1.5"),
    ("n_steps_zero", _set("mri.score.n_steps", 0), "mri.score.n_steps: 0 is less than the minimum of 1"),
    ("snr_zero", _set("mri.score.snr", 0), "mri.score.snr: 0"),
    ("rho_negative", _set("ct.diffusion_blend.rho", -1.0), "ct.diffusion_blend.rho: -1.0"),
    ("lam_negative", _set("ct.dds.lam", -0.1), "ct.dds.lam: -0.1"),
    ("hybrid_every_zero", _set("mri.score.hybrid_every", 0), "mri.score.hybrid_every: 0"),
    ("eta_above_one", _set("ct.diffusion_blend.eta", 2), "ct.diffusion_blend.eta: 2"),
    ("jump_every_negative", _set("ct.diffusion_blend_pp.jump_every", -1), "ct.diffusion_blend_pp.jump_every: -1"),
    # bad enums
    ("mask_enum", _set("mri.masks", ["gaussian3d"]), "mri.masks[0]: 'gaussian3d' is not one of gaussian1d"),
    ("coil_mode_enum", _set("mri.coil_modes", ["dualcoil"]), "mri.coil_modes[0]: 'dualcoil' is not one of"),
    ("ct_method_in_mri", _set("mri.methods", ["zero_filled", "fbp"]), "mri.methods[1]: 'fbp' is not one of"),
    ("mri_method_in_ct", _set("ct.methods", ["fbp", "tv"]), "ct.methods[1]: 'tv' is not one of"),
    ("projector_enum", _set("ct.projector", "cone"), "ct.projector: 'cone' is not one of line, strip, linear"),
    ("precision_enum", _set("mri.score.precision", "fp16"), "mri.score.precision: 'fp16' is not one of"),
    ("device_enum", _set("score_mri.device", "tpu"), "score_mri.device: 'tpu' is not one of"),
    # empty lists
    ("ct_methods_empty", _set("ct.methods", []), "ct.methods: [] should be non-empty"),
    ("mri_masks_empty", _set("mri.masks", []), "mri.masks: [] should be non-empty"),
    # YAML itself
    ("duplicate_top_key", SHIPPED_TEXT + "\nseed: 3\n",
     f"duplicate key 'seed' (first at line {SHIPPED_TEXT.splitlines().index('seed: 0') + 1})"),
    ("duplicate_nested_key", SHIPPED_TEXT.replace("  projector: linear", "  projector: linear\n  projector: strip"),
     "duplicate key 'projector'"),
    ("yaml_syntax", "seed: 0\ndatasets:\n  a: [1, 2\nmri: {}\n", "bad.yaml:4:"),
    ("yaml_tab", "seed: 0\n\tdatasets: {}\n", "bad.yaml:2:1: YAML syntax error"),
    ("empty_file", "", "empty config"),
    ("comments_only", "# nothing here\n", "empty config"),
    ("top_level_list", "- seed: 0\n- datasets: {}\n", "is a list, not a mapping"),
    # settings that parse but would fail in a job
    ("la400", _set("ct.settings", ["sv8", "la400"]), "ct.settings[1]: 'la400'"),
    ("sv0", _set("ct.settings", ["sv0"]), "ct.settings[0]: 'sv0'"),
    ("xx8", _set("ct.settings", ["xx8"]), "ct.settings[0]: 'xx8'"),
    ("sv_too_many", _set("ct.settings", ["sv5000"]), "ct.settings[0]: CT setting sv5000"),
    ("ablation_la400", _set("ct.ablation.setting", "la400"), "ct.ablation.setting: 'la400'"),
    ("mask_acs_too_large", _set("mri.accelerations", [{"factor": 8, "acs_fraction": 0.5}]),
     "mri.accelerations[0]: mask 'gaussian1d' on demo_brain (64x64)"),
    ("equispaced_fractional", _all(_set("mri.masks", ["equispaced"]),
                                   _set("mri.accelerations", [{"factor": 2.5, "acs_fraction": 0.08}])),
     "mri.accelerations[0]: mask 'equispaced' needs an integer factor"),
    # cross-references
    ("dataset_undefined", _set("mri.datasets", ["demo_knee"]), "mri.datasets[0]: 'demo_knee' is not a dataset"),
    ("dataset_other_modality", _set("ct.datasets", ["demo_brain"]), "ct.datasets[0]: 'demo_brain' has modality mri"),
    ("robustness_of", _set("mri.robustness.0.of", "demo_thorax"), "mri.robustness[0].of: 'demo_thorax'"),
    ("ablation_without_prior", _all(_set("ct.methods", ["fbp"]), _set("ct.ablation.steps_methods", ["dds_2d"]),
                                    _del("ct_priors.slice")), "ct.ablation: 'dds_2d' needs the prior ct_priors.slice"),
    ("method_without_prior", _del("ct_priors.patch"), "needs the prior ct_priors.patch"),
    ("ablation_dataset", _set("ct.ablation.dataset", "demo_brain"), "ct.ablation.dataset: 'demo_brain'"),
    # files
    ("files_glob_empty", _set("datasets.demo_thorax", {"modality": "ct", "source": "files",
                                                       "files": {"test": "/nonexistent/ct/*.npy"}}),
     "datasets.demo_thorax.files.test: the pattern '/nonexistent/ct/*.npy' matches no file"),
    ("weights_missing", _set("score_mri.weights", "weights/no_such.safetensors"),
     "score_mri.weights: no file 'weights/no_such.safetensors'"),
    ("ct_weights_missing", _set("ct_priors.score.weights", "/nonexistent/ct_score.safetensors"),
     "ct_priors.score.weights: no file '/nonexistent/ct_score.safetensors'"),
    ("baseline_weights_missing", _set("mri.varnet.weights", {"gaussian1d-R4-acs0.12": "weights/no_varnet.safetensors"}),
     "mri.varnet.weights.gaussian1d-R4-acs0.12: no file 'weights/no_varnet.safetensors'"),
    ("baseline_weights_of_another_model", _set("ct.fbp_unet.weights", {"sv8": "weights/ct_slice_demo_thorax.safetensors"}),
     "ct.fbp_unet.weights.sv8: 'weights/ct_slice_demo_thorax.safetensors' holds a 'ct_slice' prior"),
    ("baseline_weights_not_a_map", _set("mri.unet.weights", "weights/unet.safetensors"), "mri.unet.weights"),
]


def _write(tmp_path, case) -> Path:
    bad = tmp_path / "bad.yaml"
    if isinstance(case, str):
        bad.write_text(case)
    else:
        cfg = copy.deepcopy(SHIPPED)
        case(cfg)
        bad.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return bad


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({name for name, *_ in CASES}) == len(CASES)


def test_shipped_config_passes(capsys):
    assert main(["check-config", str(REPO / "config.yaml")]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("name, case, fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_config(tmp_path, capsys, monkeypatch, name, case, fragment):
    monkeypatch.chdir(REPO)                 # shipped weights are found as in the workflow
    bad = _write(tmp_path, case)
    code = main(["check-config", str(bad)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("diffrecon: error: ") and fragment in lines[0], err
    assert "Traceback" not in err


# A few through snakemake itself: the Snakefile's own config loading says the same one line. (A YAML
# syntax error in a --configfile is reported by Snakemake before the Snakefile runs, without line.)
SNAKEMAKE_CASES = ["duplicate_top_key", "duplicate_nested_key", "la400", "ct_methods_empty", "files_glob_empty"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SNAKEMAKE_CASES)
def test_hostile_config_through_snakemake(tmp_path, name):
    case, fragment = next((c, f) for n, c, f in CASES if n == name)
    bad = _write(tmp_path, case)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(tmp_path), "-n", "--configfile", str(bad)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode != 0
    hits = [ln for ln in proc.stderr.splitlines() if fragment in ln]
    assert len(hits) == 1, proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()
