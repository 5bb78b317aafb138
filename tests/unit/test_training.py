"""Tests for diffrecon.models: the training loop, checkpoints, shipped weights, the score-MRI recipe
and its loader.

Expected values come from the definitions (the trivial predictor's loss 0.5 * H * W), from independent
constructions (a second uninterrupted run, a network rebuilt by hand, hashlib) — never from a
run of the code under test. Networks are tiny and runs are a few steps; torch uses one thread
so results are bit-reproducible across processes on CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffrecon.diffusion.sde import VESDE, ve_dsm_loss
from diffrecon.models import checkpoint as ckpt
from diffrecon.models.checkpoint import (
    install_weights,
    load_checkpoint,
    save_checkpoint,
    unprefixed,
)
from diffrecon.io import sha256_file as sha256
from diffrecon.models.networks import ScoreNetwork, UNetConfig
from diffrecon.models.training import TrainConfig, train

ROOT = Path(__file__).resolve().parents[2]
NET = {"sample_size": 16, "channels": [8, 16], "attention": [False, True], "norm_num_groups": 4,
       "layers_per_block": 1}
SDE = (0.01, 5.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(init_seed: int = 0) -> ScoreNetwork:
    torch.manual_seed(init_seed)
    return ScoreNetwork(UNetConfig.from_dict(NET))


def blobs(n: int = 32, size: int = 16, seed: int = 0) -> torch.Tensor:
    """n smooth Gaussian blobs in [0, 1], (n, 1, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 1.2 - 0.6
    r = torch.rand(n, generator=g) * 0.3 + 0.2
    d2 = (xx - c[:, 0, None, None]) ** 2 + (yy - c[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * r[:, None, None] ** 2))[:, None].float()


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), f"tensor {k} differs"


# -------------------------------------------------------------------------------- training
def test_training_reduces_the_loss(tmp_path):
    data = blobs(32)
    cfg = TrainConfig(steps=150, batch_size=8, lr=1e-3, warmup=10, grad_clip=1.0, ema_decay=0.99,
                      checkpoint_every=25, seed=0)
    meta = train(tiny_net(), data, ve_dsm_loss(VESDE(*SDE)), cfg, tmp_path / "ck", progress=False)
    assert meta["step"] == 150
    steps = [s for s, _ in meta["loss_history"]]
    assert steps == [25, 50, 75, 100, 125, 150]
    first, last = meta["loss_history"][0][1], meta["loss_history"][-1][1]
    assert last < 0.6 * first
    trivial = 0.5 * 16 * 16                     # loss of the score-0 predictor
    assert last < 0.5 * trivial

    # the checkpointed weights are the trained ones: lower loss than a fresh net on the same noise
    tensors, _ = load_checkpoint(tmp_path / "ck")
    trained = tiny_net()
    trained.load_state_dict(unprefixed("ema", tensors))
    loss = ve_dsm_loss(VESDE(*SDE))
    with torch.no_grad():
        fresh_loss = loss(tiny_net(), data, torch.Generator().manual_seed(123)).item()
        trained_loss = loss(trained, data, torch.Generator().manual_seed(123)).item()
    assert trained_loss < 0.5 * fresh_loss


HELPER = Path(__file__).with_name("train_helper.py")


