"""Hostile inputs: every wrong data file or checkpoint fails with one line naming the file, and
leaves no output (nor a ``.part`` file) behind.

The table lists (name, builder, exception type, message fragment); a builder makes the bad
file(s) under a temporary folder and returns the call (a stage or loader function) and the
outputs that call would write.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, example
from hypothesis import strategies as st

from diffrecon import io
from diffrecon.errors import CheckpointError, DataFormatError

ROOT = Path(__file__).resolve().parents[2]
MRI_SETTING = "uniform1d-R2-acs0.25-magnitude"
TINY = {"channels": [8, 16], "attention": [False, False], "norm_num_groups": 4, "layers_per_block": 1}
N = 16


# ------------------------------------------------------------------------------------ builders
def _h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def _kspace(slices=2, coils=2, n=N, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(slices, coils, n, n)) + 1j * rng.normal(size=(slices, coils, n, n))).astype(np.complex64)


def _target(slices=2, n=N):
    return np.linspace(0.1, 1.0, slices * n * n, dtype=np.float32).reshape(slices, n, n)


def fastmri_file(tmp, name="vol.h5", **override):
    """A small valid fastMRI multi-coil file; ``override`` replaces datasets (None drops one)."""
    data = {"kspace": _kspace(), "reconstruction_rss": _target()}
    data.update(override)
    return _h5(tmp / name, **{k: v for k, v in data.items() if v is not None})


def _simulate_mri(tmp, path):
    from diffrecon.settings import MRISetting
    from diffrecon.stages.simulate import simulate_mri

    outs = [tmp / "out" / "m.h5", tmp / "out" / "t.h5", tmp / "out" / "mask.json"]
    return (lambda: simulate_mri({"name": "d", "splits": {"test": [str(path)]}}, MRISetting.parse(MRI_SETTING),
                                 *outs)), outs


def mri(**override):
    def build(tmp):
        path = fastmri_file(tmp, **override)
        return (*_simulate_mri(tmp, path), path.name)
    return build


def _volume(slices=2, n=N):
    return np.linspace(0.0, 1.0, slices * n * n, dtype=np.float32).reshape(slices, n, n)


def _simulate_ct(tmp, path):
    from diffrecon.settings import CTSetting
    from diffrecon.stages.simulate import simulate_ct

    outs = [tmp / "out" / "m.h5", tmp / "out" / "t.h5"]
    return (lambda: simulate_ct({"name": "d", "splits": {"test": [str(path)]}}, CTSetting.parse("sv8"), *outs)), outs


def ct(volume, suffix=".h5", key="volume"):
    def build(tmp):
        path = tmp / f"vol{suffix}"
        if suffix == ".npy":
            np.save(path, volume, allow_pickle=not isinstance(volume, np.ndarray) or volume.dtype == object)
        else:
            _h5(path, **{key: volume})
        return (*_simulate_ct(tmp, path), path.name)
    return build


def raw_bytes(name, content: bytes, call):
    def build(tmp):
        path = tmp / name
        path.write_bytes(content)
        fn, outs = call(tmp, path)
        return fn, outs, name
    return build


def sinogram(sino, angles):
    def build(tmp):
        from diffrecon.cli import _sinogram_measurements

        datasets = {"sinogram": sino}
        if angles is not None:
            datasets["angles"] = angles
        path = _h5(tmp / "sino.h5", **datasets)
        out = tmp / "out" / "m.h5"
        return (lambda: _sinogram_measurements(path, out, "linear")), [out], path.name
    return build


def _ct_measurements(path, sino, n=N):
    from diffrecon.physics.ct import CTGeometry

    geom = CTGeometry.sparse_view(n, sino.shape[1])
    with io.CaseWriter(path) as w:
        w.add("vol0", sinogram=sino)
        io.write_ct_measurements_header(w, geom, "d", f"sv{sino.shape[1]}")
    return path


def _mri_measurements(path, kspace, n=N):
    mask = np.zeros((n, n), np.float32)
    mask[:, ::2] = 1
    with io.CaseWriter(path) as w:
        w.add("vol0", kspace=kspace)
        w.finish({"modality": "mri", "dataset": "d", "setting": MRI_SETTING, "split": "test",
                  "coil_mode": "magnitude", "mask": "{}"}, mask=mask)
    return path


def measurements_nan_sinogram(tmp):
    from diffrecon.physics.ct import CTGeometry
    from diffrecon.stages.reconstruct import reconstruct

    det = CTGeometry.sparse_view(N, 8).det_count
    sino = np.ones((2, 8, det), np.float32)
    sino[0, :2] = np.nan
    meas = _ct_measurements(tmp / "meas.h5", sino)
    out = tmp / "out" / "r.h5"
    return (lambda: reconstruct(meas, "fbp", out)), [out], "meas.h5"


def measurements_nan_kspace(tmp):
    from diffrecon.stages.reconstruct import reconstruct

    ksp = _kspace(coils=1)[:, 0]
    ksp[1] = np.nan
    meas = _mri_measurements(tmp / "meas.h5", ksp)
    out = tmp / "out" / "r.h5"
    return (lambda: reconstruct(meas, "zero_filled", out)), [out], "meas.h5"


def measurements_without_attrs(tmp):
    from diffrecon.stages.reconstruct import reconstruct

    meas = _h5(tmp / "meas.h5", junk=np.zeros(3))
    out = tmp / "out" / "r.h5"
    return (lambda: reconstruct(meas, "fbp", out)), [out], "meas.h5"


def evaluation(target, recon):
    def build(tmp):
        from diffrecon.stages.evaluate import evaluate

        t, r = tmp / "target.h5", tmp / "recon.h5"
        with io.CaseWriter(t) as w:
            w.add("vol0", target=target)
            w.finish({"modality": "ct", "dataset": "d", "setting": "sv8"})
        with io.CaseWriter(r) as w:
            w.add("vol0", reconstruction=recon)
            w.finish({"modality": "ct", "method": "fbp"})
        out = tmp / "out" / "metrics.csv"
        return (lambda: evaluate(t, r, out, "d", "sv8", "fbp")), [out], "target.h5" if recon.shape == target.shape else "recon.h5"
    return build


def dataset(files: dict, pattern="*"):
    def build(tmp):
        from diffrecon.data.datasets import prepare_dataset

        src = tmp / "src"
        src.mkdir()
        for name, volume in files.items():
            if name.endswith(".npy"):
                np.save(src / name, volume)
            else:
                _h5(src / name, volume=volume)
        out = tmp / "out"
        cfg = {"modality": "ct", "source": "files", "files": {"test": str(src / pattern)}}
        named = sorted(files)[-1] if files else pattern
        return (lambda: prepare_dataset("d", cfg, out)), [out / "manifest.json"], named
    return build


# --------------------------------------------------------------------------------- checkpoints
def tiny_score(stem, size=N, **meta_override):
    from diffrecon.models.checkpoint import prefixed, save_checkpoint
    from diffrecon.models.recipes import score_network

    torch.manual_seed(0)
    net = score_network({"model": TINY}, size)
    meta = {"method": "score_mri", "model": TINY, "sde": {"sigma_min": 0.01, "sigma_max": 10.0}, "image_size": size,
            **meta_override}
    save_checkpoint(stem, prefixed("ema", net.state_dict()), meta)
    return stem


def tiny_unet(stem, size=N, mask=None):
    from diffrecon.models.checkpoint import prefixed, save_checkpoint

    fastmri_models = pytest.importorskip("fastmri.models")     # the MRI U-Net is fastMRI's
    torch.manual_seed(0)
    model = {"chans": 4, "num_pool_layers": 2}
    net = fastmri_models.Unet(1, 1, **model)
    meta = {"method": "unet", "architecture": "fastmri_unet", "model": model, "image_size": size,
            "mask": mask or {"kind": "uniform1d", "acceleration": 4.0, "acs_fraction": 0.08}}
    save_checkpoint(stem, prefixed("ema", net.state_dict()), meta)
    return stem


def shipped(tmp, name):
    for suffix in (".safetensors", ".json", ".sha256"):
        shutil.copyfile((ROOT / "weights" / name).with_suffix(suffix), (tmp / "prior").with_suffix(suffix))
    return tmp / "prior"


def loader(name):
    from diffrecon.models import loading

    return getattr(loading, name)


def checkpoint(damage, load="load_score_network", source=tiny_score):
    def build(tmp):
        stem = source(tmp / "prior") if callable(source) else shipped(tmp, source)
        damage(stem)
        return (lambda: loader(load)(stem)), [], "prior"
    return build


def _garbage(stem):
    stem.with_suffix(".safetensors").write_bytes(b"\x00\x01garbage" * 10)
    _drop_sums(stem)


def _truncated(stem):
    w = stem.with_suffix(".safetensors")
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    _drop_sums(stem)


def _drop_sums(stem):
    side = stem.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.pop("sha256", None)
    side.write_text(json.dumps(meta))
    stem.with_suffix(".sha256").unlink(missing_ok=True)


def _tampered_sidecar_lost_sha(stem):
    """The exported pair: the sidecar's sha256 removed and the weights changed; the .sha256 stays."""
    from diffrecon.io import sha256_file as sha256

    w = stem.with_suffix(".safetensors")
    stem.with_suffix(".sha256").write_text(f"{sha256(w)}  {w.name}\n")
    side = stem.with_suffix(".json")
    meta = json.loads(side.read_text())
    meta.pop("sha256")
    side.write_text(json.dumps(meta))
    data = bytearray(w.read_bytes())
    data[-1] ^= 0x01
    w.write_bytes(bytes(data))


