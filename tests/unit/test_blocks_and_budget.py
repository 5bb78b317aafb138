"""Paper-size volumes in bounded memory: network batches sized to a memory budget (same numbers
as unchunked), MRI volumes in slice blocks and a cell's volumes in case groups (separate runs
merged = the one-job run), and parts stored as they finish so that a killed run resumes without
recomputing them."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from diffrecon import io, methods
from diffrecon.methods.runner import Problem
from diffrecon.stages.reconstruct import (block_range, case_range, merge_blocks, merge_cases, parse_cases,
                                          parse_slices, reconstruct)

TINY_MODEL = {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1}


# ------------------------------------------------------------------------------- fixtures
def _save(stem, network, meta):
    from diffrecon.models.checkpoint import prefixed, save_checkpoint

    return save_checkpoint(stem, prefixed("model", network.state_dict()), meta)


@pytest.fixture(scope="module")
def score_model(tmp_path_factory):
    """A randomly initialised VE score prior of 16 x 16 images (checkpoint stem)."""
    from diffrecon.models.recipes import score_network

    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("score") / "prior"
    _save(stem, score_network({"model": TINY_MODEL}, 16),
          {"method": "score_mri", "model": TINY_MODEL, "sde": {"sigma_min": 0.01, "sigma_max": 2.0}, "image_size": 16})
    return stem


@pytest.fixture(scope="module")
def ct_priors(tmp_path_factory):
    """Randomly initialised patch and slice VP priors of 16 x 16 slices: {kind: checkpoint stem}."""
    from diffrecon.models.recipes import noise_network

    out = tmp_path_factory.mktemp("ct_priors")
    stems = {}
    for kind, channels, labels in (("patch", 3, 4), ("slice", 1, None)):
        torch.manual_seed(1)
        stems[kind] = out / kind
        meta = {"kind": kind, "model": TINY_MODEL, "image_size": 16,
                "schedule": {"beta_start": 1e-4, "beta_end": 0.02, "n_train_steps": 1000}}
        if kind == "patch":
            meta["spacings"] = [1, 3]
        _save(stems[kind], noise_network({"model": TINY_MODEL}, 16, channels, labels), meta)
    return stems


def _mri_measurements(path, slices=(5, 3), coils=None, seed=0):
    """An MRI measurements file of 16 x 16 volumes with ``slices`` slices each (magnitude, or
    multi-coil with ``coils``), a gaussian1d mask."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((16, 16), np.float32)
    mask[:, [0, 3, 6, 7, 8, 9, 12]] = 1
    coil_mode = "multicoil" if coils else "magnitude"
    with io.CaseWriter(path) as w:
        for i, s in enumerate(slices):
            shape = (s, coils, 16, 16) if coils else (s, 16, 16)
            k = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64) * mask
            w.add(f"vol{i}", kspace=k)
        w.finish({"modality": "mri", "dataset": "toy", "setting": f"gaussian1d-R4-acs0.25-{coil_mode}",
                  "coil_mode": coil_mode, "mask": json.dumps({"kind": "gaussian1d"})}, mask=mask)
    return path


def _cases(path):
    with h5py.File(path, "r") as f:
        return {c: {k: f["cases"][c][k][()] for k in f["cases"][c]} for c in f["cases"]}


SCORE = {"n_steps": 4, "n_samples": 2, "progress": False, "seed": 3}


# ---------------------------------------------------------------------------- block specs
def test_block_specs_cover_a_volume_once():
    assert parse_slices("2:5") == ("range", 2, 5) and parse_slices("3:") == ("range", 3, -1)
    assert parse_slices("2/4") == ("part", 2, 4)
    for bad in ("5:2", "a:b", "0/3", "4/3", "-1:2", "3"):
        with pytest.raises(ValueError, match="START:STOP"):
            parse_slices(bad)
    for s in (1, 2, 7, 64):
        for n in (1, 3, 4, 9):
            ranges = [block_range(f"{k}/{n}", s) for k in range(1, n + 1)]
            assert ranges[0][0] == 0 and ranges[-1][1] == s
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert block_range("3:10", 5) == (3, 5) and block_range("7:9", 5) == (5, 5)