def _read_step(sidecar: Path) -> int:
    try:
        return int(json.loads(sidecar.read_text())["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def run_until_killed(cmd: list, sidecar: Path, k: int, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group, wait for a checkpoint of step >= k at ``sidecar``,
    then SIGKILL the whole group (workers and all processes)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)
    try:
        deadline = time.monotonic() + 90
        while _read_step(sidecar) < k:
            if proc.poll() is not None:
                pytest.fail(f"training subprocess ended early ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail("training subprocess reached no checkpoint in 90 s")
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc


def ct_store(root: Path) -> Path:
    """A tiny CT store (16 x 16 slices); returns its manifest file."""
    from diffrecon.data.datasets import prepare_dataset

    prepare_dataset("demo_thorax", {"modality": "ct", "source": "demo", "size": 16, "slices": 9,
                                    "volumes": {"train": 2}}, root, seed=0)
    return root / "manifest.json"


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_resume_after_sigkill_is_bit_identical(tmp_path, loader):
    from diffrecon.data.streaming import CTSlices

    cfg = dict(steps=12, batch_size=4, lr=1e-3, warmup=3, grad_clip=1.0, ema_decay=0.9, checkpoint_every=2, seed=3,
               loader=loader, workers=2 if loader == "stream" else 0)
    if loader == "memory":
        data = blobs(16)
        torch.save(data, tmp_path / "data.pt")
        source = {"data": str(tmp_path / "data.pt")}
    else:
        source = {"manifest": str(ct_store(tmp_path / "store"))}
        data = CTSlices(json.loads(Path(source["manifest"]).read_text()))
    killed = tmp_path / "killed" / "ck"
    args = {**source, "init_seed": 0, "net": NET, "sde": list(SDE), "cfg": cfg, "stem": str(killed), "sleep": 0.25}
    k = 4
    proc = run_until_killed([sys.executable, str(HELPER), json.dumps(args)], killed.with_suffix(".json"), k)
    assert proc.returncode == -signal.SIGKILL

    # what the kill left behind is a complete, consistent checkpoint
    tensors, meta = load_checkpoint(killed, expected_sha256=json.loads(killed.with_suffix(".json").read_text())["sha256"])
    assert k <= meta["step"] < cfg["steps"]
    assert meta["step"] % cfg["checkpoint_every"] == 0
    assert any(key.startswith("model.") for key in tensors) and any(key.startswith("ema.") for key in tensors)
    assert any(key.startswith("optim.") for key in tensors)

    loss = ve_dsm_loss(VESDE(*SDE))
    resumed = train(tiny_net(init_seed=99), data, loss, TrainConfig(**cfg), killed, progress=False)
    assert resumed["step"] == cfg["steps"]
    # the sidecar's training time counts the killed part too (the helper sleeps 0.25 s a step)
    assert meta["seconds"] >= 0.5 and resumed["seconds"] > meta["seconds"]
    assert not list(killed.parent.glob("*.part")), "temporary files left after the resumed run"

    fresh = tmp_path / "fresh" / "ck"
    straight = train(tiny_net(init_seed=0), data, loss, TrainConfig(**cfg), fresh, progress=False)
    assert straight["step"] == cfg["steps"]
    assert resumed["config_hash"] == straight["config_hash"]

    a, _ = load_checkpoint(killed)
    b, _ = load_checkpoint(fresh)
    assert {k_.split(".")[0] for k_ in a} == {"model", "ema", "optim"}
    assert_same_tensors(a, b)


def test_stream_and_memory_loaders_reach_the_same_weights(tmp_path):
    """The recipes with loader stream (main process or workers) and memory: same data hash, same
    weights bit for bit (the same batches and noise); a checkpoint resumes across loaders."""
    from diffrecon.data.datasets import load_manifest
    from diffrecon.models import recipes

    manifest = load_manifest(ct_store(tmp_path / "store"))
    tiny = {"model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1},
            "spacings": [1, 3], "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup": 2, "checkpoint_every": 2,
                                          "seed": 0, "precision": "float32"}}
    runs = {}
    for name, extra in (("memory", {}), ("stream", {"loader": "stream"}), ("workers", {"loader": "stream", "workers": 2})):
        cfg = {**tiny, "train": {**tiny["train"], **extra}}
        runs[name] = recipes.train_ct_prior(manifest, cfg, tmp_path / name / "ck", "patch", device="cpu", progress=False)
    assert runs["memory"]["data_hash"] == runs["stream"]["data_hash"] == runs["workers"]["data_hash"]
    assert runs["memory"]["config_hash"] == runs["stream"]["config_hash"]
    for name in ("stream", "workers"):
        assert_same_tensors(load_checkpoint(tmp_path / "memory" / "ck")[0], load_checkpoint(tmp_path / name / "ck")[0])
    # a memory-loader checkpoint continues with the stream loader (a longer run)
    longer = {**tiny, "train": {**tiny["train"], "steps": 6, "loader": "stream"}}
    grown = recipes.train_ct_prior(manifest, longer, tmp_path / "memory" / "ck", "patch", device="cpu", progress=False)
    straight = recipes.train_ct_prior(manifest, {**longer, "train": {**longer["train"], "loader": "memory"}},
                                      tmp_path / "straight" / "ck", "patch", device="cpu", progress=False)
    assert grown["step"] == straight["step"] == 6
    assert_same_tensors(load_checkpoint(tmp_path / "memory" / "ck")[0], load_checkpoint(tmp_path / "straight" / "ck")[0])


def test_kill_between_the_two_renames_is_detected_or_harmless(tmp_path, monkeypatch):
    data = blobs(8)
    cfg = TrainConfig(steps=6, batch_size=4, lr=1e-3, warmup=2, checkpoint_every=2, seed=0)
    loss = ve_dsm_loss(VESDE(*SDE))
    train(tiny_net(), data, loss, cfg, tmp_path / "ref" / "ck", progress=False)

    class Killed(BaseException):
        pass

    real_replace = os.replace
    sidecars = []

    def replace(src, dst):
        if str(dst).endswith("ck.json"):
            sidecars.append(dst)
            if len(sidecars) == 2:            # the step-4 checkpoint: weights renamed, sidecar not
                raise Killed
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(Killed):
        train(tiny_net(), data, loss, cfg, tmp_path / "run" / "ck", progress=False)
    monkeypatch.undo()

    try:
        train(tiny_net(), data, loss, cfg, tmp_path / "run" / "ck", progress=False)
    except ValueError:
        return                                # refusing the inconsistent pair is fine
    a, _ = load_checkpoint(tmp_path / "run" / "ck")
    b, _ = load_checkpoint(tmp_path / "ref" / "ck")
    assert_same_tensors(a, b)


def test_resume_with_another_config_raises(tmp_path):
    data = blobs(8)
    loss = ve_dsm_loss(VESDE(*SDE))
    cfg = dict(steps=2, batch_size=2, lr=1e-3, warmup=1, checkpoint_every=1, seed=0)
    first = train(tiny_net(), data, loss, TrainConfig(**cfg), tmp_path / "ck", progress=False)
    weights = (tmp_path / "ck.safetensors").read_bytes()
    # the same config resumes (nothing left to do) ...
    again = train(tiny_net(), data, loss, TrainConfig(**cfg), tmp_path / "ck", progress=False)
    assert again["step"] == 2 and again["config_hash"] == first["config_hash"]
    # ... another one does not, and leaves the checkpoint alone
    for change in ({"lr": 2e-3}, {"batch_size": 4}, {"warmup": 2}, {"ema_decay": 0.5}, {"seed": 1}):
        with pytest.raises(ValueError, match="another config"):
            train(tiny_net(), data, loss, TrainConfig(**{**cfg, **change}), tmp_path / "ck", progress=False)
    with pytest.raises(ValueError, match="another config"):
        train(tiny_net(), data, loss, TrainConfig(**cfg), tmp_path / "ck", meta={"data_hash": "other"}, progress=False)
    assert (tmp_path / "ck.safetensors").read_bytes() == weights

    # documented exception: a larger step budget (and other checkpoint spacing) continues the run,
    # reaching what an uninterrupted run with that budget reaches
    longer = {**cfg, "steps": 4, "checkpoint_every": 2}
    grown = train(tiny_net(), data, loss, TrainConfig(**longer), tmp_path / "ck", progress=False)
    straight = train(tiny_net(), data, loss, TrainConfig(**longer), tmp_path / "straight", progress=False)
    assert grown["step"] == straight["step"] == 4
    assert_same_tensors(load_checkpoint(tmp_path / "ck")[0], load_checkpoint(tmp_path / "straight")[0])


# ------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_preserves_tensors_and_sidecar(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {
        "model.w": torch.randn(4, 3, generator=g),
        "model.t": torch.randn(3, 4, generator=g).t(),          # non-contiguous
        "ema.w": torch.randn(4, 3, generator=g, dtype=torch.float64),
        "optim.0.step": torch.tensor(17.0),                      # 0-d, as Adam's step
        "optim.0.idx": torch.arange(5),
        "half": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "special": torch.tensor([float("inf"), -0.0, float("nan"), 1e-45]),
    }
    meta = {"step": 17, "config_hash": "abc123", "data_hash": "def456", "git_commit": "0" * 40,
            "versions": {"torch": torch.__version__}, "loss_history": [[1, 2.5]]}
    weights = save_checkpoint(tmp_path / "sub" / "ck", tensors, meta)
    assert weights == tmp_path / "sub" / "ck.safetensors"
    assert not list((tmp_path / "sub").glob("*.part"))

    loaded, sidecar = load_checkpoint(tmp_path / "sub" / "ck")
    assert loaded.keys() == tensors.keys()
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        assert torch.equal(loaded[k], v) or k == "special", k
    # bitwise for inf, -0.0, NaN and a subnormal
    assert torch.equal(loaded["special"].view(torch.int32), tensors["special"].view(torch.int32))
    for k, v in meta.items():
        assert sidecar[k] == v
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert sidecar["sha256"] == digest == sha256(weights)

    # the path of the weights file works as well as the stem; a right checksum passes
    again, _ = load_checkpoint(weights, expected_sha256=digest)
    assert torch.equal(again["model.w"], tensors["model.w"])
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "sub" / "ck", expected_sha256=wrong)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing")


