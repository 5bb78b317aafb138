"""CT priors: patch / slice training sets, label-conditioned VP training, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from diffrecon.data.datasets import prepare_dataset
from diffrecon.data.training_sets import ct_patches, ct_slices
from diffrecon.diffusion.vp import VPSchedule, vp_eps_loss
from diffrecon.models.loading import load_ct_prior
from diffrecon.models.recipes import train_ct_prior

TINY_NET = {"channels": [8, 16], "attention": [False, False], "layers_per_block": 1, "norm_num_groups": 4}


@pytest.fixture(scope="module")
def thorax(tmp_path_factory):
    out = tmp_path_factory.mktemp("thorax")
    cfg = {"modality": "ct", "source": "demo", "size": 16, "slices": 27, "volumes": {"train": 1, "test": 1}}
    return prepare_dataset("thorax", cfg, out, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_patches_hold_slices_at_their_spacing(thorax):
    patches, labels = ct_patches(thorax, spacings=(1, 3))
    slices = ct_slices(thorax)[:, 0]
    assert patches.shape == (25 + 21, 3, 16, 16) and labels.tolist() == [1] * 25 + [3] * 21
    assert torch.equal(patches[0], slices[[0, 1, 2]]) and torch.equal(patches[25], slices[[0, 3, 6]])
    assert torch.equal(patches[-1], slices[[20, 23, 26]])
    assert 0 <= float(patches.min()) and float(patches.max()) <= 1


def test_vp_loss_is_the_noise_mse():
    sched = VPSchedule()
    loss = vp_eps_loss(sched)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1

    class Oracle(torch.nn.Module):        # knows x0, so it recovers the noise exactly
        def forward(self, x, t, labels=None):
            a = sched.alphas_cumprod[t].to(x).view(-1, 1, 1, 1)
            return (x - a.sqrt() * x0) / (1 - a).sqrt()

    class Zero(torch.nn.Module):
        def forward(self, x, t, labels=None):
            return torch.zeros_like(x)

    g = torch.Generator().manual_seed(0)
    assert float(loss(Oracle(), x0, g)) < 1e-8
    assert float(loss(Zero(), x0, torch.Generator().manual_seed(0))) == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("kind", ["patch", "slice", "score"])
def test_ct_prior_trains_and_round_trips(thorax, tmp_path, kind):
    cfg = {"model": TINY_NET, "spacings": [1, 3], "sde": {"sigma_min": 0.01, "sigma_max": 5.0},
           "train": {"steps": 30, "batch_size": 4, "lr": 1e-3, "warmup": 2, "checkpoint_every": 15, "seed": 0}}
    meta = train_ct_prior(thorax, cfg, tmp_path / "prior", kind, device="cpu", progress=False)
    assert meta["step"] == 30 and meta["kind"] == kind
    first, last = meta["loss_history"][0][1], meta["loss_history"][-1][1]
    assert last < first                                   # the running loss went down
    net, process, meta2 = load_ct_prior(tmp_path / "prior")
    assert meta2["data_hash"] == meta["data_hash"]
    channels = 3 if kind == "patch" else 1
    x = torch.zeros(2, channels, 16, 16)
    if kind == "patch":
        out = net(x, torch.tensor([10, 10]), torch.tensor([1, 3]))
        assert not torch.equal(out[0], out[1])            # the spacing label changes the prediction
        with pytest.raises(ValueError, match="class labels"):
            net(x, torch.tensor([10, 10]))
    elif kind == "slice":
        out = net(x, torch.tensor([10, 10]))
        assert isinstance(process, VPSchedule)
    else:
        out = net(x, torch.tensor([1.0, 1.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("method, kind", [("diffusion_blend_pp", "patch"), ("dds", "slice"), ("dds_2d", "slice"),
                                          ("diffusion_mbir", "score")])
def test_ct_diffusion_methods_run_through_the_pipeline(thorax, tmp_path, method, kind):
    """A barely trained prior, a few steps: the pipeline writes a finite volume of the right
    shape, records the NFE, and the data consistency pulls the estimate towards the data."""
    import json
    import math

    import h5py
    import numpy as np

    from diffrecon.physics.ct import ParallelBeamCT
    from diffrecon.settings import CTSetting
    from diffrecon.stages.reconstruct import reconstruct
    from diffrecon.stages.simulate import simulate_ct

    setting = CTSetting.parse("la20" if method == "dds" else "sv8")
    simulate_ct(thorax, setting, tmp_path / "meas.h5", tmp_path / "target.h5", n_threads=1)
    cfg = {"model": TINY_NET, "spacings": [1, 3], "sde": {"sigma_min": 0.01, "sigma_max": 5.0},
           "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 4}}
    train_ct_prior(thorax, cfg, tmp_path / "prior", kind, device="cpu", progress=False)
    params = {"n_steps": 4, "progress": False, "n_threads": 1}
    reconstruct(tmp_path / "meas.h5", method, tmp_path / "recon.h5", params, model=tmp_path / "prior")
    with h5py.File(tmp_path / "recon.h5") as f:
        (case,) = list(f["cases"])
        rec = f["cases"][case]["reconstruction"][()]
        assert f["cases"][case].attrs["nfe"] >= 4 and f.attrs["model"].endswith("prior")
        used, given = json.loads(f.attrs["sampler_params"]), json.loads(f.attrs["params"])
    # originals' units (256² slices) → true adjoint on these 16² slices
    factor = 2 * setting.geometry(16).n_views / math.pi * 16 / 256
    assert used["dc_scale"] == given["dc_scale"] == "original"
    for key in ("rho", "lam"):
        if key in given:
            assert used[key] == pytest.approx(given[key] * factor)
    if "gamma" in given:
        assert used["gamma"] == pytest.approx(given["gamma"] / factor)
    with h5py.File(tmp_path / "meas.h5") as f:
        sino = f["cases"][case]["sinogram"][()]
    assert rec.shape == (27, 16, 16) and np.isfinite(rec).all()
    with ParallelBeamCT(setting.geometry(16), n_threads=1) as op:
        resid = np.linalg.norm(op.forward_np(rec) - sino)
    if method == "dds_2d":  # the proximal step with γ = π/(2V) (γ_o = 1) is a soft pull towards the data
        assert resid < 0.9 * np.linalg.norm(sino)
    elif kind != "score":   # VP: a projection-like DC every step; VE with 4 steps and one CG step is not close yet
        assert resid < 0.5 * np.linalg.norm(sino)
    with pytest.raises(ValueError, match="prior"):
        other = "dds" if kind != "slice" else "diffusion_blend"
        reconstruct(tmp_path / "meas.h5", other, tmp_path / "bad.h5", params, model=tmp_path / "prior")
    assert not (tmp_path / "bad.h5").exists()