def test_slice_noise_of_a_block_is_the_whole_volumes():
    from diffrecon.samplers.noise import SliceNoise, slice_seed

    seeds = [slice_seed(3, 1, "vol0", s) for s in range(6)]
    assert len(set(seeds)) == 6 and seeds == [slice_seed(3, 1, "vol0", s) for s in range(6)]
    assert slice_seed(3, 1, "vol1", 0) != seeds[0] and slice_seed(3, 0, "vol0", 0) != seeds[0]
    whole = SliceNoise(seeds).randn((12, 2, 4))
    block = SliceNoise(seeds[2:5]).randn((6, 2, 4))
    assert torch.equal(whole[4:10], block)
    with pytest.raises(ValueError, match="multiple"):
        SliceNoise(seeds).randn((7, 2))


# ------------------------------------------------------------------------- memory budget
def test_cpu_measurement_grows_linearly_with_the_batch_and_sets_the_limit():
    from diffrecon.models.inference import network_fn
    from diffrecon.models.recipes import score_network
    from diffrecon.samplers.memory import GIB, batch_for_budget, example_inputs, forward_peak_bytes, measure_network

    torch.manual_seed(0)
    fn = network_fn(score_network({"model": TINY_MODEL}, 32).eval())
    example = example_inputs("score", 1, 32, "cpu")
    mem = measure_network(fn, example, "cpu")
    assert mem.per_image > 32 * 32 * 4 and mem.how == "cpu-profiler"
    with torch.inference_mode():
        peak8 = forward_peak_bytes(lambda: fn(*example(8)), "cpu")
    assert 0.8 < peak8 / (mem.fixed + 8 * mem.per_image) < 1.25
    assert mem.batch(10 * mem.per_image / GIB) in (9, 10)
    assert batch_for_budget(1.0, 10 ** 9) == 1                       # one image always runs
    with pytest.raises(ValueError, match="budget"):
        batch_for_budget(0, 1)


@pytest.mark.parametrize("method", ["diffusion_blend", "diffusion_blend_pp", "dds"])
def test_ct_budget_chunks_the_batches_and_keeps_the_result(method, ct_priors, one_thread):
    """A 64-slice volume: a memory budget of a few images per call gives the numbers of one
    unchunked call per step (float rounding aside)."""
    from diffrecon.models.inference import network_fn
    from diffrecon.models.loading import load_ct_prior
    from diffrecon.physics.ct import CTGeometry, ParallelBeamCT
    from diffrecon.samplers.memory import GIB, example_inputs, measure_network

    geom = CTGeometry.sparse_view(16, 6)
    problem = Problem("ct", "sv6", geometry=geom)
    truth = np.clip(np.random.default_rng(0).random((64, 16, 16)), 0, 1).astype(np.float32)
    with ParallelBeamCT(geom, n_threads=1) as op:
        sino = op.forward_np(truth)
    stem = ct_priors["slice" if method == "dds" else "patch"]
    network, _, meta = load_ct_prior(stem)
    kind = "noise" if method == "dds" else "labelled"
    mem = measure_network(network_fn(network), example_inputs(kind, 1 if method == "dds" else 3, 16, "cpu"), "cpu")
    budget = (mem.fixed + 4.5 * mem.per_image) / GIB                   # about 4 images per call
    common = {"n_steps": 3, "progress": False, "device": "cpu", "n_threads": 1}
    calls = {}
    outs = {}
    for name, extra in (("whole", {"batch_limit": 1000}), ("budget", {"memory_budget_gb": budget})):
        runner = methods.build_runner(method, problem, {**common, **extra}, stem)
        try:
            sampler = runner._sampler()
            runner._sampler = lambda s=sampler: s
            outs[name] = runner(sino).reconstruction
            calls[name] = (runner.settings["batch_limit"], sampler.network_calls)
        finally:
            runner.close()
    limit, n_calls = calls["budget"]
    assert 2 <= limit <= 6 and n_calls > 3 * calls["whole"][1]        # 22 patches / 64 slices per step
    np.testing.assert_allclose(outs["budget"], outs["whole"], rtol=1e-4, atol=1e-5)