def _git_head() -> str | None:
    if not (ROOT / ".git").exists():
        return None
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or None


# ---------------------------------------------------------------------------------- recipes
TINY_MRI = {"modality": "mri", "source": "demo", "size": 16, "coils": 8, "slices": 2,
            "volumes": {"train": 2, "test": 1}}
SCORE_CFG = {"dataset": "demo_brain",
             "model": {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1},
             "sde": {"sigma_min": 0.01, "sigma_max": 10.0},
             "train": {"steps": 4, "batch_size": 2, "lr": 1e-3, "warmup": 2, "grad_clip": 1.0, "ema_decay": 0.9,
                       "checkpoint_every": 2, "seed": 0}}


def test_load_score_network_rebuilds_the_trained_ema_network(tmp_path):
    import diffusers
    import numpy

    from diffrecon.data.datasets import prepare_dataset
    from diffrecon.data.streaming import MagnitudeSlices
    from diffrecon.data.training_sets import magnitude_slices
    from diffrecon.models import loading, recipes

    manifest = prepare_dataset("demo_brain", TINY_MRI, tmp_path / "data", seed=0)
    stem = tmp_path / "models" / "model"
    recipes.train_score_mri(manifest, SCORE_CFG, stem, device="cpu", progress=False)

    # sidecar: provenance and a checksum of the file next to it
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["step"] == 4 and meta["loss_history"][-1][0] == 4
    assert isinstance(meta["config_hash"], str) and meta["config_hash"]
    slices = magnitude_slices(manifest, "train")
    assert meta["n_train_slices"] == len(slices) == 4 and meta["image_size"] == 16
    assert meta["data_hash"] == MagnitudeSlices(manifest).data_hash()     # files' contents, not the tensor
    assert meta["sha256"] == hashlib.sha256(stem.with_suffix(".safetensors").read_bytes()).hexdigest()
    head = _git_head()
    assert meta["git_commit"] == (head if head else "unknown")
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["diffusers"] == diffusers.__version__
    assert meta["versions"]["numpy"] == numpy.__version__

    # the EMA network, rebuilt by hand from the raw tensors
    tensors, _ = load_checkpoint(stem)
    by_hand = ScoreNetwork(UNetConfig(sample_size=16, channels=(8, 16), attention=(False, True), norm_num_groups=4,
                                      layers_per_block=1)).eval()
    by_hand.load_state_dict(unprefixed("ema", tensors))

    net, sde, loaded_meta = loading.load_score_network(stem, expected_sha256=meta["sha256"])
    assert sde == VESDE(0.01, 10.0) and loaded_meta["step"] == 4
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    s = torch.tensor([0.02, 4.0])
    with torch.no_grad():
        assert torch.equal(net(x, s), by_hand(x, s))
        raw, _, _ = loading.load_score_network(stem, use_ema=False)
        by_hand.load_state_dict(unprefixed("model", tensors))
        assert torch.equal(raw(x, s), by_hand(x, s))
        assert not torch.equal(raw(x, s), net(x, s))          # EMA and raw weights differ after 4 steps
    with pytest.raises(ValueError):
        loading.load_score_network(stem, expected_sha256="0" * 64)


