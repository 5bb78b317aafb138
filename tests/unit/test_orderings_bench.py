"""bench/orderings.py: the orderings read from summary tables, and the held-out config it derives."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def orderings():
    spec = importlib.util.spec_from_file_location("orderings", ROOT / "bench" / "orderings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summary(rows):
    return pd.DataFrame([{"dataset": d, "setting": s, "method": m, "view": v, "psnr_mean": p} for d, s, m, v, p in rows])


def test_orderings_pass_and_fail_as_the_values_say(tmp_path, orderings):
    tables = tmp_path / "tables"
    tables.mkdir()
    ct = [("th", "sv8", m, view, p + (0.5 if view == "coronal" else 0.0))
          for m, p in zip(orderings.CT_ORDER, [30, 30, 29, 28, 27, 20]) for view in ("axial", "coronal")]
    _summary(ct).to_csv(tables / "ct_summary.csv", index=False)
    g = "gaussian1d-R4-acs0.12-"
    mri = [("b", g + "magnitude", "score", "image", 30), ("b", g + "magnitude", "tv", "image", 25),
           ("b", g + "magnitude", "zero_filled", "image", 20),
           ("b", g + "multicoil", "score", "image", 22), ("b", g + "multicoil", "tv", "image", 25),
           ("b", g + "multicoil", "zero_filled", "image", 20),
           ("b_ood", g + "magnitude", "score", "image", 18), ("b_ood", g + "magnitude", "unet", "image", 19)]
    _summary(mri).to_csv(tables / "mri_summary.csv", index=False)
    lines = dict((line.split(":")[0], ok) for line, ok in orderings.check(tmp_path))
    assert lines == {"PASS  CT th sv8 PSNR": True,        # Blend++ = Blend passes (≥), the rest strictly
                     f"PASS  MRI b {g}magnitude PSNR": True,
                     f"FAIL  MRI b {g}multicoil PSNR": False,
                     f"FAIL  MRI robustness b_ood {g}magnitude PSNR": False}


def test_a_tie_below_the_first_pair_fails(tmp_path, orderings):
    (tmp_path / "tables").mkdir()
    ct = [("th", "sv8", m, "axial", p) for m, p in zip(orderings.CT_ORDER, [30, 29, 28, 28, 27, 20])]
    _summary(ct).to_csv(tmp_path / "tables" / "ct_summary.csv", index=False)
    [(line, ok)] = orderings.check(tmp_path)
    assert not ok and line.startswith("FAIL") and "dds 28.00 > dds_2d 28.00" in line


def test_heldout_config_is_valid_and_keeps_the_demo_models(orderings):
    from diffrecon.config import validate_config

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = orderings.heldout_config(base)
    validate_config(yaml.safe_load(yaml.safe_dump(cfg)))           # (it fills in defaults: a copy)
    assert cfg["mri"]["datasets"] == ["heldout_brain"] and cfg["ct"]["datasets"] == ["heldout_thorax"]
    assert cfg["datasets"]["heldout_thorax"]["families"] == {"test": "heldout"}
    assert cfg["datasets"]["heldout_brain"]["source"] == "demo"
    assert cfg["score_mri"] == base["score_mri"] and cfg["ct_priors"] == base["ct_priors"]
    assert cfg["ct"]["fbp_unet"]["dataset"] == "demo_thorax" and cfg["mri"]["unet"]["dataset"] == "demo_brain"
    assert cfg["ct"]["diffusion_blend"] == base["ct"]["diffusion_blend"]        # same sampler parameters
    assert "ablation" not in cfg["ct"] and "robustness" not in cfg["mri"]
