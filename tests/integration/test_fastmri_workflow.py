"""Raw fastMRI files through the workflow: a retrospective dataset to the table, a prospective one
to its reconstructions and figure (mock files at the real dimensions, written here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from fastmri_mock import W, write_raw  # noqa: E402

pytestmark = pytest.mark.slow


def _config(raw: Path) -> dict:
    return {
        "seed": 0,
        "results_dir": "results",
        "datasets": {
            "knee": {"modality": "mri", "source": "fastmri", "drop_edge_slices": [1, 1],
                     "files": {"test": str(raw / "knee" / "**" / "*.h5")}},
            "knee_pro": {"modality": "mri", "source": "fastmri", "prospective": True, "drop_edge_slices": [1, 1],
                         "files": {"test": str(raw / "challenge" / "*.h5")}},
        },
        "mri": {"datasets": ["knee"], "masks": ["random"], "accelerations": [{"factor": 4, "acs_fraction": 0.08}],
                "coil_modes": ["magnitude"], "methods": ["zero_filled", "tv"], "tv": {"lam": 0.01, "iterations": 5},
                "prospective": [{"dataset": "knee_pro", "coil_mode": "multicoil"}]},
        "figures": {"case_index": 0},
    }


def test_raw_and_prospective_fastmri_datasets(tmp_path):
    raw = tmp_path / "raw"
    (raw / "knee" / "multicoil_val").mkdir(parents=True)
    (raw / "challenge").mkdir()
    write_raw(raw / "knee" / "multicoil_val" / "file1000001.h5", n_slices=3, seed=1)
    write_raw(raw / "challenge" / "file1000002.h5", n_slices=3, prospective=True, seed=2)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(raw)))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(cfg), "--cores", "2"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = tmp_path / "results"
    manifest = json.loads((res / "data" / "mri" / "knee" / "manifest.json").read_text())
    assert manifest["preprocessing"]["files"]["test"][0]["slices"] == [1]
    assert manifest["splits"]["test"] == ["results/data/mri/knee/test/file1000001.h5"]
    table = pd.read_csv(res / "tables" / "mri_summary.csv")
    assert set(table["dataset"]) == {"knee"} and set(table["method"]) == {"zero_filled", "tv"}
    pro = res / "mri" / "knee_pro" / "prospective-multicoil"
    for method in ("zero_filled", "tv"):
        assert (pro / method / "recon.h5").is_file()
        assert not (pro / method / "metrics.csv").exists()
    assert not (pro / "target.h5").exists()
    assert (res / "figures" / "mri" / "knee_pro" / "prospective-multicoil.png").is_file()
    import h5py

    with h5py.File(pro / "zero_filled" / "recon.h5") as f:
        assert f["cases"]["file1000002"]["reconstruction"].shape == (1, 320, W)
