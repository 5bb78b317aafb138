"""The workflow on a real SLURM cluster (one node on localhost, tests/slurm/start_localhost.sh)
through profiles/slurm, and the profile's settings reaching the jobs (dry run, no SLURM needed).

The cluster has no accounting (no slurmdbd), two partitions (``cpu``, the default, and ``gpu``)
and one declared GPU, so that a ``--gpus=1`` job is accepted. One CT FBP cell and one score-MRI
cell (a diffusion method: ``gpu=1``) run through sbatch; their job ids must show in ``squeue``
in the right partitions, and the metrics must equal a local run of the same cells.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "slurm"
START, STOP = ROOT / "tests" / "slurm" / "start_localhost.sh", ROOT / "tests" / "slurm" / "stop_localhost.sh"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
CELLS = ["results/ct/demo_thorax/sv8/fbp/metrics.csv",
         "results/mri/demo_brain/gaussian1d-R4-acs0.12-magnitude/score/metrics.csv"]
RUN_TIMEOUT_S = 900

pytestmark = pytest.mark.slow


def _config(path: Path) -> Path:
    """The demo config cut to the two cells: one CT FBP cell, one score-MRI cell (shipped prior)."""
    c = yaml.safe_load((ROOT / "config.yaml").read_text())
    c["datasets"]["demo_brain"].update(slices=2, volumes={"train": 1, "val": 0, "test": 1, "test_ood": 0})
    c["datasets"]["demo_thorax"].update(size=32, volumes={"train": 1, "test": 1})
    mri = c["mri"]
    mri.update(masks=["gaussian1d"], accelerations=[{"factor": 4, "acs_fraction": 0.12}], coil_modes=["magnitude"],
               methods=["zero_filled", "score"], central_slices=None)
    mri.pop("ablation"), mri.pop("robustness")
    mri["score"].update(n_steps=20, n_samples=1)
    c["ct"].update(settings=["sv8"], methods=["fbp"])
    c["ct"].pop("ablation")
    c.pop("ct_priors")
    c["score_mri"]["weights"] = str(ROOT / c["score_mri"]["weights"])
    path.write_text(yaml.safe_dump(c, sort_keys=False))
    return path


def _metrics(work: Path) -> pd.DataFrame:
    frames = [pd.read_csv(work / cell) for cell in CELLS]
    return pd.concat(frames).drop(columns=["seconds"]).reset_index(drop=True)


# ------------------------------------------------------------------------ without SLURM
def test_profile_settings_reach_the_jobs(tmp_path):
    """A user's account in profiles/slurm reaches every job's resources (the automatically loaded
    workflow profile has no resource block that would replace it), the rule-family resources
    apply, and GPU jobs are the diffusion reconstructions."""
    default = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
    assert not {"default-resources", "set-resources", "resources"} & set(default)
    mine = tmp_path / "profile"
    shutil.copytree(PROFILE, mine)
    text = (mine / "profile.yaml").read_text()
    assert "# slurm_account:" in text
    (mine / "profile.yaml").write_text(re.sub(r"# slurm_account: \S+", "slurm_account: lab42", text))
    cfg = _config(tmp_path / "cfg.yaml")
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--profile", str(mine), "-n", *CELLS,
                           "--configfile", str(cfg)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = re.findall(r"rule (\w+):\n(?:.*\n)*?\s+resources: (.*)", proc.stdout)
    assert sorted(rule for rule, _ in jobs) == sorted(["prepare_dataset", "prepare_dataset", "simulate_ct",
                                                       "simulate_mri", "install_weights_score_mri", "reconstruct",
                                                       "reconstruct"])          # each cell scored in its job
    for rule, res in jobs:
        assert "slurm_account=lab42" in res, (rule, res)
    res = {rule: res for rule, res in jobs if rule != "reconstruct"}
    assert "mem_mb=8000" in res["simulate_ct"] and "runtime=60" in res["simulate_ct"]
    recon = [r for rule, r in jobs if rule == "reconstruct"]
    assert sorted("gpu=1" in r for r in recon) == [False, True]       # fbp: CPU; score: GPU
    assert all("runtime=720" in r for r in recon)


def test_partition_file_sends_gpu_jobs_to_the_gpu_partition():
    """The executor's own partition choice with profiles/slurm/partitions.yaml."""
    partitions = pytest.importorskip("snakemake_executor_plugin_slurm.partitions")
    parts = partitions.read_partition_file(PROFILE / "partitions.yaml")

    class Res(dict):
        __getattr__ = dict.get

    def job(**res):
        return types.SimpleNamespace(resources=Res(res), threads=1, name="x", is_group=lambda: False)

    log = types.SimpleNamespace(info=lambda *a: None, warning=lambda *a: None, debug=lambda *a: None)
    assert partitions.get_best_partition(parts, job(gpu=1, runtime=720, mem_mb=16000), log) == "gpu"
    assert partitions.get_best_partition(parts, job(gpu=0, runtime=30, mem_mb=4000), log) == "cpu"
    assert partitions.get_best_partition(parts, job(runtime=60, mem_mb=8000), log) == "cpu"


