"""bench/gpu_check.py runs on a CPU with --quick: the CUDA parts say SKIP, the rest writes its figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour (no CUDA device)")
def test_quick_run_skips_the_cuda_parts_and_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick", "--train-steps", "1",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    skips = [ln for ln in proc.stdout.splitlines() if ln.startswith("SKIP (")]
    assert [ln[:8] for ln in skips] == ["SKIP (a)", "SKIP (b)", "SKIP (c)", "SKIP (d)"], proc.stdout
    results = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert "skipped" in results["a"] and "skipped" in results["b"] and results["b"]["cpu_dot"] < 1e-5
    assert results["c"]["speedup"] > 0 and results["c"]["cpu_estimate_mib_per_image"] > 0
    assert {r["prior"] for r in results["d"]["rows"]} == {"ct_patch", "ct_slice", "ct_score", "ct_slice_perp", "score_mri"}
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "## (a)" in md and "skipped:" in md and "| ct_patch |" in md
    assert not list((tmp_path / "out").glob("*.part"))


def test_bad_output_folder_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--quick", "--out",
                           str(tmp_path / "file")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=120)
    assert proc.returncode == 2 and "--out" in proc.stderr and "not a folder" in proc.stderr