def _tampered(stem):
    w = stem.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    data[-1] ^= 0x01
    w.write_bytes(bytes(data))


def _sidecar_text(text):
    def damage(stem):
        stem.with_suffix(".json").write_text(text)
    return damage


def _sidecar_edit(**changes):
    def damage(stem):
        side = stem.with_suffix(".json")
        meta = json.loads(side.read_text())
        for k, v in changes.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        side.write_text(json.dumps(meta))
    return damage


def _no_sidecar(stem):
    stem.with_suffix(".json").unlink()


def learned_on_data(method, source, modality="mri"):
    """``reconstruct`` of ``method`` with checkpoint ``source(tmp)`` on valid 16 x 16 measurements."""
    def build(tmp):
        from diffrecon.physics.ct import CTGeometry
        from diffrecon.stages.reconstruct import reconstruct

        stem = source(tmp)
        if modality == "mri":
            meas = _mri_measurements(tmp / "meas.h5", _kspace(coils=1)[:, 0])
        else:
            meas = _ct_measurements(tmp / "meas.h5", np.ones((3, 8, CTGeometry.sparse_view(N, 8).det_count), np.float32))
        out = tmp / "out" / "r.h5"
        return (lambda: reconstruct(meas, method, out, {"device": "cpu"}, model=stem)), [out], "prior"
    return build


