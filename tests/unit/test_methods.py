"""The method registry and the runner contract: one list drives the schema, the workflow's
lists, the CLI and the docs; a new method is one module and one registry entry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffrecon import methods
from diffrecon.methods import Method, resolve_params
from diffrecon.methods.runner import FunctionRunner, Problem, Result

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy_method(monkeypatch):
    """Register the toy method of tests/unit/toy (and remove it again)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setitem(methods.METHODS, "mean_fill", Method("mean_fill", "ct", "classical", "toy.mean_fill",
                                                            "toy: mean of the sinogram", defaults={"level": 0.5}))
    return "mean_fill"


def test_registry_lists_every_method_once_with_valid_fields():
    assert methods.names("mri") == ["zero_filled", "tv", "unet", "score", "score_hybrid", "dps", "diffpir", "varnet"]
    assert methods.names("ct") == ["fbp", "fbp_unet", "dds_2d", "dds", "diffusion_mbir", "diffusion_blend",
                                   "diffusion_blend_pp", "tpdm", "dps_ct", "diffpir_ct"]
    assert set(methods.learned("ct")) == {"fbp_unet", "dds_2d", "dds", "diffusion_mbir", "diffusion_blend",
                                          "diffusion_blend_pp", "tpdm", "dps_ct", "diffpir_ct"}
    assert methods.sampling("mri") == ["score", "score_hybrid", "dps", "diffpir"]
    for m in methods.METHODS.values():
        assert (m.kind == "classical") == (m.model is None)
    with pytest.raises(ValueError, match="already registered"):
        methods.register(methods.get("fbp"))
    with pytest.raises(ValueError, match="kind"):
        Method("x", "ct", "magic", "m", "s")


def test_get_names_the_choices_of_a_modality():
    with pytest.raises(ValueError, match="CT method 'tv' is not one of fbp, fbp_unet"):
        methods.get("tv", "ct")


def test_resolve_params_applies_limited_angle_overrides():
    assert resolve_params("dds", {"n_steps": 3})["lam"] == 0.04
    la = resolve_params("dds", {"n_steps": 3}, limited_angle=True)
    assert la["lam"] == 0.4 and la["n_steps"] == 3 and "lam_limited_angle" not in la
    assert resolve_params("dds", {"lam_limited_angle": 0.7}, limited_angle=True)["lam"] == 0.7


def test_schema_enums_come_from_the_registry(toy_method):
    from diffrecon.config import load_schema

    defs = load_schema()["$defs"]
    assert defs["mri_method"]["enum"] == methods.names("mri")
    assert "mean_fill" in defs["ct_method"]["enum"]
    assert defs["ct_diffusion_method"]["enum"] == methods.sampling("ct")
    schema_text = (ROOT / "src/diffrecon/schemas/config.schema.yaml").read_text()
    enum_lines = [line for line in schema_text.splitlines() if "enum" in line]      # no list of method names
    assert not [line for line in enum_lines if sum(f" {name}," in line or f" {name}]" in line
                                                   for name in methods.METHODS) >= 2]


def test_docs_method_table_is_the_registry_table():
    text = (ROOT / "docs" / "methods.md").read_text()
    assert methods.markdown_table() in text, "docs/methods.md is stale: python -m diffrecon.methods > table"


def test_toy_method_runs_through_the_stages(toy_method, tmp_path):
    """The toy method touches only the registry and its own module; the reconstruct stage writes
    its Result with the contract's fields, and evaluate scores it."""
    from diffrecon import io
    from diffrecon.physics.ct import CTGeometry
    from diffrecon.stages.evaluate import evaluate
    from diffrecon.stages.reconstruct import reconstruct

    geom = CTGeometry.sparse_view(8, 4)
    sino = np.arange(8 * 4 * geom.det_count, dtype=np.float32).reshape(8, 4, geom.det_count) / 500
    meas, target, out = tmp_path / "m.h5", tmp_path / "t.h5", tmp_path / "r.h5"
    with io.CaseWriter(meas) as w:
        w.add("vol0", sinogram=sino)
        io.write_ct_measurements_header(w, geom, "toyset", "sv4")
    with io.CaseWriter(target) as w:
        w.add("vol0", target=np.linspace(0, 1, 512, dtype=np.float32).reshape(8, 8, 8))
        w.finish({"modality": "ct", "dataset": "toyset", "setting": "sv4"})
    seconds = reconstruct(meas, toy_method, out, {"level": 2.0})
    rec = io.read_cases(out, "reconstruction")["vol0"]
    np.testing.assert_allclose(rec, 2.0 * sino.mean(), rtol=1e-6)
    case = io.read_case_attrs(out)["vol0"]
    assert case["nfe"] == 7 and case["seconds"] == pytest.approx(seconds["vol0"]) and case["device"] == "cpu"
    attrs = io.read_attrs(out)
    assert attrs["method"] == "mean_fill" and json.loads(attrs["params"]) == {"level": 2.0}
    prov = json.loads(attrs["provenance"])
    assert prov["seed"] == 3 or prov["seed"] is None
    assert {"params_hash", "commit", "versions"} <= set(prov)
    df = evaluate(target, out, tmp_path / "metrics.csv", "toyset", "sv4", toy_method)
    assert set(df["method"]) == {"mean_fill"} and (df["nfe"] == 7).all()