# --------------------------------------------------------------------------- real SLURM
@pytest.fixture(scope="module")
def slurm():
    """A running one-node SLURM (started here, stopped at the end); skipped where it cannot be installed."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root to start its daemons")
    proc = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SLURM_FAKE_GPUS": "1"})
    if proc.returncode == 3:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        pytest.skip(f"SLURM cannot be installed here: {last}")
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield
    finally:
        subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=120)
        # the configuration naming the stopped controller is gone: SLURM clients (and snakemake's
        # SLURM plugin, at every snakemake start) fail fast instead of retrying it for ~10 s
        conf = Path("/etc/slurm/slurm.conf")
        assert not (conf.exists() and "written by tests/slurm/start_localhost.sh" in conf.read_text())


def _run_with_sigint_timeout(cmd, cwd, timeout):
    """Run; on timeout send SIGINT (a hung run ignores SIGTERM), then kill; return (rc, output)."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"the SLURM run did not finish in {timeout} s (stopped with SIGINT):\n{out[-3000:]}")
    return proc.returncode, out


def test_cells_run_through_slurm_as_locally(slurm, tmp_path):
    cluster, local = tmp_path / "cluster", tmp_path / "local"
    cluster.mkdir(), local.mkdir()
    cfg = _config(tmp_path / "cfg.yaml")
    small = [f"{rule}:mem_mb=1000" for rule in ("prepare_dataset", "simulate_ct", "simulate_mri", "reconstruct",
                                                "install_weights_score_mri")]
    rc, out = _run_with_sigint_timeout(
        [*SNAKEMAKE, "--directory", str(cluster), "--profile", str(PROFILE), *CELLS, "--configfile", str(cfg),
         "--slurm-init-seconds-before-status-checks", "2", "--set-resources", *small], cluster, RUN_TIMEOUT_S)
    assert rc == 0, out[-4000:]
    ids = re.findall(r"submitted with SLURM jobid (\d+)", out)
    assert len(ids) >= 6, out[-3000:]
    q = subprocess.run(["squeue", "--states=all", "-h", "-j", ",".join(ids), "-O",
                        "JobID:12,Partition:12,tres-per-job:24,State:16,Comment:200"],
                       capture_output=True, text=True, check=True).stdout
    rows = {r.split()[0]: r.split() for r in q.strip().splitlines()}
    assert set(rows) == set(ids), q
    assert all(r[3] == "COMPLETED" for r in rows.values()), q
    score = [r for r in rows.values() if "reconstruct" in r[4] and r[4].endswith("_score")]
    fbp = [r for r in rows.values() if "reconstruct" in r[4] and r[4].endswith("_fbp")]
    assert len(score) == 1 and score[0][1] == "gpu" and "gpu:1" in score[0][2], q
    assert len(fbp) == 1 and fbp[0][1] == "cpu", q
    assert any(r[4].startswith("rule_install_") for r in rows.values()), q      # the profile's group "install"

    proc = subprocess.run([*SNAKEMAKE, "--directory", str(local), "--cores", "2", *CELLS, "--configfile", str(cfg)],
                          capture_output=True, text=True, cwd=local)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pd.testing.assert_frame_equal(_metrics(cluster), _metrics(local))