# --------------------------------------------------------------------------------------- table
nan_k = _kspace()
nan_k[0, 0, 3, 3] = np.nan
inf_t = _target()
inf_t[1, 2, 2] = np.inf
nan_v = _volume()
nan_v[0, 1, 1] = np.nan
nan_sino = np.ones((2, 8, 23), np.float32)
nan_sino[1] = np.nan

CASES = [
    # fastMRI files → simulate_mri
    ("mri_missing_kspace", mri(kspace=None), DataFormatError, "no 'kspace'"),
    ("mri_real_kspace", mri(kspace=np.abs(_kspace())), DataFormatError, "must be complex"),
    ("mri_kspace_rank2", mri(kspace=_kspace()[0, 0], reconstruction_rss=None), DataFormatError, "slices, [coils,] H, W"),
    ("mri_kspace_rank5", mri(kspace=_kspace()[None]), DataFormatError, "slices, [coils,] H, W"),
    ("mri_nan_kspace", mri(kspace=nan_k), DataFormatError, "NaN or infinite"),
    ("mri_inf_target", mri(reconstruction_rss=inf_t), DataFormatError, "NaN or infinite"),
    ("mri_zero_slices", mri(kspace=np.zeros((0, 2, N, N), np.complex64), reconstruction_rss=None), DataFormatError, "empty"),
    ("mri_target_larger", mri(reconstruction_rss=_target(n=2 * N)), DataFormatError, "larger than k-space"),
    ("mri_target_slices", mri(reconstruction_rss=_target(slices=3)), DataFormatError, "does not match kspace"),
    ("mri_mask_length", mri(mask=np.ones(N - 3, np.float32)), DataFormatError, "'mask' has"),
    ("mri_mask_values", mri(mask=np.full(N, 0.5, np.float32)), DataFormatError, "0/1"),
    ("mri_zero_kspace", mri(kspace=np.zeros((2, 2, N, N), np.complex64)), DataFormatError, "all zero"),
    ("mri_zero_target", mri(reconstruction_rss=np.zeros((2, N, N), np.float32)), DataFormatError, "no positive value"),
    ("mri_complex_target", mri(reconstruction_rss=_target().astype(np.complex64)), DataFormatError, "real magnitude"),
    ("mri_not_hdf5", raw_bytes("vol.h5", b"not an hdf5 file\n" * 20, _simulate_mri), DataFormatError, "not an HDF5"),
    # CT volumes (.h5 / .npy) → simulate_ct
    ("ct_h5_rank2", ct(_volume()[0]), DataFormatError, "(slices, H, W)"),
    ("ct_h5_nonsquare", ct(_volume()[:, :, :-2]), DataFormatError, "square"),
    ("ct_h5_complex", ct(_volume().astype(np.complex64)), DataFormatError, "real"),
    ("ct_h5_nan", ct(nan_v), DataFormatError, "NaN or infinite"),
    ("ct_h5_hu", ct(_volume() * 4095 - 1024), DataFormatError, "HU or raw counts"),
    ("ct_h5_uint8", ct((_volume() * 255).astype(np.uint8)), DataFormatError, "8-bit"),
    ("ct_h5_constant", ct(np.zeros((2, N, N), np.float32)), DataFormatError, "constant"),
    ("ct_h5_zero_slices", ct(np.zeros((0, N, N), np.float32)), DataFormatError, "empty"),
    ("ct_h5_wrong_key", ct(_volume(), key="image"), DataFormatError, "no 'volume'"),
    ("ct_h5_bool", ct(_volume() > 0.5), DataFormatError, "numeric"),
    ("ct_h5_garbage", raw_bytes("vol.h5", b"\x89HDF\r\n\x1a\n" + b"\xff" * 300, _simulate_ct), DataFormatError, "HDF5"),
    ("ct_npy_rank4", ct(_volume()[None], ".npy"), DataFormatError, "(slices, H, W)"),
    ("ct_npy_nonsquare", ct(_volume()[:, :-1], ".npy"), DataFormatError, "square"),
    ("ct_npy_complex", ct(_volume().astype(np.complex128), ".npy"), DataFormatError, "real"),
    ("ct_npy_nan", ct(nan_v, ".npy"), DataFormatError, "NaN or infinite"),
    ("ct_npy_hu", ct(_volume() * 3000 - 1000, ".npy"), DataFormatError, "HU or raw counts"),
    ("ct_npy_uint8", ct((_volume() * 255).astype(np.uint8), ".npy"), DataFormatError, "8-bit"),
    ("ct_npy_counts", ct((_volume() * 4095).astype(np.uint16), ".npy"), DataFormatError, "raw counts"),
    ("ct_npy_constant", ct(np.full((2, N, N), 0.3, np.float32), ".npy"), DataFormatError, "constant"),
    ("ct_npy_object", ct(np.array([{"a": 1}], dtype=object), ".npy"), DataFormatError, "unreadable"),
    ("ct_npy_garbage", raw_bytes("vol.npy", b"\x93NUMPY\x01\x00garbage" * 5, _simulate_ct), DataFormatError, "vol.npy"),
    # sinograms → measurements for the command line
    ("sino_rank2", sinogram(np.ones((8, 23), np.float32), np.linspace(0, 3, 8)), DataFormatError, "(slices, views, det)"),
    ("sino_angles_mismatch", sinogram(np.ones((2, 8, 23), np.float32), np.linspace(0, 3, 7)), DataFormatError, "views = len(angles)"),
    ("sino_nan", sinogram(nan_sino, np.linspace(0, 3, 8)), DataFormatError, "NaN or infinite"),
    ("sino_nan_angles", sinogram(np.ones((2, 8, 23), np.float32), np.full(8, np.nan)), DataFormatError, "'angles'"),
    ("sino_no_angles", sinogram(np.ones((2, 8, 23), np.float32), None), DataFormatError, "no 'angles'"),
    ("sino_complex", sinogram(np.ones((2, 8, 23), np.complex64), np.linspace(0, 3, 8)), DataFormatError, "real numbers"),
    # measurements → reconstruct
    ("meas_nan_sinogram", measurements_nan_sinogram, DataFormatError, "NaN or infinite"),
    ("meas_nan_kspace", measurements_nan_kspace, DataFormatError, "NaN or infinite"),
    ("meas_not_measurements", measurements_without_attrs, DataFormatError, "not a measurements file"),
    # targets → evaluate
    ("eval_nan_target", evaluation(np.full((4, N, N), np.nan, np.float32), _volume(4)), DataFormatError, "NaN or infinite"),
    ("eval_constant_target", evaluation(np.zeros((4, N, N), np.float32), _volume(4)), DataFormatError, "constant"),
    ("eval_shape_mismatch", evaluation(_volume(4), _volume(3)), DataFormatError, "differs from the target"),
    # datasets → prepare_dataset
    ("ds_mixed_sizes", dataset({"a.h5": _volume(), "b.h5": _volume(n=2 * N)}), DataFormatError, "differs from"),
    ("ds_duplicate_stems", dataset({"vol.h5": _volume(), "vol.npy": _volume()}), DataFormatError, "same case name"),
    ("ds_glob_nothing", dataset({}, "nothing_*.h5"), FileNotFoundError, "matches no file"),
    ("ds_unreadable", dataset({"a.h5": _volume(), "b.npy": None}), DataFormatError, "b.npy"),
    # checkpoints → loaders
    ("ckpt_garbage", checkpoint(_garbage), CheckpointError, "not a readable safetensors"),
    ("ckpt_truncated", checkpoint(_truncated), CheckpointError, "not a readable safetensors"),
    ("ckpt_missing_sidecar", checkpoint(_no_sidecar), CheckpointError, "sidecar not found"),
    ("ckpt_bad_json", checkpoint(_sidecar_text("{not json")), CheckpointError, "not valid JSON"),
    ("ckpt_json_list", checkpoint(_sidecar_text("[1, 2]")), CheckpointError, "JSON object"),
    ("ckpt_sha_mismatch", checkpoint(_tampered), CheckpointError, "does not match"),
    ("ckpt_sidecar_lost_sha", checkpoint(_tampered_sidecar_lost_sha), CheckpointError, "prior.sha256"),
    ("ckpt_sidecar_lacks_size", checkpoint(_sidecar_edit(image_size=None, sha256=None)), CheckpointError, "image_size"),
    ("ckpt_weights_do_not_fit", checkpoint(_sidecar_edit(image_size=N, model={**TINY, "channels": [4, 8]}, sha256=None)),
     CheckpointError, "do not fit"),
    ("ckpt_ct_prior_to_mri", checkpoint(lambda s: None, source="ct_patch_demo_thorax"), CheckpointError, "not a score-MRI prior"),
    ("ckpt_mri_prior_to_ct", checkpoint(lambda s: None, "load_ct_prior", "score_mri_demo_brain"), CheckpointError, "not a CT prior"),
    ("ckpt_prior_to_unet", checkpoint(lambda s: None, "load_unet", "ct_slice_demo_thorax"), CheckpointError, "not a U-Net"),
    # checkpoints trained for another problem → reconstruct
    ("ckpt_score_size", learned_on_data("score", lambda tmp: tiny_score(tmp / "prior", size=2 * N)), CheckpointError,
     "trained on 32 x 32"),
    ("ckpt_blend_size", learned_on_data("diffusion_blend", lambda tmp: shipped(tmp, "ct_patch_demo_thorax"), "ct"),
     CheckpointError, "trained on 64 x 64"),
    ("ckpt_dds_kind", learned_on_data("dds", lambda tmp: shipped(tmp, "ct_patch_demo_thorax"), "ct"),
     CheckpointError, "'slice' prior"),
    ("ckpt_unet_family", learned_on_data("unet", lambda tmp: tiny_unet(tmp / "prior")), CheckpointError,
     "trained for mask uniform1d R4.0"),
    ("ckpt_unet_size", learned_on_data("unet", lambda tmp: tiny_unet(tmp / "prior", size=2 * N)), CheckpointError,
     "trained on 32 x 32"),
    ("ckpt_fbp_unet_for_mri", learned_on_data("unet", lambda tmp: _fbp_unet(tmp)), CheckpointError, "FBP-U-Net"),
]


