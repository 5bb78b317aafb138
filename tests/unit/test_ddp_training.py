"""Data-parallel training under ``torchrun`` (gloo on CPU): two processes against one, and a
two-process run killed after a checkpoint and resumed.

Expected weights come from independent runs (one process; an uninterrupted two-process run).
Every process uses one thread, so the runs are reproducible on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffrecon.diffusion.sde import VESDE, ve_dsm_loss
from diffrecon.models.checkpoint import load_checkpoint
from diffrecon.models.networks import ScoreNetwork, UNetConfig
from diffrecon.models.training import TrainConfig, train
from test_training import NET, SDE, assert_same_tensors, blobs, ct_store, run_until_killed

HELPER = Path(__file__).with_name("train_helper.py")
SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                 reason="needs torch.distributed with gloo")]


def torchrun(nproc: int, args: dict) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            str(HELPER), json.dumps(args)]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def run(nproc: int, args: dict) -> None:
    proc = subprocess.run(torchrun(nproc, args), capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_processes_reach_the_weights_of_one(tmp_path):
    """Global batch 4 as 2 x 2: the union of the shares is the one-process batch (indices and noise),
    the averaged gradient its mean-loss gradient: the same weights up to float rounding."""
    data = blobs(16)
    torch.save(data, tmp_path / "data.pt")
    net = NET
    cfg = dict(steps=6, batch_size=4, lr=1e-3, warmup=2, grad_clip=1.0, ema_decay=0.9, checkpoint_every=3, seed=1)
    run(2, {"data": str(tmp_path / "data.pt"), "init_seed": 0, "net": net, "sde": list(SDE), "cfg": cfg,
            "stem": str(tmp_path / "two" / "ck")})
    torch.manual_seed(0)
    one = train(ScoreNetwork(UNetConfig.from_dict(net)), data, ve_dsm_loss(VESDE(*SDE)), TrainConfig(**cfg), tmp_path / "one" / "ck",
                progress=False)
    a, meta = load_checkpoint(tmp_path / "two" / "ck")
    b, _ = load_checkpoint(tmp_path / "one" / "ck")
    assert meta["world_size"] == 2 and one["world_size"] == 1 and meta["step"] == 6
    assert meta["config_hash"] == one["config_hash"]          # the process count is not part of the config
    assert [s for s, _ in meta["loss_history"]] == [3, 6]
    for (_, la), (_, lb) in zip(meta["loss_history"], one["loss_history"]):
        assert la == pytest.approx(lb, rel=1e-5)
    assert a.keys() == b.keys()
    for key in a:
        # an attention key bias has a zero gradient (softmax ignores a shift of every logit): its steps
        # are Adam-normalised rounding noise, lr-sized whatever the process count
        if key.startswith(("model.", "ema.")) and not key.endswith("to_k.bias"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)   # steps of ~1e-3


def test_two_process_run_killed_after_a_checkpoint_resumes_exactly(tmp_path):
    """Streaming loader with a worker per process; the whole process group is killed after a
    checkpoint; a second torchrun resumes it to the weights of an uninterrupted two-process run."""
    manifest = ct_store(tmp_path / "store")
    cfg = dict(steps=8, batch_size=4, lr=1e-3, warmup=2, grad_clip=1.0, ema_decay=0.9, checkpoint_every=2, seed=2,
               loader="stream", workers=1)
    killed = tmp_path / "killed" / "ck"
    args = {"manifest": str(manifest), "init_seed": 0, "net": NET, "sde": list(SDE), "cfg": cfg, "stem": str(killed),
            "sleep": 0.4}
    proc = run_until_killed(torchrun(2, args), killed.with_suffix(".json"), 2, env=env())
    assert proc.returncode == -signal.SIGKILL
    step = json.loads(killed.with_suffix(".json").read_text())["step"]
    assert 2 <= step < cfg["steps"]
    kept = tmp_path / "at_kill"
    shutil.copytree(killed.parent, kept)

    run(2, {**args, "init_seed": 99, "sleep": 0})                 # resumed: the initial weights do not matter
    run(2, {**args, "stem": str(tmp_path / "straight" / "ck"), "sleep": 0})
    a, meta = load_checkpoint(killed)
    b, _ = load_checkpoint(tmp_path / "straight" / "ck")
    assert meta["step"] == cfg["steps"] and meta["world_size"] == 2
    assert {k.split(".")[0] for k in a} == {"model", "ema", "optim"}
    assert_same_tensors(a, b)
    key = "model.unet.conv_in.weight"
    assert not torch.equal(load_checkpoint(kept / "ck")[0][key], a[key])    # the resumed run trained on


def test_batch_not_divisible_by_the_processes_is_one_line(tmp_path):
    data = blobs(8)
    torch.save(data, tmp_path / "data.pt")
    cfg = dict(steps=2, batch_size=3, lr=1e-3, warmup=1, checkpoint_every=1, seed=0)
    proc = subprocess.run(torchrun(2, {"data": str(tmp_path / "data.pt"), "init_seed": 0, "net": NET,
                                       "sde": list(SDE), "cfg": cfg, "stem": str(tmp_path / "ck")}),
                          capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode != 0
    assert "train.batch_size 3 is not divisible by the 2 training processes" in proc.stdout + proc.stderr
    assert not (tmp_path / "ck.safetensors").exists()