def test_score_budget_sets_the_batch_limit(score_model, tmp_path, one_thread):
    from diffrecon.models.inference import network_fn
    from diffrecon.models.loading import load_score_network
    from diffrecon.samplers.memory import GIB, example_inputs, measure_network

    network, _, _ = load_score_network(score_model)
    mem = measure_network(network_fn(network), example_inputs("score", 1, 16, "cpu"), "cpu")
    meas = _mri_measurements(tmp_path / "m.h5", slices=(4,))
    reconstruct(meas, "score", tmp_path / "whole.h5", {**SCORE, "batch_limit": 1000, "device": "cpu"}, model=score_model)
    reconstruct(meas, "score", tmp_path / "budget.h5", {**SCORE, "device": "cpu",
                                                         "memory_budget_gb": (mem.fixed + 2.5 * mem.per_image) / GIB},
                model=score_model)
    sampler_params = json.loads(io.read_attrs(tmp_path / "budget.h5")["sampler_params"])
    assert 1 <= sampler_params["batch_limit"] <= 3                   # of 4 images per call
    a, b = _cases(tmp_path / "whole.h5")["vol0"], _cases(tmp_path / "budget.h5")["vol0"]
    np.testing.assert_allclose(a["reconstruction"], b["reconstruction"], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ MRI blocks
@pytest.mark.parametrize("method,coils,batch_limit", [("score", None, 256), ("score_hybrid", 4, 256),
                                                      ("score", None, 1)])
def test_blocks_merged_equal_the_one_job_run(method, coils, batch_limit, score_model, tmp_path, one_thread):
    """Blocks K/3 of two volumes (5 and 2 slices: one block of the second is empty), merged: the
    one-job run's file, to float rounding (the network sees other batches); bit for bit when every
    network call holds one image either way (batch_limit 1)."""
    meas = _mri_measurements(tmp_path / "m.h5", slices=(5, 2), coils=coils)
    params = {**SCORE, "device": "cpu", "hybrid_every": 2, "batch_limit": batch_limit}
    same = (np.testing.assert_array_equal if batch_limit == 1 else
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5))
    reconstruct(meas, method, tmp_path / "whole.h5", params, model=score_model)
    blocks = [tmp_path / f"b{k}.h5" for k in (1, 2, 3)]
    for k, path in enumerate(blocks, 1):
        reconstruct(meas, method, path, params, model=score_model, slices=f"{k}/3")
    assert io.read_attrs(blocks[0])["block"] == "1/3"
    merge_blocks(blocks[::-1], tmp_path / "merged.h5")                 # any order
    whole, merged = _cases(tmp_path / "whole.h5"), _cases(tmp_path / "merged.h5")
    assert set(merged) == set(whole) == {"vol0", "vol1"}
    for case in whole:
        assert set(merged[case]) == {"reconstruction", "std"}
        for key in ("reconstruction", "std"):
            same(merged[case][key], whole[case][key])
    assert not np.allclose(whole["vol0"]["reconstruction"][0], whole["vol1"]["reconstruction"][0])
    a, b = io.read_attrs(tmp_path / "whole.h5"), io.read_attrs(tmp_path / "merged.h5")
    assert "block" not in b and a["params"] == b["params"]
    assert json.loads(a["provenance"])["params_hash"] == json.loads(b["provenance"])["params_hash"]
    attrs = io.read_case_attrs(tmp_path / "merged.h5")["vol0"]
    assert attrs["nfe"] == io.read_case_attrs(tmp_path / "whole.h5")["vol0"]["nfe"]
    assert "slice_start" not in attrs
    # an explicit range is the same block
    reconstruct(meas, method, tmp_path / "r.h5", params, model=score_model, slices="1:3")
    same(_cases(tmp_path / "r.h5")["vol0"]["reconstruction"], whole["vol0"]["reconstruction"][1:3])


