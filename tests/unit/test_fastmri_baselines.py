"""The fastMRI baselines: the U-Net is fastMRI's class, E2E-VarNet trains, resumes and reconstructs.

Weights made by the fastMRI reference code are stood in for by a ``fastmri.models.Unet`` built
here and saved to this project's checkpoint format; the VarNet quality check computes PSNR here
from its definition, against the same network untrained.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

fastmri_models = pytest.importorskip("fastmri.models")

from diffrecon.baselines.unet import MaskSpec  # noqa: E402
from diffrecon.errors import CheckpointError  # noqa: E402
from diffrecon.methods import build_runner  # noqa: E402
from diffrecon.methods.runner import Problem  # noqa: E402
from diffrecon.models.checkpoint import load_checkpoint, prefixed, save_checkpoint, unprefixed  # noqa: E402
from diffrecon.physics.masks import make_mask  # noqa: E402

N = 32
SPEC = MaskSpec("gaussian1d", 4.0, 0.12, 0)
VARNET = {"model": {"cascades": 2, "chans": 4, "pools": 2, "sens_chans": 4, "sens_pools": 2},
          "train": {"steps": 40, "batch_size": 4, "lr": 3e-3, "warmup": 5, "grad_clip": 1.0, "ema_decay": 0.9,
                    "checkpoint_every": 20, "seed": 0}}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread_module):
    """The whole module on one intra-op thread (tests/conftest.py)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A demo multi-coil dataset (8 coils, 32 x 32; 3 training volumes) and its measured test set."""
    from diffrecon.data.datasets import prepare_dataset
    from diffrecon.settings import MRISetting
    from diffrecon.stages.simulate import simulate_mri

    root = tmp_path_factory.mktemp("varnet")
    cfg = {"modality": "mri", "source": "demo", "size": N, "coils": 8, "slices": 4, "volumes": {"train": 3, "test": 1}}
    manifest = prepare_dataset("tiny", cfg, root / "data", seed=0)
    meas, target = root / "measurements.h5", root / "target.h5"
    simulate_mri(manifest, MRISetting("gaussian1d", 4, 0.12, "multicoil"), meas, target, seed=0)
    return root, manifest, meas, target


@pytest.fixture(scope="module")
def trained_varnet(tiny):
    from diffrecon.baselines.varnet import train_varnet

    root, manifest, _, _ = tiny
    stem = root / "models" / "varnet"
    meta = train_varnet(manifest, SPEC, VARNET, stem, device="cpu", progress=False)
    return stem, meta


def _problem(setting: str, coil_mode: str = "multicoil") -> Problem:
    from diffrecon.settings import MRISetting

    s = MRISetting.parse(setting)
    mask = make_mask(s.mask, (N, N), s.acceleration, s.acs_fraction, 0)
    return Problem("mri", setting, mask=mask.array, coil_mode=coil_mode, acs_width=mask.to_dict()["acs_width"])


# ------------------------------------------------------------------------------------------ U-Net


def test_unet_network_is_fastmris_and_loads_a_fastmri_state_dict(tmp_path):
    """A state dict of fastmri.models.Unet, saved in our format, loads unchanged and computes the same."""
    from diffrecon.baselines.unet import fit_unet
    from diffrecon.models.loading import load_unet

    torch.manual_seed(3)
    reference = fastmri_models.Unet(1, 1, chans=8, num_pool_layers=2).eval()
    mask = make_mask(SPEC.kind, (N, N), SPEC.acceleration, SPEC.acs_fraction, SPEC.seed)
    meta = {"method": "unet", "architecture": "fastmri_unet", "model": {"chans": 8, "num_pool_layers": 2},
            "image_size": N, "mask": {**SPEC._asdict(), **mask.to_dict()}}
    save_checkpoint(tmp_path / "ref", prefixed("model", reference.state_dict()), meta)
    net, _ = load_unet(tmp_path / "ref")
    assert type(net) is fastmri_models.Unet
    assert list(net.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, 1, N, N)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))
    # the networks this project trains have fastMRI's keys too
    data = torch.rand(4, 1, N, N)
    small = {"model": {"chans": 8, "num_pool_layers": 2},
             "train": {"steps": 1, "batch_size": 2, "checkpoint_every": 1, "warmup": 1}}
    fit_unet(data, SPEC, small, tmp_path / "ours", device="cpu", progress=False)
    tensors, ours = load_checkpoint(tmp_path / "ours")
    assert ours["architecture"] == "fastmri_unet" and ours["normalisation"] == "instance"
    assert set(unprefixed("model", tensors)) == set(reference.state_dict())
    runner = build_runner("unet", _problem("gaussian1d-R4-acs0.12-magnitude", "magnitude"), {"device": "cpu"},
                          tmp_path / "ref")
    assert runner(np.zeros((1, N, N), np.complex64)).reconstruction.shape == (1, N, N)


def test_unet_method_refuses_an_earlier_diffusers_unet(tmp_path):
    from diffrecon.models.networks import image_unet

    model_cfg = {"channels": [8, 16], "attention": [False, False], "norm_num_groups": 4}
    mask = make_mask(SPEC.kind, (N, N), SPEC.acceleration, SPEC.acs_fraction, SPEC.seed)
    save_checkpoint(tmp_path / "old", prefixed("model", image_unet(model_cfg, N).state_dict()),
                    {"method": "unet", "model": model_cfg, "image_size": N, "mask": {**SPEC._asdict(), **mask.to_dict()}})
    with pytest.raises(CheckpointError, match="earlier diffusers network.*retrain"):
        build_runner("unet", _problem("gaussian1d-R4-acs0.12-magnitude", "magnitude"), {"device": "cpu"},
                     tmp_path / "old")


def test_unet_training_resumes_to_the_same_weights(tmp_path):
    from diffrecon.baselines.unet import fit_unet

    data = torch.rand(6, 1, N, N)
    cfg = {"model": {"chans": 4, "num_pool_layers": 2},
           "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "warmup": 1, "seed": 1}}
    fit_unet(data, SPEC, cfg, tmp_path / "full", device="cpu", progress=False)
    fit_unet(data, SPEC, {**cfg, "train": {**cfg["train"], "steps": 2}}, tmp_path / "cut", device="cpu", progress=False)
    meta = fit_unet(data, SPEC, cfg, tmp_path / "cut", device="cpu", progress=False)
    assert meta["step"] == 4
    a, b = load_checkpoint(tmp_path / "full")[0], load_checkpoint(tmp_path / "cut")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------- E2E-VarNet


def test_varnet_trains_and_reconstructs_a_multicoil_case(tiny, trained_varnet):
    """The reconstruct stage runs the method; 40 steps already beat the same network untrained."""
    from diffrecon.baselines.varnet import varnet_reconstruct
    from diffrecon.io import read_attrs, read_cases
    from diffrecon.models.fastmri_nets import fastmri_varnet
    from diffrecon.stages.reconstruct import reconstruct

    root, _, meas, target = tiny
    stem, meta = trained_varnet
    assert meta["method"] == "varnet" and meta["loss"] == "ssim" and meta["n_coils"] == 8
    assert meta["step"] == VARNET["train"]["steps"] and meta["n_train_slices"] == 12
    out = root / "varnet" / "recon.h5"
    reconstruct(meas, "varnet", out, {"device": "cpu"}, model=stem)
    targets, recons, kspace = read_cases(target, "target"), read_cases(out, "reconstruction"), read_cases(meas, "kspace")
    assert read_attrs(out)["method"] == "varnet" and set(recons) == set(targets)
    mask = make_mask(SPEC.kind, (N, N), SPEC.acceleration, SPEC.acs_fraction, 0)
    torch.manual_seed(VARNET["train"]["seed"])
    untrained = fastmri_varnet(VARNET["model"]).eval()

    def psnr(t, p):
        return 10 * np.log10(t.max() ** 2 / np.mean((t - p) ** 2))

    for case, t in targets.items():
        r = recons[case]
        assert r.shape == t.shape and r.dtype == np.float32 and np.isfinite(r).all()
        before = varnet_reconstruct(kspace[case], mask.array, untrained, mask.to_dict()["acs_width"])
        assert psnr(t, r) > psnr(t, before) + 1.0, (psnr(t, r), psnr(t, before))


def test_varnet_refuses_a_checkpoint_of_another_mask_and_other_coil_modes(trained_varnet):
    stem, _ = trained_varnet
    with pytest.raises(CheckpointError, match="trained for mask gaussian1d R4.0 ACS 0.12, the data are poisson"):
        build_runner("varnet", _problem("poisson-R4-acs0.12-multicoil"), {"device": "cpu"}, stem)
    with pytest.raises(CheckpointError, match="trained for mask gaussian1d R4.0 ACS 0.12, the data are gaussian1d R8"):
        build_runner("varnet", _problem("gaussian1d-R8-acs0.12-multicoil"), {"device": "cpu"}, stem)
    with pytest.raises(ValueError, match="'varnet' does not apply to coil mode 'magnitude'"):
        build_runner("varnet", _problem("gaussian1d-R4-acs0.12-magnitude", "magnitude"), {"device": "cpu"}, stem)
    with pytest.raises(ValueError, match="varnet.*trained model"):
        build_runner("varnet", _problem("gaussian1d-R4-acs0.12-multicoil"), {}, None)


def test_unet_checkpoint_is_not_a_varnet(tmp_path):
    model_cfg = {"chans": 4, "num_pool_layers": 2}
    save_checkpoint(tmp_path / "u", prefixed("model", fastmri_models.Unet(1, 1, 4, 2).state_dict()),
                    {"method": "unet", "architecture": "fastmri_unet", "model": model_cfg, "image_size": N})
    with pytest.raises(CheckpointError, match="a 'unet' checkpoint, not a E2E-VarNet"):
        build_runner("varnet", _problem("gaussian1d-R4-acs0.12-multicoil"), {"device": "cpu"}, tmp_path / "u")


def test_varnet_training_resumes_to_the_same_weights(tiny, tmp_path):
    from diffrecon.baselines.varnet import fit_varnet, multicoil_slices

    data = multicoil_slices(tiny[1])[:6]
    assert data.shape == (6, 8, N, N, 2)
    cfg = {"model": {"cascades": 1, "chans": 2, "pools": 1, "sens_chans": 2, "sens_pools": 1},
           "train": {"steps": 4, "batch_size": 2, "checkpoint_every": 2, "warmup": 1, "seed": 2}}
    fit_varnet(data, SPEC, cfg, tmp_path / "full", device="cpu", progress=False)
    fit_varnet(data, SPEC, {**cfg, "train": {**cfg["train"], "steps": 2}}, tmp_path / "cut", device="cpu",
               progress=False)
    meta = fit_varnet(data, SPEC, cfg, tmp_path / "cut", device="cpu", progress=False)
    assert meta["step"] == 4
    a, b = load_checkpoint(tmp_path / "full")[0], load_checkpoint(tmp_path / "cut")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k.startswith("model.sens_net.") for k in a) and any(k.startswith("model.cascades.0.") for k in a)


def test_varnet_reconstruct_rejects_single_coil_kspace():
    from diffrecon.baselines.varnet import varnet_reconstruct

    net = fastmri_models.VarNet(num_cascades=1, sens_chans=2, sens_pools=1, chans=2, pools=1)
    with pytest.raises(ValueError, match=r"multi-coil k-space \(S, C, H, W\)"):
        varnet_reconstruct(np.zeros((2, N, N), np.complex64), np.ones((N, N)), net)


def test_streamed_set_is_the_in_memory_set_and_trains_to_the_same_weights(tiny, tmp_path):
    from diffrecon.baselines.varnet import MultiCoilSlices, multicoil_slices, train_varnet

    manifest = tiny[1]
    stream, memory = MultiCoilSlices(manifest), multicoil_slices(manifest)
    assert len(stream) == len(memory) == 12 and stream.sample_shape == tuple(memory.shape[1:])
    assert torch.equal(stream[7], memory[7])
    cfg = {"model": {"cascades": 1, "chans": 2, "pools": 1, "sens_chans": 2, "sens_pools": 1},
           "train": {"steps": 2, "batch_size": 2, "checkpoint_every": 2, "warmup": 1}}
    a = train_varnet(manifest, SPEC, cfg, tmp_path / "memory", device="cpu", progress=False)
    b = train_varnet(manifest, SPEC, {**cfg, "train": {**cfg["train"], "loader": "stream"}}, tmp_path / "stream",
                     device="cpu", progress=False)
    assert a["data_hash"] == b["data_hash"] == stream.data_hash() and a["config_hash"] == b["config_hash"]
    ta, tb = load_checkpoint(tmp_path / "memory")[0], load_checkpoint(tmp_path / "stream")[0]
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_single_coil_files_are_refused_for_varnet_training(tmp_path):
    from diffrecon.baselines.varnet import MultiCoilSlices
    from diffrecon.data.fastmri import write_volume

    path = write_volume(tmp_path / "sc.h5", np.ones((2, N, N), np.complex64), np.ones((2, N, N), np.float32))
    with pytest.raises(Exception, match="sc.h5: E2E-VarNet trains on multi-coil k-space"):
        MultiCoilSlices({"name": "sc", "splits": {"train": [str(path)]}})