def _fbp_unet(tmp):
    stem = tiny_unet(tmp / "prior")
    _sidecar_edit(kind="fbp_unet", setting="sv8", sha256=None)(stem)
    return stem


def _leftovers(outs):
    found = []
    for out in outs:
        out = Path(out)
        found += [p for p in (out, out.with_name(out.name + ".part")) if p.exists()]
        if out.parent.exists():
            found += list(out.parent.glob("*.part"))
    return found


def assert_one_line_error(info, fragment, named):
    msg = str(info.value)
    assert "\n" not in msg.strip(), msg
    assert fragment in msg, msg
    assert named in msg, msg


def test_the_table_is_large_and_names_are_unique():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("name, build, error, fragment", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_fails_in_one_line_naming_the_file(tmp_path, one_thread, name, build, error, fragment):
    call, outs, named = build(tmp_path)
    with pytest.raises(error) as info:
        call()
    assert_one_line_error(info, fragment, named)
    assert _leftovers(outs) == []


def test_allow_size_mismatch_lets_an_expert_run_a_convolutional_prior(tmp_path, one_thread):
    from diffrecon.methods.runner import Problem, check_trained_for

    problem = Problem("mri", MRI_SETTING, mask=np.ones((N, N), np.float32), coil_mode="magnitude")
    with pytest.raises(CheckpointError, match="trained on 32 x 32 images, the data are 16 x 16"):
        check_trained_for("prior", {"image_size": 32}, problem, {})
    check_trained_for("prior", {"image_size": 32}, problem, {"allow_size_mismatch": True})
    check_trained_for("prior", {"image_size": N}, problem, {})


def test_a_non_finite_reconstruction_is_an_error_and_nothing_is_written(tmp_path, monkeypatch):
    from diffrecon import methods
    from diffrecon.methods.runner import FunctionRunner
    from diffrecon.physics.ct import CTGeometry
    from diffrecon.stages.reconstruct import reconstruct

    meas = _ct_measurements(tmp_path / "meas.h5", np.ones((2, 8, CTGeometry.sparse_view(N, 8).det_count), np.float32))
    monkeypatch.setattr(methods, "build_runner",
                        lambda *a, **k: FunctionRunner(lambda d: np.full((len(d), N, N), np.nan, np.float32)))
    out = tmp_path / "out" / "r.h5"
    with pytest.raises(ValueError) as info:
        reconstruct(meas, "fbp", out)
    assert_one_line_error(info, "NaN or infinite", "meas.h5")
    assert _leftovers([out]) == []


def test_install_weights_writes_the_checksum_into_a_sidecar_without_one(tmp_path):
    from diffrecon.io import sha256_file as sha256
    from diffrecon.models.checkpoint import install_weights, load_checkpoint

    stem = tiny_score(tmp_path / "ship" / "prior")
    w = stem.with_suffix(".safetensors")
    stem.with_suffix(".sha256").write_text(f"{sha256(w)}  {w.name}\n")
    _sidecar_edit(sha256=None)(stem)
    out = install_weights(w, tmp_path / "installed" / "model")
    assert json.loads(out.with_suffix(".json").read_text())["sha256"] == sha256(out)
    data = bytearray(out.read_bytes())
    data[-1] ^= 0x01
    out.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(out.with_suffix(""))


# ---------------------------------------------------------------------------- property-based
def _corrupt(path: Path, pos: float, value: int) -> None:
    data = bytearray(path.read_bytes())
    i = min(int(pos * len(data)), len(data) - 1)
    data[i] = value if data[i] != value else (value + 1) % 256
    path.write_bytes(bytes(data))


def _valid(kind, tmp):
    if kind == "fastmri":
        path = fastmri_file(tmp)
        return path, *_simulate_mri(tmp, path)
    if kind in ("ct_h5", "ct_npy"):
        path = ct(_volume())(tmp)[0] and (tmp / ("vol.h5" if kind == "ct_h5" else "vol.npy"))
        if kind == "ct_npy":
            np.save(path, _volume())
        return path, *_simulate_ct(tmp, path)
    stem = tiny_score(tmp / "prior")
    return stem.with_suffix(".safetensors"), (lambda: loader("load_score_network")(stem)), []


@pytest.mark.parametrize("kind", ["fastmri", "ct_h5", "ct_npy", "safetensors"])
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.floats(0, 1, allow_nan=False), value=st.integers(0, 255))
@example(pos=0.03125, value=35).via("a '#' in a .npy header: numpy's header parser raised SyntaxError")
@example(pos=0.0, value=0).via("the magic bytes")
@example(pos=0.999, value=255).via("the last byte")
def test_single_byte_corruption_is_a_one_line_error_or_harmless(tmp_path_factory, kind, pos, value):
    tmp = tmp_path_factory.mktemp(kind)
    path, call, outs = _valid(kind, tmp)
    _corrupt(path, pos, value)
    try:
        call()
    except (DataFormatError, FileNotFoundError) as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        assert path.name in str(exc) or path.stem in str(exc), str(exc)
        assert _leftovers(outs) == []
    else:
        assert not any(p.name.endswith(".part") for o in outs for p in Path(o).parent.glob("*"))
