"""Failures inside workflow jobs: a data error is one line first (console and log); a killed job
leaves nothing Snakemake would take as finished, and its rerun leaves no temporary file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]

pytestmark = pytest.mark.slow


def _run(*args, cwd, **kw):
    return subprocess.run([*SNAKEMAKE, "--directory", str(cwd), *args], capture_output=True, text=True, cwd=cwd, **kw)


def test_atomic_h5_removes_a_stale_part(tmp_path):
    from diffrecon.io import atomic_h5

    out = tmp_path / "recon.h5"
    stale = tmp_path / "recon.h5.part"
    stale.write_bytes(b"left by a killed job")
    with atomic_h5(out) as f:
        assert not stale.exists() or stale.stat().st_size != len(b"left by a killed job")
        f["x"] = np.arange(3)
    assert not stale.exists()
    with h5py.File(out) as f:
        assert f["x"][()].tolist() == [0, 1, 2]


def test_data_error_is_the_first_line_of_log_and_console(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "slice.npy", np.zeros((16, 16), np.float32))      # rank 2: not a (slices, H, W) volume
    cfg = {"seed": 0, "datasets": {"mine": {"modality": "ct", "source": "files", "files": {"test": str(data / "*.npy")}}},
           "ct": {"datasets": ["mine"], "settings": ["sv8"], "methods": ["fbp"]}}
    config = tmp_path / "bad_data.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = _run("results/ct/mine/sv8/fbp/recon.h5", "--configfile", str(config), "--cores", "1", cwd=tmp_path)
    assert proc.returncode != 0
    expected = f"diffrecon: error: {data / 'slice.npy'}: expected a (slices, H, W) volume"
    assert expected in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    log = tmp_path / "logs" / "simulate_ct" / "mine" / "sv8.log"
    lines = log.read_text().splitlines()
    assert lines[0].startswith(expected), lines[:3]
    assert any("Traceback" in ln for ln in lines[1:])


def test_killed_job_is_rerun_and_leaves_no_part(tmp_path):
    cfg = yaml.safe_load((ROOT / "tests" / "integration" / "config_tiny.yaml").read_text())
    cfg.pop("ct")
    cfg["datasets"].pop("demo_thorax")
    cfg["mri"].update(masks=["gaussian1d"], coil_modes=["magnitude"], methods=["tv"], robustness=[],
                      tv={"lam": 0.01, "iterations": 10_000_000})
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cell = tmp_path / "results" / "mri" / "demo_brain" / "gaussian1d-R4-acs0.25-magnitude" / "tv"
    target = str(cell.relative_to(tmp_path) / "recon.h5")
    proc = subprocess.Popen([*SNAKEMAKE, "--directory", str(tmp_path), target, "--configfile", str(config),
                             "--cores", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (cell / "recon.h5.part").exists():
            assert proc.poll() is None and time.time() < deadline, "the reconstruct job never started writing"
            time.sleep(0.2)
        time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (cell / "recon.h5.part").exists() and not (cell / "recon.h5").exists()
    # nothing in results/ is taken as finished: the dry run lists the job again
    dry = _run("-n", target, "--configfile", str(config), cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "reconstruct" in dry.stdout, dry.stdout
    # the rerun (as after a crash: --unlock, then --rerun-incomplete) removes the stale temporary file
    assert _run("--unlock", "--configfile", str(config), cwd=tmp_path).returncode == 0
    cfg["mri"]["tv"]["iterations"] = 5
    config.write_text(yaml.safe_dump(cfg))
    rerun = _run(target, "--configfile", str(config), "--cores", "1", "--rerun-incomplete", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert not list((tmp_path / "results").rglob("*.part"))
    with h5py.File(cell / "recon.h5") as f:
        (case,) = list(f["cases"])
        assert np.isfinite(f["cases"][case]["reconstruction"][()]).all()
