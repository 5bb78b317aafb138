"""Supervised U-Net baseline (fastMRI's Unet): training on a mask family, reconstruction shapes, pipeline wiring.

The quality check is independent of the code under test: PSNR is computed here from its
definition, on held-out phantom slices, against the zero-filled reconstruction.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("fastmri.models")       # the network is fastMRI's (installed without its dependencies)

from diffrecon.baselines.mri import zero_filled  # noqa: E402
from diffrecon.baselines.unet import MaskSpec, fit_unet, supervised_loss, train_unet, unet_reconstruct  # noqa: E402
from diffrecon.data.phantoms import head_volume  # noqa: E402
from diffrecon.models.loading import load_unet  # noqa: E402
from diffrecon.models.fastmri_nets import fastmri_unet  # noqa: E402
from diffrecon.physics.masks import make_mask  # noqa: E402

N = 32
SPEC = MaskSpec("gaussian1d", 4.0, 0.12, 0)
TINY = {"model": {"chans": 8, "num_pool_layers": 2},
        "train": {"steps": 120, "batch_size": 8, "lr": 3e-3, "warmup": 10, "grad_clip": 1.0, "ema_decay": 0.9,
                  "checkpoint_every": 60, "seed": 0}}


def _slices(seed: int, volumes: int, depth: int = 6) -> np.ndarray:
    """Phantom magnitude slices (N, H, W), each min-max normalised to [0, 1] like the training sets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(volumes):
        for img in head_volume(rng, depth, N):
            lo, hi = img.min(), img.max()
            if hi > lo:
                out.append((img - lo) / (hi - lo))
    return np.stack(out).astype(np.float32)


def _masked_kspace(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ax = (-2, -1)
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)
    return (k * mask).astype(np.complex64)


def _psnr(target: np.ndarray, pred: np.ndarray) -> float:
    return float(10 * np.log10(target.max() ** 2 / np.mean((target - pred) ** 2)))


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_module):
    """The whole module on one intra-op thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data = torch.from_numpy(_slices(0, 8))[:, None]
    stem = tmp_path_factory.mktemp("unet") / "model"
    meta = fit_unet(data, SPEC, TINY, stem, device="cpu", progress=False)
    return stem, meta, data


def test_training_lowers_the_supervised_loss(trained):
    stem, meta, data = trained
    mask = make_mask(SPEC.kind, (N, N), SPEC.acceleration, SPEC.acs_fraction, SPEC.seed)
    loss = supervised_loss(mask)
    torch.manual_seed(TINY["train"]["seed"])
    untrained = fastmri_unet(TINY["model"]).eval()
    net, _ = load_unet(stem)
    with torch.no_grad():
        before, after = float(loss(untrained, data[::3], None)), float(loss(net, data[::3], None))
    assert after < 0.7 * before
    assert meta["step"] == TINY["train"]["steps"] and meta["method"] == "unet" and meta["loss"] == "l1"
    assert {k: meta["mask"][k] for k in ("kind", "acceleration", "acs_fraction", "seed")} == SPEC._asdict()


def test_trained_unet_beats_zero_filled_on_held_out_slices(trained):
    stem, _, _ = trained
    net, _ = load_unet(stem)
    mask = make_mask(SPEC.kind, (N, N), SPEC.acceleration, SPEC.acs_fraction, SPEC.seed).array
    x = _slices(123, 2)                                       # other phantoms than the training ones
    ksp = _masked_kspace(x, mask)
    zf, rec = zero_filled(ksp, mask, "magnitude"), unet_reconstruct(ksp, mask, "magnitude", net)
    psnr_zf = np.mean([_psnr(t, p) for t, p in zip(x, zf)])
    psnr_unet = np.mean([_psnr(t, p) for t, p in zip(x, rec)])
    assert psnr_unet > psnr_zf + 1.0, (psnr_unet, psnr_zf)


@pytest.mark.parametrize("shape, coil_mode", [((3, N, N), "magnitude"), ((3, N, N), "singlecoil"),
                                              ((3, 4, N, N), "multicoil")])
def test_unet_reconstruct_shapes(shape, coil_mode):
    torch.manual_seed(0)
    net = fastmri_unet(TINY["model"]).eval()
    assert type(net).__module__ == "fastmri.models.unet"
    rng = np.random.default_rng(0)
    ksp = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    mask = np.ones((N, N), np.float32)
    out = unet_reconstruct(ksp, mask, coil_mode, net, batch_limit=2)   # two batches
    assert out.shape == (3, N, N) and out.dtype == np.float32 and (out >= 0).all()


def test_scaling_makes_the_reconstruction_equivariant_to_the_data_scale():
    """σ f((x − μ) / σ) + μ (instance normalisation): scaling the k-space by c scales the output by c."""
    torch.manual_seed(0)
    net = fastmri_unet(TINY["model"]).eval()
    mask = np.ones((N, N), np.float32)
    ksp = _masked_kspace(_slices(5, 1, depth=2), mask)
    a = unet_reconstruct(ksp, mask, "magnitude", net)
    b = unet_reconstruct(7.0 * ksp, mask, "magnitude", net)
    np.testing.assert_allclose(b, 7.0 * a, rtol=1e-4, atol=1e-5)


def test_reconstruct_mri_runs_the_unet_method(tmp_path):
    from diffrecon.data.datasets import prepare_dataset
    from diffrecon.io import read_attrs, read_cases
    from diffrecon.stages.reconstruct import reconstruct
    from diffrecon.stages.simulate import simulate_mri
    from diffrecon.settings import MRISetting

    cfg = {"modality": "mri", "source": "demo", "size": N, "coils": 8, "slices": 2, "volumes": {"train": 1, "test": 1}}
    manifest = prepare_dataset("tiny", cfg, tmp_path / "data", seed=0)
    setting = MRISetting("gaussian1d", 4, 0.12, "multicoil")
    meas, target = tmp_path / "measurements.h5", tmp_path / "target.h5"
    simulate_mri(manifest, setting, meas, target, seed=0)
    small = {**TINY, "train": {**TINY["train"], "steps": 3, "checkpoint_every": 3}}
    stem = tmp_path / "models" / "model"
    meta = train_unet(manifest, SPEC, small, stem, device="cpu", progress=False)
    assert meta["dataset"] == "tiny" and meta["n_train_slices"] == 2
    out = tmp_path / "unet" / "recon.h5"
    seconds = reconstruct(meas, "unet", out, {"device": "cpu"}, model=stem)
    targets, recons = read_cases(target, "target"), read_cases(out, "reconstruction")
    assert set(recons) == set(targets) == set(seconds)
    for case, t in targets.items():
        assert recons[case].shape == t.shape and recons[case].dtype == np.float32
    assert read_attrs(out)["method"] == "unet"
    with h5py.File(out) as f:
        assert all("std" not in f["cases"][c] for c in f["cases"])


def test_unet_method_needs_a_model(tmp_path):
    from diffrecon.methods import build_runner
    from diffrecon.methods.runner import Problem

    problem = Problem("mri", "gaussian1d-R4-acs0.12-magnitude", mask=np.ones((N, N)), coil_mode="magnitude",
                      acs_width=4)
    with pytest.raises(ValueError, match="unet.*trained model"):
        build_runner("unet", problem, {}, None)