def test_runner_is_closed_even_when_a_case_fails(toy_method, tmp_path, monkeypatch):
    from diffrecon import io
    from diffrecon.physics.ct import CTGeometry
    from diffrecon.stages.reconstruct import reconstruct
    from toy import mean_fill

    made = []
    original = mean_fill.build
    monkeypatch.setattr(mean_fill, "build", lambda *a: made.append(original(*a)) or made[-1])
    geom = CTGeometry.sparse_view(8, 4)
    with io.CaseWriter(tmp_path / "m.h5") as w:
        w.add("vol0", sinogram=np.zeros((2, 4, geom.det_count), np.float32))
        w.add("bad", sinogram=np.zeros((2, 4), np.float32))          # wrong rank: the runner fails
        io.write_ct_measurements_header(w, geom, "toyset", "sv4")
    with pytest.raises(ValueError, match="sinogram must be"):
        reconstruct(tmp_path / "m.h5", toy_method, tmp_path / "r.h5", {})
    assert made and made[0].closed
    assert not (tmp_path / "r.h5").exists() and not (tmp_path / "r.h5.part").exists()


def test_learned_method_without_model_is_refused_before_loading_anything():
    problem = Problem("ct", "sv8", geometry=None)
    with pytest.raises(ValueError, match="dds.*trained model"):
        methods.build_runner("dds", problem, {}, None)


def test_method_of_another_coil_mode_is_refused():
    problem = Problem("mri", "gaussian1d-R4-acs0.12-magnitude", mask=np.ones((8, 8)), coil_mode="magnitude",
                      acs_width=4)
    with pytest.raises(ValueError, match="score_hybrid.*coil mode 'magnitude'"):
        methods.build_runner("score_hybrid", problem, {}, Path("model"))


def test_function_runner_wraps_arrays_and_closes_once():
    calls = []
    r = FunctionRunner(lambda d: d * 2, close=lambda: calls.append(1))
    out = r(np.ones(3))
    assert isinstance(out, Result) and np.array_equal(out.reconstruction, 2 * np.ones(3)) and out.std is None
    r.close()
    r.close()
    assert calls == [1]


def test_workflow_method_lists_and_gpu_requests_follow_the_registry(toy_method):
    from diffrecon.experiment import Experiment

    cfg = {"ct": {"methods": ["fbp", "dds", "mean_fill"], "learned_settings": ["sv8"], "settings": ["sv8", "la90"],
                  "datasets": ["d"]}}
    x = Experiment(cfg)
    cells = x.cells("ct")
    assert ("d", "la90", "dds") not in cells and ("d", "la90", "mean_fill") in cells and ("d", "sv8", "dds") in cells
    assert x.learned_in("ct", "sv8") and not x.learned_in("ct", "la90")


def test_module_entry_point_prints_the_docs_table():
    out = subprocess.run([sys.executable, "-m", "diffrecon.methods"], capture_output=True, text=True, check=True)
    assert out.stdout == methods.markdown_table()


def test_labels_are_the_papers_names_and_unique_per_modality():
    assert methods.get("fbp_unet").display == "FBP-UNet" and methods.get("dds_2d").display == "DDS 2D"
    assert methods.get("diffusion_blend_pp").display == "DiffusionBlend++" and methods.get("varnet").display == "E2E-VarNet"
    assert methods.label("dps") == methods.label("dps_ct") == "DPS"       # one solver, one printed name
    assert methods.label("not_a_method") == "not_a_method"
    for modality in ("mri", "ct"):
        shown = [methods.get(n).display for n in methods.names(modality)]
        assert len(shown) == len(set(shown))
    with pytest.raises(ValueError, match="label 'DDS' is already dds's"):
        methods.register(Method("dds_copy", "ct", "diffusion", "diffrecon.methods.ct_diffusion", "copy", label="DDS"))
    assert "dds_copy" not in methods.METHODS