# --------------------------------------------------------------------------- install_weights
def _shipped(tmp_path, good_sum: bool = True) -> Path:
    ship = tmp_path / "ship"
    weights = save_checkpoint(ship / "score", {"ema.w": torch.arange(6.0).reshape(2, 3)}, {"step": 3})
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if not good_sum:
        digest = hashlib.sha256(b"something else").hexdigest()
    (ship / "score.sha256").write_text(f"{digest}  score.safetensors\n")
    return weights


def _left_at(dest: Path) -> list:
    return sorted(p.name for p in dest.rglob("*")) if dest.exists() else []


def test_install_weights_copies_weights_and_sidecar(tmp_path):
    weights = _shipped(tmp_path)
    out = install_weights(weights, tmp_path / "results" / "models" / "model")
    assert out == tmp_path / "results" / "models" / "model.safetensors"
    assert out.read_bytes() == weights.read_bytes()
    assert out.with_suffix(".json").read_bytes() == weights.with_suffix(".json").read_bytes()
    assert _left_at(tmp_path / "results" / "models") == ["model.json", "model.safetensors"]
    tensors, _ = load_checkpoint(out.with_suffix(""))
    assert torch.equal(tensors["ema.w"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("breakage, error, names", [
    ("wrong_sum", ValueError, "score.safetensors"),
    ("no_sum", FileNotFoundError, "score.sha256"),
    ("no_weights", FileNotFoundError, "score.safetensors"),
    ("no_sidecar", FileNotFoundError, "score.json"),
])
def test_install_weights_errors_name_the_file_and_leave_nothing(tmp_path, breakage, error, names):
    weights = _shipped(tmp_path, good_sum=breakage != "wrong_sum")
    if breakage == "no_sum":
        weights.with_suffix(".sha256").unlink()
    elif breakage == "no_weights":
        weights.unlink()
    elif breakage == "no_sidecar":
        weights.with_suffix(".json").unlink()
    dest = tmp_path / "results"
    with pytest.raises(error) as info:
        install_weights(weights, dest / "models" / "model")
    assert names in str(info.value)
    assert [p for p in _left_at(dest) if "." in p] == []         # no (partial) files, at most empty folders


def _shipped_baseline(tmp_path) -> Path:
    ship = tmp_path / "ship"
    meta = {"step": 3, "method": "unet", "dataset": "demo_brain",
            "mask": {"kind": "gaussian1d", "acceleration": 4.0, "acs_fraction": 0.12, "seed": 0}}
    weights = save_checkpoint(ship / "unet", {"ema.w": torch.ones(2)}, meta)
    (ship / "unet.sha256").write_text(f"{hashlib.sha256(weights.read_bytes()).hexdigest()}  unet.safetensors\n")
    return weights


@pytest.mark.parametrize("expect, wrong", [
    ({"dataset": "fastmri_knee", "mask_family": "gaussian1d-R4-acs0.12"}, "dataset"),
    ({"dataset": "demo_brain", "mask_family": "gaussian1d-R8-acs0.08"}, "mask_family"),
])
def test_install_weights_refuses_a_baseline_trained_for_another_family(tmp_path, expect, wrong):
    """A supervised baseline's shipped weights install only for the dataset and mask family its
    sidecar records: otherwise one line naming the sidecar and both values, and nothing written."""
    from diffrecon.errors import CheckpointError

    weights = _shipped_baseline(tmp_path)
    out = install_weights(weights, tmp_path / "ok" / "model", method="unet",
                          expect={"dataset": "demo_brain", "mask_family": "gaussian1d-R4-acs0.12"})
    assert out.read_bytes() == weights.read_bytes()
    with pytest.raises(CheckpointError) as info:
        install_weights(weights, tmp_path / "results" / "model", method="unet", expect=expect)
    msg = str(info.value)
    assert "\n" not in msg and "unet.json" in msg and wrong in msg and repr(expect[wrong]) in msg
    assert _left_at(tmp_path / "results") == []
    with pytest.raises(CheckpointError, match="'unet' prior"):
        install_weights(weights, tmp_path / "results" / "model", method="fbp_unet")


def test_install_weights_empty_checksum_file_names_it(tmp_path):
    weights = _shipped(tmp_path)
    weights.with_suffix(".sha256").write_text("")
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        install_weights(weights, tmp_path / "results" / "model")
    assert "score.sha256" in str(info.value)
    assert _left_at(tmp_path / "results") == []


def test_publish_checkpoint_copies_a_verified_pair(tmp_path):
    """The training rules train into a side checkpoint and publish a copy as the rule output."""
    from diffrecon.models.checkpoint import publish_checkpoint

    save_checkpoint(tmp_path / "checkpoint", {"w": torch.arange(4.0)}, {"step": 7})
    out = publish_checkpoint(tmp_path / "checkpoint", tmp_path / "model" / "model")
    tensors, meta = load_checkpoint(out.with_suffix(""))
    assert torch.equal(tensors["w"], torch.arange(4.0)) and meta["step"] == 7
    assert (tmp_path / "checkpoint.safetensors").is_file()          # the resumable one stays
    assert not list((tmp_path / "model").glob("*.part"))


# --------------------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("name, family", [("unet", "gaussian1d-R4-acs0.12"), ("varnet", "gaussian1d-R4-acs0.12")])
def test_shipped_mri_baselines_load_for_the_family_they_are_shipped_for(name, family):
    """The shipped U-Net / E2E-VarNet: checksum, the family of config.yaml's map, finite EMA weights."""
    import yaml

    from diffrecon.io import sidecar_field
    from diffrecon.models.loading import load_unet, load_varnet

    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())["mri"][name]["weights"]
    stem = (ROOT / shipped[family]).with_suffix("")
    digest = stem.with_suffix(".sha256").read_text().split()[0]
    net, meta = (load_unet if name == "unet" else load_varnet)(stem, expected_sha256=digest)
    assert sidecar_field(meta, "mask_family") == family and meta["dataset"] == "demo_brain"
    assert meta["step"] == meta["train"]["steps"] and not net.training
    assert all(torch.isfinite(p).all() for p in net.parameters())


@pytest.mark.parametrize("name", ["score_mri_demo_brain", "ct_patch_demo_thorax", "ct_slice_demo_thorax",
                                  "ct_score_demo_thorax", "fbp_unet_demo_thorax_sv8"])
def test_shipped_weights_load_with_their_checksum(name):
    from diffrecon.diffusion.vp import VPSchedule
    from diffrecon.models.loading import load_ct_prior, load_score_network
    from diffrecon.models.networks import NoiseNetwork

    stem = ROOT / "weights" / name
    digest = stem.with_suffix(".sha256").read_text().split()[0]
    assert digest == hashlib.sha256(stem.with_suffix(".safetensors").read_bytes()).hexdigest()
    if name.startswith("fbp_unet"):
        from diffrecon.models.loading import load_unet

        net, meta = load_unet(stem, expected_sha256=digest)
        assert meta["kind"] == "fbp_unet" and meta["setting"] == "sv8" and meta["step"] == meta["train"]["steps"]
        assert all(torch.isfinite(p).all() for p in net.parameters())
        return
    if name.startswith("score_mri"):
        net, process, meta = load_score_network(stem, expected_sha256=digest)
    else:
        net, process, meta = load_ct_prior(stem, expected_sha256=digest)
    kind = meta.get("kind", "score")
    assert isinstance(net, NoiseNetwork if kind in ("patch", "slice") else ScoreNetwork)
    assert isinstance(process, VPSchedule if kind in ("patch", "slice") else VESDE)
    assert net.cfg.sample_size == meta["image_size"] and not net.training
    assert all(torch.isfinite(p).all() for p in net.parameters())


def test_ema_weights_follow_their_definition(tmp_path):
    """EMA after k steps: e ← d_k e + (1 − d_k) θ_k with d_k = min(decay, (1 + k) / (10 + k)) and θ_k the
    weights after step k (e starts at the initial weights). The EMA weights are what ships."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    seen = []

    def loss_fn(m, x0, gen):
        seen.append({k: v.detach().clone() for k, v in m.named_parameters()})
        return ((m(x0.reshape(len(x0), -1)) - 1.0) ** 2).mean()

    data = torch.rand(8, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    cfg = TrainConfig(steps=14, batch_size=4, lr=0.05, warmup=1, grad_clip=0.0, ema_decay=0.6,
                      checkpoint_every=14, seed=0)
    train(model, data, loss_fn, cfg, tmp_path / "ck", progress=False)
    after = seen[1:] + [{k: v.detach().clone() for k, v in model.named_parameters()}]
    ema = dict(seen[0])
    for k, theta in enumerate(after):
        d = min(0.6, (1 + k) / (10 + k))                      # reaches 0.6 from k = 8 on
        ema = {name: d * ema[name] + (1 - d) * theta[name] for name in ema}
    tensors, _ = load_checkpoint(tmp_path / "ck")
    saved = unprefixed("ema", tensors)
    assert saved.keys() == ema.keys()
    for name in ema:
        torch.testing.assert_close(saved[name], ema[name], rtol=0, atol=1e-6)
    assert not torch.allclose(saved["weight"], after[-1]["weight"], atol=1e-3)   # not just the last weights