def test_merge_refuses_gaps_and_other_runs(score_model, tmp_path, one_thread):
    meas = _mri_measurements(tmp_path / "m.h5", slices=(4,))
    params = {**SCORE, "n_steps": 2, "device": "cpu"}
    for k in (1, 2):
        reconstruct(meas, "score", tmp_path / f"b{k}.h5", params, model=score_model, slices=f"{k}/2")
    reconstruct(meas, "score", tmp_path / "other.h5", {**params, "seed": 9}, model=score_model, slices="2/2")
    out = tmp_path / "merged.h5"
    with pytest.raises(ValueError, match=r"b1.h5: case .vol0.: slices 2-3 missing"):
        merge_blocks([tmp_path / "b1.h5"], out)
    with pytest.raises(ValueError, match=r"other.h5: attribute 'params' differs"):
        merge_blocks([tmp_path / "b1.h5", tmp_path / "other.h5"], out)
    with pytest.raises(ValueError, match=r"slices 2-3 twice"):
        merge_blocks([tmp_path / "b1.h5", tmp_path / "b2.h5", tmp_path / "b2.h5"], out)
    reconstruct(meas, "score", tmp_path / "whole.h5", params, model=score_model)
    with pytest.raises(ValueError, match=r"whole.h5: no root attribute 'block'"):
        merge_blocks([tmp_path / "whole.h5"], out)
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_blocks_are_mri_only(tmp_path):
    from diffrecon.physics.ct import CTGeometry

    geom = CTGeometry.sparse_view(8, 4)
    with io.CaseWriter(tmp_path / "m.h5") as w:
        w.add("vol0", sinogram=np.zeros((3, 4, geom.det_count), np.float32))
        io.write_ct_measurements_header(w, geom, "toy", "sv4")
    with pytest.raises(ValueError, match="MRI only"):
        reconstruct(tmp_path / "m.h5", "fbp", tmp_path / "r.h5", {}, slices="1/2")
    assert not (tmp_path / "r.h5").exists()


# ----------------------------------------------------------------------------- case groups
def _ct_measurements(path, slices=(3, 4, 3), seed=0):
    """A CT measurements file (sv6, 16 x 16 slices) of volumes with ``slices`` slices each."""
    from diffrecon.physics.ct import CTGeometry, ParallelBeamCT

    rng = np.random.default_rng(seed)
    geom = CTGeometry.sparse_view(16, 6)
    with ParallelBeamCT(geom, n_threads=1) as op, io.CaseWriter(path) as w:
        for i, s in enumerate(slices):
            w.add(f"vol{i}", sinogram=op.forward_np(rng.random((s, 16, 16)).astype(np.float32)))
        io.write_ct_measurements_header(w, geom, "toy", "sv6")
    return path


def _same_files(a, b, exact=True):
    """``b`` holds ``a``'s cases, datasets and attributes (wall and network seconds aside)."""
    same = np.testing.assert_array_equal if exact else (
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6))
    ca, cb = _cases(a), _cases(b)
    assert list(ca) == list(cb)
    for case in ca:
        assert set(ca[case]) == set(cb[case])
        for key in ca[case]:
            same(cb[case][key], ca[case][key])
    ta, tb = io.read_case_attrs(a), io.read_case_attrs(b)
    for case in ta:
        drop = ("seconds", "network_seconds")
        assert {k: v for k, v in ta[case].items() if k not in drop} == {k: v for k, v in tb[case].items() if k not in drop}
    assert io.read_attrs(a) == io.read_attrs(b)


def test_case_groups_cover_the_list_once():
    for n_cases in (0, 1, 3, 7, 10):
        for n in (1, 2, 3, 4, 11):
            ranges = [case_range(f"{k}/{n}", n_cases) for k in range(1, n + 1)]
            assert ranges[0][0] == 0 and ranges[-1][1] == n_cases
            assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1
            assert (min(sizes) == 0) == (n > n_cases)
    assert case_range(None, 5) == (0, 5) and parse_cases(" 2/3 ") == (2, 3)
    for bad in ("0/2", "3/2", "1:2", "a/b", "2"):
        with pytest.raises(ValueError, match=f"cases '{bad}': expected K/N"):
            parse_cases(bad)


