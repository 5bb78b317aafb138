"""MRI data from the real brain scans bundled with nibabel (``source: anatomy``)."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from diffrecon.config import ConfigError, validate_config
from diffrecon.data.anatomy import SOURCES, TRAIN_Z, anatomy_volume, source_path
from diffrecon.data.datasets import prepare_dataset
from diffrecon.data.fastmri import read_volume

ROOT = Path(__file__).resolve().parents[2]
CFG = {"modality": "mri", "source": "anatomy", "size": 32, "coils": 8, "slices": 4,
       "volumes": {"train": 3, "val": 1, "test": 2, "test_ood": 1}}


def _labels(manifest, split):
    out = []
    for path in manifest["splits"][split]:
        with h5py.File(path) as f:
            out.append(str(f.attrs["acquisition"]))
    return out


def test_splits_come_from_their_sources_in_the_fastmri_layout(tmp_path):
    m = prepare_dataset("anat", CFG, tmp_path / "a", seed=3)
    for split in ("train", "val", "test"):
        for label in _labels(m, split):
            source, z, frame = label.split("_")[1:]
            z0, z1 = map(int, z[1:].split("-"))
            assert source == "EPI" and z1 - z0 == 3
            assert (z1 < TRAIN_Z) if split in ("train", "val") else (z0 >= TRAIN_Z)   # test: held-out slices
    assert all(label.startswith("ANATOMY_T1_") for label in _labels(m, "test_ood"))   # another contrast
    vols = [read_volume(p) for p in m["splits"]["train"]]
    for v in vols:
        kspace, target = v.kspace, v.target
        assert v.attrs["acquisition"].startswith("ANATOMY_EPI") and kspace.shape == (4, 8, 32, 32) and np.iscomplexobj(kspace)
        assert target.shape == (4, 32, 32) and 0 <= target.min() and target.max() <= 1.0 + 1e-5
        assert target.mean() > 0.05                                    # a brain, not an empty frame
    assert not np.allclose(vols[0].target, vols[1].target)             # augmented: every volume differs
    again = prepare_dataset("anat", CFG, tmp_path / "b", seed=3)
    for p, q in zip(m["splits"]["train"], again["splits"]["train"]):
        np.testing.assert_array_equal(read_volume(p).kspace, read_volume(q).kspace)  # seeded


def test_test_volumes_are_the_unaugmented_scan(tmp_path):
    """Test slices are the scan itself (cropped, resampled, normalised): the same for any seed."""
    a, _ = anatomy_volume(np.random.default_rng(0), "test", 0, 2, 4, 32)
    b, _ = anatomy_volume(np.random.default_rng(99), "test", 0, 2, 4, 32)
    np.testing.assert_array_equal(a, b)
    t1, label = anatomy_volume(np.random.default_rng(0), "test_ood", 0, 1, 4, 32)
    assert label.startswith("ANATOMY_T1") and t1.shape == (4, 32, 32)
    with pytest.raises(ValueError, match="fewer than the 9 slices"):
        anatomy_volume(np.random.default_rng(0), "test", 0, 1, 9, 32)
    assert all(Path(source_path(s)).is_file() for s in SOURCES)


def test_config_accepts_anatomy_for_mri_only():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    ok = copy.deepcopy(cfg)
    ok["datasets"]["demo_brain"].update(source="anatomy", slices=6)
    validate_config(ok)
    for edit, field in ((lambda c: c["datasets"]["demo_brain"].update(source="anatomy", slices=12), "slices"),
                        (lambda c: c["datasets"]["demo_thorax"].update(source="anatomy"), "demo_thorax")):
        bad = copy.deepcopy(cfg)
        edit(bad)
        with pytest.raises(ConfigError, match=field):
            validate_config(bad)
