"""Streaming training sets (diffrecon.data.streaming) against the in-memory builders, and the
per-step sampler against the draw of the training loop.

Expected samples come from the in-memory builders (diffrecon.data.training_sets), which read whole
volumes with the checked readers; the data hash is checked by what must (not) change it.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from diffrecon.data.datasets import prepare_dataset
from diffrecon.data.fastmri import DataFormatError, write_volume
from diffrecon.data.streaming import CTPatches, CTSlices, MagnitudeSlices
from diffrecon.data.training_sets import ct_patches, ct_slices, magnitude_slices
from diffrecon.diffusion.batch_noise import BatchShare, batch_rand, batch_randint, batch_randn
from diffrecon.models.training import StepBatchSampler, rank_rows, step_indices

MRI = {"modality": "mri", "source": "demo", "size": 16, "coils": 2, "slices": 3, "volumes": {"train": 2, "test": 1}}
CT = {"modality": "ct", "source": "demo", "size": 16, "slices": 9, "volumes": {"train": 2, "test": 1}}


@pytest.fixture(scope="module")
def mri(tmp_path_factory):
    """Demo MRI train split plus a single-coil file whose middle slice is constant."""
    root = tmp_path_factory.mktemp("mri")
    manifest = prepare_dataset("demo_brain", MRI, root, seed=0)
    rng = np.random.default_rng(1)
    target = rng.random((3, 16, 16)).astype(np.float32) * 3
    target[1] = 0.5                                       # constant: min-max normalised to zeros
    kspace = (rng.standard_normal((3, 16, 16)) + 1j).astype(np.complex64)
    extra = write_volume(root / "train" / "single.h5", kspace, target)
    manifest["splits"]["train"].append(str(extra))
    return manifest


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """Demo CT train split plus one .npy volume (values slightly outside [0, 1]: clipped)."""
    root = tmp_path_factory.mktemp("ct")
    manifest = prepare_dataset("demo_thorax", CT, root, seed=0)
    vol = np.random.default_rng(2).uniform(-0.05, 1.05, (7, 16, 16)).astype(np.float32)
    np.save(root / "train" / "extra.npy", vol)
    manifest["splits"]["train"].append(str(root / "train" / "extra.npy"))
    return manifest


def _stack(ds, indices):
    return torch.stack([ds[i] if isinstance(ds[i], torch.Tensor) else ds[i][0] for i in indices])


def test_magnitude_slices_equal_the_in_memory_set(mri):
    ds = MagnitudeSlices(mri)
    ref = magnitude_slices(mri)
    assert len(ds) == len(ref) == 2 * 3 + 3 and ds.sample_shape == tuple(ref.shape[1:])
    order = np.random.default_rng(0).permutation(len(ds))          # random access, any order
    assert torch.equal(_stack(ds, order), ref[order])
    assert torch.equal(ds[7], torch.zeros(1, 16, 16))              # the constant slice
    assert ref[6].min() == 0 and ref[6].max() == 1


def test_ct_sets_equal_the_in_memory_sets(ct):
    slices = CTSlices(ct)
    ref = ct_slices(ct)
    assert len(slices) == len(ref) == 2 * 9 + 7
    order = np.random.default_rng(1).permutation(len(slices))
    assert torch.equal(_stack(slices, order), ref[order])
    assert torch.equal(_stack(CTSlices(ct, centered=True), order), (2 * ref - 1)[order])

    patches = CTPatches(ct, spacings=(1, 3))
    ref_p, ref_l = ct_patches(ct, spacings=(1, 3))
    assert len(patches) == len(ref_p) == 2 * ((9 - 2) + (9 - 6)) + (7 - 2) + (7 - 6)
    order = np.random.default_rng(2).permutation(len(patches))
    assert torch.equal(_stack(patches, order), ref_p[order])
    assert torch.equal(torch.tensor([patches[i][1] for i in order]), ref_l[order])
    assert torch.equal(patches.labels, ref_l)
    centered = CTPatches(ct, spacings=(1, 3), centered=True)
    assert torch.equal(centered[5][0], 2 * ref_p[5] - 1)


def test_index_reads_headers_only(mri, ct, monkeypatch):
    """Building the index never reads pixel data (a dataset read would raise here)."""
    def no_read(self, *args, **kwargs):
        raise AssertionError("pixel data read while building the index")

    monkeypatch.setattr(h5py.Dataset, "__getitem__", no_read)
    monkeypatch.setattr(h5py.Dataset, "read_direct", no_read)
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: real_load(*a, **{**k, "mmap_mode": "r"}))
    assert len(MagnitudeSlices(mri)) == 9
    assert len(CTSlices(ct)) == 25 and len(CTPatches(ct, (1, 3))) == 26


def test_workers_read_the_same_batches(ct):
    patches = CTPatches(ct, spacings=(1, 3))
    sampler = StepBatchSampler(len(patches), 4, seed=3, start=0, stop=5)
    main = list(DataLoader(patches, batch_sampler=sampler, num_workers=0))
    workers = list(DataLoader(patches, batch_sampler=sampler, num_workers=2, persistent_workers=True))
    assert len(main) == len(workers) == 5
    for (x0, y0), (x1, y1) in zip(main, workers):
        assert torch.equal(x0, x1) and torch.equal(y0, y1) and y0.dtype == torch.int64


def test_sampler_yields_the_training_loop_draw_split_by_rank():
    for step in (0, 7, 123):
        gen = torch.Generator().manual_seed(5 * 1_000_003 + step)
        expected = torch.randint(0, 50, (8,), generator=gen)
        after = torch.rand(3, generator=gen)                     # the loss's first draw follows the indices
        g2, idx = step_indices(50, 8, 5, step)
        assert torch.equal(idx, expected) and torch.equal(torch.rand(3, generator=g2), after)
        shares = [next(iter(StepBatchSampler(50, 8, 5, step, step + 1, rank_rows(8, r, 4)))) for r in range(4)]
        assert sum(shares, []) == expected.tolist()
    assert list(StepBatchSampler(50, 8, 5, 3, 6))[0] == step_indices(50, 8, 5, 3)[1].tolist()
    with pytest.raises(ValueError, match="not divisible by the 3 training processes"):
        rank_rows(8, 0, 3)


def test_rank_shares_of_the_noise_are_rows_of_the_global_draw():
    def draws(source, b):
        return (batch_rand(source, (b,), dtype=torch.float64), batch_randn(source, (b, 1, 2, 2)),
                batch_randint(source, 1000, (b,)))

    full = draws(torch.Generator().manual_seed(11), 6)
    parts = [draws(BatchShare(torch.Generator().manual_seed(11), lo, lo + 2, 6), 2) for lo in (0, 2, 4)]
    for k in range(3):
        assert torch.equal(torch.cat([p[k] for p in parts]), full[k])
    with pytest.raises(ValueError, match="batch share of 2"):
        batch_randn(BatchShare(torch.Generator(), 0, 2, 6), (3, 1))


def test_data_hash_follows_the_content_not_the_place(ct, tmp_path):
    h = CTSlices(ct).data_hash()
    assert h == CTSlices(ct).data_hash() and len(h) == 16
    assert CTPatches(ct, (1, 3)).data_hash() not in (h, CTPatches(ct, (1, 2)).data_hash())
    moved = {"name": ct["name"], "splits": {"train": []}}
    for path in ct["splits"]["train"]:                           # the same files elsewhere: same hash
        dst = tmp_path / "elsewhere" / path.split("/")[-1]
        dst.parent.mkdir(exist_ok=True)
        shutil.copy(path, dst)
        moved["splits"]["train"].append(str(dst))
    assert CTSlices(moved).data_hash() == h
    with h5py.File(moved["splits"]["train"][1], "r+") as f:      # one value changed: another hash
        f["volume"][4, 3, 3] = f["volume"][4, 3, 3] + 1e-3
    assert CTSlices(moved).data_hash() != h


def test_bad_files_name_themselves(tmp_path, ct):
    kspace = np.ones((2, 8, 8), np.complex64)
    path = tmp_path / "no_target.h5"
    with h5py.File(path, "w") as f:
        f["kspace"] = kspace
    with pytest.raises(ValueError, match="no_target.h5: no reconstruction_rss"):
        MagnitudeSlices({"name": "x", "splits": {"train": [str(path)]}})
    with pytest.raises(ValueError, match="split 'train' has no volumes"):
        CTSlices({"name": "x", "splits": {"train": []}})

    nan = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    nan[1, 2, 2] = np.nan
    bad = write_volume(tmp_path / "nan.h5", kspace, nan)
    ds = MagnitudeSlices({"name": "x", "splits": {"train": [str(bad)]}})
    ds[0]
    with pytest.raises(DataFormatError, match=r"nan.h5 slice 1: 'reconstruction_esc' holds 1 NaN"):
        ds[1]
    hu = tmp_path / "hu.npy"
    np.save(hu, np.full((3, 8, 8), 400.0, np.float32))
    with pytest.raises(DataFormatError, match=r"hu.npy: slices \[0\] have values 400"):
        CTSlices({"name": "x", "splits": {"train": [str(hu)]}})[0]
    other = tmp_path / "small.npy"
    np.save(other, np.zeros((3, 8, 8), np.float32))
    with pytest.raises(DataFormatError, match="mixes slice sizes"):
        CTSlices({"name": "x", "splits": {"train": [ct["splits"]["train"][0], str(other)]}})