@pytest.mark.parametrize("modality,method", [("ct", "fbp"), ("ct", "dds"), ("mri", "score"), ("mri", "tv")])
def test_case_groups_merged_equal_the_one_job_run(modality, method, ct_priors, score_model, tmp_path, one_thread):
    """Three volumes in 2 groups (1 + 2 volumes) and in 4 (one group empty), merged in any order:
    the one-job run's file, arrays bit for bit, the same case and root attributes."""
    if modality == "ct":
        meas = _ct_measurements(tmp_path / "m.h5")
        params = {"n_steps": 3, "progress": False, "device": "cpu", "n_threads": 1}
        model = ct_priors["slice"] if method == "dds" else None
    else:
        meas = _mri_measurements(tmp_path / "m.h5", slices=(3, 2, 2))
        params = {**SCORE, "n_steps": 2, "device": "cpu"} if method == "score" else {"iterations": 5}
        model = score_model if method == "score" else None
    reconstruct(meas, method, tmp_path / "whole.h5", params, model=model)
    for n in (2, 4):
        groups = [tmp_path / f"g{k}-of-{n}.h5" for k in range(1, n + 1)]
        for k, path in enumerate(groups, 1):
            reconstruct(meas, method, path, {**params, "cases": f"{k}/{n}"}, model=model)
        a = io.read_attrs(groups[0])
        assert a["case_group"] == f"1/{n}" and a["case_count"] == 3
        assert [list(io.read_case_attrs(g)) for g in groups] == ([["vol0"], ["vol1", "vol2"]] if n == 2 else
                                                                 [[], ["vol0"], ["vol1"], ["vol2"]])
        assert io.read_case_attrs(groups[-1])["vol2"]["case_index"] == 2
        merge_cases(groups[::-1], tmp_path / f"merged{n}.h5")
        _same_files(tmp_path / "whole.h5", tmp_path / f"merged{n}.h5")
    whole = _cases(tmp_path / "whole.h5")
    assert not np.allclose(whole["vol1"]["reconstruction"][:2], whole["vol2"]["reconstruction"][:2])


def test_merge_cases_refuses_gaps_duplicates_and_other_runs(tmp_path, one_thread):
    meas = _ct_measurements(tmp_path / "m.h5")
    for k in (1, 2, 3):
        reconstruct(meas, "fbp", tmp_path / f"g{k}.h5", {"n_threads": 1}, cases=f"{k}/3")
    reconstruct(meas, "fbp", tmp_path / "filter.h5", {"n_threads": 1, "seed": 5}, cases="2/3")
    reconstruct(meas, "fbp", tmp_path / "half.h5", {"n_threads": 1}, cases="2/2")
    reconstruct(meas, "fbp", tmp_path / "whole.h5", {"n_threads": 1})
    g1, g2, g3 = (tmp_path / f"g{k}.h5" for k in (1, 2, 3))
    out = tmp_path / "merged.h5"
    for files, message in (
            ([g1, g3], r"g1.h5: case group 2/3 \(cases 1-1 of 3\) missing$"),
            ([g2, g3], r"g2.h5: case group 1/3 \(cases 0-0 of 3\) missing$"),
            ([g1], r"g1.h5: case group 2/3 \(cases 1-1 of 3\) missing, and 1 more group"),
            ([g1, g2, g2, g3], r"g2.h5: case group 2/3 given twice \(also .*g2.h5\)"),
            ([g1, tmp_path / "filter.h5", g3], r"filter.h5: attribute 'params' differs from .*g1.h5's"),
            ([g1, tmp_path / "half.h5"], r"half.h5: group 2/2 of 3 cases, but .*g1.h5 is group 1/3 of 3"),
            ([tmp_path / "whole.h5"], r"whole.h5: no root attribute 'case_group'")):
        with pytest.raises(ValueError, match=message) as err:
            merge_cases(files, out)
        assert "\n" not in str(err.value)
    # a case renamed into another group: a duplicated case
    with h5py.File(g3, "a") as f:
        f.move("cases/vol2", "cases/vol0")
    with pytest.raises(ValueError, match=r"g3.h5: case 'vol0' also in .*g1.h5: duplicated cases"):
        merge_cases([g1, g2, g3], out)
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_case_groups_and_slice_blocks_are_one_at_a_time(tmp_path):
    meas = _mri_measurements(tmp_path / "m.h5", slices=(2,))
    with pytest.raises(ValueError, match="slices and cases: one at a time"):
        reconstruct(meas, "zero_filled", tmp_path / "r.h5", {}, slices="1/2", cases="1/2")
    with pytest.raises(ValueError, match="cases '3/2'"):
        reconstruct(meas, "zero_filled", tmp_path / "r.h5", {"cases": "3/2"})
    assert not (tmp_path / "r.h5").exists()


