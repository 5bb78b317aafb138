"""Tests for experiment settings (names, parsing, CT geometry) and config validation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from diffrecon.config import ConfigError, load_config, validate_config
from diffrecon.settings import CTSetting, MRISetting

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config.yaml"


# ============================================================================ settings
@pytest.mark.parametrize("setting", [
    MRISetting("gaussian1d", 4.0, 0.08, "multicoil"),
    MRISetting("uniform1d", 8.0, 0.04, "singlecoil"),
    MRISetting("gaussian2d", 15.0, 0.12, "magnitude"),
    MRISetting("uniform2d", 2.5, 0.25, "multicoil"),
    MRISetting("poisson", 6.0, 0.1, "singlecoil"),
])
def test_mri_setting_name_round_trip(setting):
    parsed = MRISetting.parse(setting.name)
    assert parsed == setting
    assert parsed.name == setting.name
    assert "/" not in setting.name and " " not in setting.name


def test_mri_setting_name_format():
    # the documented example, built by hand
    assert MRISetting("gaussian1d", 4, 0.08, "multicoil").name == "gaussian1d-R4-acs0.08-multicoil"
    s = MRISetting.parse("poisson-R8-acs0.12-magnitude")
    assert (s.mask, s.acceleration, s.acs_fraction, s.coil_mode) == ("poisson", 8.0, 0.12, "magnitude")


@pytest.mark.parametrize("name", ["sv8", "sv4", "sv180", "la90", "la120", "la1"])
def test_ct_setting_name_round_trip(name):
    s = CTSetting.parse(name)
    assert s.name == name
    assert CTSetting.parse(s.name) == s
    assert s.kind == name[:2] and s.n == int(name[2:])


def test_ct_setting_geometry_sparse_view():
    g = CTSetting.parse("sv8").geometry(64)
    assert g.n == 64
    np.testing.assert_allclose(g.angles_deg, np.arange(8) * 22.5, atol=1e-9)
    assert g.det_count == math.ceil(math.sqrt(2) * 64)
    assert g.projector == "linear"
    assert CTSetting.parse("sv8").geometry(64, projector="strip").projector == "strip"


def test_ct_setting_geometry_limited_angle():
    g = CTSetting.parse("la90").geometry(64)
    assert g.n == 64
    np.testing.assert_allclose(g.angles_deg, np.arange(90, dtype=float), atol=1e-9)
    assert g.angles_deg[0] == 0 and g.angles_deg[-1] == pytest.approx(89.0)


@pytest.mark.parametrize("name, bad", [
    ("gaussian1d-R4-acs0.08", "gaussian1d-R4-acs0.08"),               # missing coil mode
    ("gaussian1d_R4_acs0.08_multicoil", "gaussian1d_R4_acs0.08_multicoil"),
    ("", ""),
    ("gaussian3d-R4-acs0.08-multicoil", "gaussian3d"),                 # unknown mask
    ("gaussian1d-R4-acs0.08-dualcoil", "dualcoil"),                    # unknown coil mode
])
def test_mri_setting_bad_names(name, bad):
    with pytest.raises(ValueError) as exc:
        MRISetting.parse(name)
    assert f"'{bad}'" in str(exc.value)


def test_mri_setting_constructor_validates():
    with pytest.raises(ValueError, match="'radial'.*gaussian1d"):
        MRISetting("radial", 4, 0.08, "multicoil")
    with pytest.raises(ValueError, match="'complex'.*magnitude"):
        MRISetting("gaussian1d", 4, 0.08, "complex")


@pytest.mark.parametrize("name, bad", [("xx8", "xx8"), ("sv", "sv"), ("sv-8", "sv-8"), ("SV8", "SV8"),
                                       ("sv0", "sv0"), ("la181", "la181"), ("la0", "la0")])
def test_ct_setting_bad_names(name, bad):
    with pytest.raises(ValueError) as exc:
        CTSetting.parse(name)
    assert bad in str(exc.value)


def test_ct_setting_constructor_validates():
    with pytest.raises(ValueError, match="'fan'"):
        CTSetting("fan", 8)


# ====================================================================== config
@pytest.fixture(scope="module")
def shipped():
    return yaml.safe_load(SHIPPED.read_text())


@pytest.fixture
def cfg(shipped):
    return copy.deepcopy(shipped)


def _error(config) -> str:
    with pytest.raises(ConfigError) as exc:
        validate_config(config)
    msg = str(exc.value)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    assert msg.startswith("config: ")
    return msg


def test_shipped_config_is_valid(cfg):
    out = validate_config(cfg)
    assert out is cfg
    assert cfg["results_dir"] == "results"
    assert cfg["mri"]["datasets"] == ["demo_brain"]


def test_load_config_reads_the_shipped_file():
    config = load_config(SHIPPED)
    assert config["seed"] == 0 and set(config["datasets"]) == {"demo_brain", "demo_thorax"}


def test_defaults_are_filled(cfg):
    for key in ("results_dir", "figures"):
        del cfg[key]
    del cfg["ct"]["projector"], cfg["ct"]["noise"], cfg["mri"]["tv"]
    validate_config(cfg)
    assert cfg["results_dir"] == "results"
    assert cfg["figures"] == {"case_index": 0, "settings": None}
    assert cfg["ct"]["projector"] == "linear"
    assert cfg["ct"]["noise"] == {"I0": 0, "sigma": 0.0}
    assert cfg["mri"]["tv"] == {"lam": 0.01, "iterations": 300}


def test_given_values_are_not_overwritten_by_defaults(cfg):
    cfg["results_dir"] = "elsewhere"
    cfg["ct"]["projector"] = "strip"
    validate_config(cfg)
    assert cfg["results_dir"] == "elsewhere" and cfg["ct"]["projector"] == "strip"


def test_defaults_next_to_a_ref_are_filled(cfg):
    del cfg["mri"]["max_cases"], cfg["mri"]["central_slices"], cfg["ct"]["max_cases"]
    validate_config(cfg)
    assert "max_cases" in cfg["mri"] and cfg["mri"]["max_cases"] is None
    assert "central_slices" in cfg["mri"] and cfg["mri"]["central_slices"] is None
    assert "max_cases" in cfg["ct"] and cfg["ct"]["max_cases"] is None


def test_unknown_top_level_key(cfg):
    cfg["sed"] = 1
    msg = _error(cfg)
    assert "'sed'" in msg and "seed" in msg and "datasets" in msg


def test_unknown_key_in_mri(cfg):
    cfg["mri"]["mask"] = ["gaussian1d"]
    msg = _error(cfg)
    assert "mri" in msg and "'mask'" in msg
    assert "masks" in msg and "coil_modes" in msg      # the allowed keys are listed


def test_unknown_mask_names_path_and_allowed_values(cfg):
    cfg["mri"]["masks"] = ["gaussian3d"]
    msg = _error(cfg)
    assert "mri.masks[0]" in msg and "gaussian3d" in msg
    for allowed in ("gaussian1d", "uniform1d", "gaussian2d", "uniform2d", "poisson"):
        assert allowed in msg


def test_second_list_item_is_located(cfg):
    cfg["mri"]["coil_modes"] = ["multicoil", "dualcoil"]
    msg = _error(cfg)
    assert "mri.coil_modes[1]" in msg and "dualcoil" in msg and "magnitude" in msg


def test_negative_seed(cfg):
    cfg["seed"] = -1
    msg = _error(cfg)
    assert "seed" in msg and "-1" in msg


def test_bad_ct_setting(cfg):
    cfg["ct"]["settings"] = ["sv8", "xx8"]
    msg = _error(cfg)
    assert "ct.settings[1]" in msg and "xx8" in msg


def test_bad_projector_lists_allowed(cfg):
    cfg["ct"]["projector"] = "cone"
    msg = _error(cfg)
    assert "ct.projector" in msg and "cone" in msg and "line, strip, linear" in msg


def test_mri_datasets_naming_a_ct_dataset(cfg):
    cfg["mri"]["datasets"] = ["demo_thorax"]
    msg = _error(cfg)
    assert "mri.datasets[0]" in msg and "demo_thorax" in msg and "ct" in msg


def test_ct_datasets_naming_an_mri_dataset(cfg):
    cfg["ct"]["datasets"] = ["demo_brain"]
    msg = _error(cfg)
    assert "ct.datasets[0]" in msg and "demo_brain" in msg


def test_mri_datasets_naming_an_undefined_dataset(cfg):
    cfg["mri"]["datasets"] = ["demo_brain", "knee_missing"]
    msg = _error(cfg)
    assert "mri.datasets[1]" in msg and "knee_missing" in msg
    assert "demo_brain" in msg                         # the defined datasets are listed


def test_demo_mri_dataset_needs_eight_coils(cfg):
    cfg["datasets"]["demo_brain"]["coils"] = 4
    msg = _error(cfg)
    assert "datasets.demo_brain.coils" in msg and "8" in msg


def test_demo_ct_dataset_needs_27_slices(cfg):
    cfg["datasets"]["demo_thorax"]["slices"] = 8
    msg = _error(cfg)
    assert "datasets.demo_thorax.slices" in msg and "27" in msg


def test_unknown_key_in_a_dataset(cfg):
    cfg["datasets"]["demo_brain"]["colis"] = 8
    msg = _error(cfg)
    assert "datasets.demo_brain" in msg and "colis" in msg and "coils" in msg


def test_missing_required_key(cfg):
    del cfg["datasets"]
    msg = _error(cfg)
    assert "datasets" in msg


def test_load_config_unreadable(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(exc.value) and "\n" not in str(exc.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [0\n  datasets: {\n")
    with pytest.raises(ConfigError) as exc:
        load_config(bad)
    assert "bad.yaml" in str(exc.value) and "\n" not in str(exc.value)


def test_ct_ablation_checks(cfg):
    assert cfg["ct"]["ablation"]["steps_methods"] == ["diffusion_blend_pp"]   # the demo's block
    bad = copy.deepcopy(cfg)
    bad["ct"]["ablation"]["dataset"] = "demo_brain"
    assert "ct.ablation.dataset" in _error(bad) and "demo_brain" in _error(bad)
    bad = copy.deepcopy(cfg)
    bad["ct"]["ablation"]["steps_methods"] = ["diffusion_mbir"]
    del bad["ct_priors"]["score"]
    bad["ct"]["methods"] = ["fbp"]
    assert "ct.ablation" in _error(bad) and "ct_priors.score" in _error(bad)
    bad = copy.deepcopy(cfg)
    bad["ct"]["ablation"]["jump_every"] = [-1]
    assert "ct.ablation.jump_every[0]" in _error(bad)


def test_setting_parsing_stays_light():
    """Short pipeline jobs parse settings, and every workflow start validates the config; neither
    may import torch, sigpy or ASTRA."""
    import subprocess
    import sys

    code = ("import sys; from diffrecon.settings import MRISetting, CTSetting; "
            "MRISetting.parse('poisson-R4-acs0.12-multicoil'); CTSetting.parse('la90'); "
            f"from diffrecon.config import load_config; load_config({str(SHIPPED)!r}); "
            "print(sorted(m for m in ('torch', 'sigpy', 'astra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_physics_names_resolve_lazily():
    import diffrecon.physics as physics

    for name in physics.__all__:
        assert getattr(physics, name) is not None
    with pytest.raises(AttributeError):
        physics.no_such_operator  # noqa: B018


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_acs_fraction_out_of_range_is_rejected(cfg, value):
    i = len(cfg["mri"]["accelerations"]) - 1                   # the last entry, whatever the demo lists
    cfg["mri"]["accelerations"][i]["acs_fraction"] = value
    msg = _error(cfg)
    assert f"mri.accelerations[{i}].acs_fraction" in msg and str(value) in msg


@pytest.mark.parametrize("path", [("score_mri", "train"), ("mri", "unet", "train"), ("ct", "fbp_unet", "train"),
                                  ("ct_priors", "patch", "train")])
@pytest.mark.parametrize("value", [-0.5, 1.5])
def test_ema_decay_out_of_range_is_rejected(cfg, path, value):
    node = cfg
    for key in path:
        node = node[key]
    node["ema_decay"] = value
    msg = _error(cfg)
    assert ".".join(path) + ".ema_decay" in msg and str(value) in msg


def test_conda_env_default_and_choices(cfg):
    del cfg["conda_env"]
    validate_config(cfg)
    assert cfg["conda_env"] == "cpu"
    cfg["conda_env"] = "gpu"
    validate_config(cfg)
    cfg["conda_env"] = "cuda"
    msg = _error(cfg)
    assert "conda_env" in msg and "cuda" in msg and "cpu" in msg and "gpu" in msg


def test_case_groups_are_off_by_default_and_checked(cfg):
    from diffrecon import methods
    from diffrecon.config import block_methods, case_group_methods

    del cfg["mri"]["case_groups"], cfg["ct"]["case_groups"]
    validate_config(copy.deepcopy(cfg))
    assert case_group_methods(cfg, "mri") == case_group_methods(cfg, "ct") == []
    for modality in ("mri", "ct"):
        bad = copy.deepcopy(cfg)
        bad[modality]["case_groups"] = {"count": 0}
        msg = _error(bad)
        assert f"{modality}.case_groups" in msg
    cfg["ct"]["case_groups"] = {"count": 4}
    cfg["mri"]["case_groups"] = {"count": 3, "methods": ["tv"]}
    validate_config(cfg)
    assert case_group_methods(cfg, "ct") == methods.sampling("ct") and "dds" in case_group_methods(cfg, "ct")
    assert case_group_methods(cfg, "mri") == ["tv"]
    cfg["mri"]["blocks"] = {"count": 2}                     # the diffusion methods: no overlap with tv
    validate_config(cfg)
    cfg["mri"]["case_groups"] = {"count": 3}                # both default to the diffusion methods
    msg = _error(cfg)
    assert msg.startswith("config: mri.case_groups: 'score' is also in mri.blocks")
    cfg["mri"]["blocks"]["methods"] = ["score"]
    cfg["mri"]["case_groups"]["methods"] = ["score_hybrid", "score"]
    assert block_methods(cfg) == ["score"]
    assert "'score' is also in mri.blocks" in _error(cfg)