def test_cli_merge_cases(tmp_path, capsys, one_thread):
    from diffrecon.cli import main

    meas = _ct_measurements(tmp_path / "m.h5")
    reconstruct(meas, "fbp", tmp_path / "whole.h5", {"n_threads": 1})
    for k in (1, 2):
        reconstruct(meas, "fbp", tmp_path / f"g{k}.h5", {"n_threads": 1}, cases=f"{k}/2")
    assert main(["merge-cases", str(tmp_path / "recon.h5"), str(tmp_path / "g2.h5"), str(tmp_path / "g1.h5")]) == 0
    assert json.loads(capsys.readouterr().out)["cases"] == ["vol0", "vol1", "vol2"]
    _same_files(tmp_path / "whole.h5", tmp_path / "recon.h5")
    assert main(["merge-cases", str(tmp_path / "x.h5"), str(tmp_path / "g2.h5")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "g2.h5: case group 1/2 (cases 0-0 of 3) missing" in err
    assert main(["merge-cases", str(tmp_path / "g1.h5"), str(tmp_path / "g1.h5"), str(tmp_path / "g2.h5")]) == 2
    assert "is one of the case group files" in capsys.readouterr().err


# --------------------------------------------------------------------------------- resume
class _Interrupt(Exception):
    pass


def _counting(monkeypatch, fail_at: int | None = None):
    """Wrap every runner the stage builds: record the slices of each call; raise at call ``fail_at``."""
    calls = []
    build = methods.build_runner

    def wrapped(*args, **kwargs):
        runner = build(*args, **kwargs)
        call = runner.__call__

        class Counting(type(runner)):
            def __call__(self, data, block=None):
                calls.append((block.case, block.start, block.stop))
                if fail_at is not None and len(calls) == fail_at:
                    raise _Interrupt("killed")
                return call(data, block)

        runner.__class__ = Counting
        return runner

    monkeypatch.setattr(methods, "build_runner", wrapped)
    return calls


def test_killed_run_resumes_without_recomputing_stored_parts(score_model, tmp_path, monkeypatch, one_thread):
    meas = _mri_measurements(tmp_path / "m.h5", slices=(5,))
    params = {**SCORE, "device": "cpu"}
    out = tmp_path / "recon.h5"
    reconstruct(meas, "score", tmp_path / "reference.h5", params, model=score_model)

    calls = _counting(monkeypatch, fail_at=1)                           # killed before any part: nothing left
    with pytest.raises(_Interrupt):
        reconstruct(meas, "score", out, params, model=score_model, checkpoint_slices=2)
    assert not out.exists() and not (tmp_path / "recon.h5.partial").exists()
    monkeypatch.undo()
    calls = _counting(monkeypatch, fail_at=2)
    with pytest.raises(_Interrupt):
        reconstruct(meas, "score", out, params, model=score_model, checkpoint_slices=2)
    assert calls == [("vol0", 0, 2), ("vol0", 2, 4)]
    assert not out.exists()
    (key_dir,) = (tmp_path / "recon.h5.partial").iterdir()
    assert [p.name.split(".", 1)[1] for p in key_dir.iterdir()] == ["0-2.h5"]

    monkeypatch.undo()
    calls = _counting(monkeypatch)
    reconstruct(meas, "score", out, params, model=score_model, checkpoint_slices=2)
    assert calls == [("vol0", 2, 4), ("vol0", 4, 5)]                   # the first part was not recomputed
    assert not (tmp_path / "recon.h5.partial").exists()
    got, ref = _cases(out)["vol0"], _cases(tmp_path / "reference.h5")["vol0"]
    for key in ("reconstruction", "std"):
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-5)


def test_parts_of_other_parameters_or_data_are_not_reused(score_model, tmp_path, monkeypatch, one_thread):
    meas = _mri_measurements(tmp_path / "m.h5", slices=(4,))
    params = {**SCORE, "n_steps": 2, "device": "cpu"}
    out = tmp_path / "recon.h5"
    calls = _counting(monkeypatch, fail_at=2)
    with pytest.raises(_Interrupt):
        reconstruct(meas, "score", out, params, model=score_model, checkpoint_slices=2)
    monkeypatch.undo()
    stale = next((tmp_path / "recon.h5.partial").iterdir())
    calls = _counting(monkeypatch)
    reconstruct(meas, "score", out, {**params, "seed": 4}, model=score_model, checkpoint_slices=2)
    assert calls == [("vol0", 0, 2), ("vol0", 2, 4)] and not stale.exists()
    # same parameters, other data: the stored part's input hash does not match
    monkeypatch.undo()
    calls = _counting(monkeypatch, fail_at=2)
    with pytest.raises(_Interrupt):
        reconstruct(meas, "score", out, params, model=score_model, checkpoint_slices=2)
    _mri_measurements(meas, slices=(4,), seed=1)
    monkeypatch.undo()
    calls = _counting(monkeypatch)
    reconstruct(meas, "score", out, params, model=score_model, checkpoint_slices=2)
    assert calls == [("vol0", 0, 2), ("vol0", 2, 4)]


# ------------------------------------------------------------------------------------ CLI
def test_cli_blocks_merge_into_the_one_job_output(tmp_path, capsys, score_model, one_thread):
    from diffrecon.cli import main
    from diffrecon.data.datasets import prepare_dataset

    man = prepare_dataset("b", {"modality": "mri", "source": "demo", "size": 16, "coils": 2, "slices": 5,
                                "volumes": {"test": 1}}, tmp_path / "data", seed=1)
    src = man["splits"]["test"][0]
    common = ["reconstruct", src, "--modality", "mri", "--method", "score", "--model", f"{score_model}.safetensors",
              "--coil-mode", "magnitude", "--steps", "3", "--precision", "float32"]
    assert main([*common, "-o", str(tmp_path / "whole.h5")]) == 0
    for k, spec in enumerate(("0:2", "2:")):
        assert main([*common, "--slices", spec, "--checkpoint-slices", "1", "-o", str(tmp_path / f"b{k}.h5")]) == 0
    assert not list(tmp_path.glob("*.partial"))
    capsys.readouterr()
    assert main(["merge-blocks", str(tmp_path / "merged.h5"), str(tmp_path / "b1.h5"), str(tmp_path / "b0.h5")]) == 0
    with h5py.File(tmp_path / "whole.h5") as a, h5py.File(tmp_path / "merged.h5") as b:
        np.testing.assert_allclose(b["reconstruction"][()], a["reconstruction"][()], rtol=1e-4, atol=1e-5)
        assert b["reconstruction"].shape == (5, 16, 16) and "block" not in b.attrs
        assert json.loads(b.attrs["summary"])["shape"] == [5, 16, 16]
    # bad input: one line, status 2, nothing written
    for argv, named in (([*common, "--slices", "3:1", "-o", str(tmp_path / "x.h5")], "--slices"),
                        (["merge-blocks", str(tmp_path / "x.h5"), str(tmp_path / "b0.h5")], "b0.h5: slices 2-4 missing"),
                        (["merge-blocks", str(tmp_path / "x.h5"), str(tmp_path / "whole.h5")], "whole.h5: not an output")):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0], err
        assert not (tmp_path / "x.h5").exists()


def test_cpu_memory_measurement_writes_nothing_to_the_console(capfd):
    """The profiler's native start/stop lines must not reach the user's console or job logs."""
    from diffrecon.samplers.memory import forward_peak_bytes

    net = torch.nn.Conv2d(1, 4, 3, padding=1)
    x = torch.randn(2, 1, 32, 32)
    assert forward_peak_bytes(lambda: net(x), "cpu") > 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""
