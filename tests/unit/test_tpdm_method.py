"""TPDM as a CT method: the perpendicular prior's training set and training, and the runner end to
end on a tiny volume with two barely trained networks."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from diffrecon import methods
from diffrecon.data.datasets import prepare_dataset
from diffrecon.data.training_sets import ct_perpendicular_slices
from diffrecon.models.loading import load_ct_prior
from diffrecon.models.recipes import perp_window, train_ct_prior

TINY_NET = {"channels": [8, 16], "attention": [False, False], "layers_per_block": 1, "norm_num_groups": 4}
TRAIN = {"steps": 20, "batch_size": 4, "lr": 1e-3, "warmup": 2, "checkpoint_every": 10, "seed": 0}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def thorax(tmp_path_factory):
    out = tmp_path_factory.mktemp("thorax")
    cfg = {"modality": "ct", "source": "demo", "size": 16, "slices": 27, "volumes": {"train": 1, "test": 1}}
    return prepare_dataset("thorax", cfg, out, seed=0)


def test_perpendicular_slices_hold_z_windows(thorax):
    from diffrecon.data.training_sets import ct_slices

    vol = ct_slices(thorax)[:, 0]                                   # (27, 16, 16)
    data = ct_perpendicular_slices(thorax, 24)
    assert data.shape == (4 * 2 * 16, 1, 24, 16)                   # 4 window starts × (coronal + sagittal) × 16
    assert torch.equal(data[0, 0], vol[0:24, 0, :])                # coronal row 0, window 0
    assert torch.equal(data[16 + 5, 0], vol[0:24, :, 5])           # sagittal column 5, window 0
    assert torch.equal(data[-1, 0], vol[3:27, :, 15])
    assert perp_window({"model": TINY_NET}, 27) == 26 and perp_window({"model": {"channels": [8, 8, 8, 8]}}, 27) == 24
    with pytest.raises(ValueError, match="z_window"):
        perp_window({"model": TINY_NET, "z_window": 7}, 27)
    with pytest.raises(ValueError, match="fewer slices than the z window of 28.*no train volume is long enough"):
        ct_perpendicular_slices(thorax, 28)


def test_perpendicular_set_leaves_out_short_volumes(tmp_path, caplog):
    """Real scans differ in length: a volume shorter than the z window is left out, with a warning."""
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate((30, 20)):
        paths.append(str(tmp_path / f"v{i}.npy"))
        np.save(paths[-1], rng.random((n, 16, 16), dtype=np.float32))
    manifest = {"name": "mixed", "modality": "ct", "splits": {"train": paths}}
    with caplog.at_level("WARNING", logger="diffrecon"):
        data = ct_perpendicular_slices(manifest, 24)
    assert data.shape == (7 * 2 * 16, 1, 24, 16)                   # the 30-slice volume only: window starts 0 … 6
    assert torch.equal(data[0, 0], torch.from_numpy(np.load(paths[0])[0:24, 0, :]))
    assert "1 volume(s) with fewer slices than the z window of 24 (20 slices)" in caplog.text


def test_perpendicular_prior_trains_and_round_trips(thorax, tmp_path):
    cfg = {"model": TINY_NET, "z_window": 24, "train": TRAIN}
    meta = train_ct_prior(thorax, cfg, tmp_path / "perp", "slice_perp", device="cpu", progress=False)
    assert meta["step"] == 20 and meta["kind"] == "slice_perp" and meta["z_window"] == 24 and meta["image_size"] == 16
    assert meta["loss_history"][-1][1] < meta["loss_history"][0][1]
    net, process, meta2 = load_ct_prior(tmp_path / "perp")
    out = net(torch.zeros(2, 1, 24, 16), torch.tensor([10, 10]))
    assert out.shape == (2, 1, 24, 16) and torch.isfinite(out).all()


def test_tpdm_runs_through_the_pipeline(thorax, tmp_path):
    """Two barely trained priors, a few steps: a finite volume of the right shape, the auxiliary
    prior used, the data consistency pulling towards the data, γ converted; a missing or wrong
    axial prior is refused in one line."""
    from diffrecon.physics.ct import ParallelBeamCT
    from diffrecon.settings import CTSetting
    from diffrecon.stages.reconstruct import reconstruct
    from diffrecon.stages.simulate import simulate_ct

    setting = CTSetting.parse("sv8")
    simulate_ct(thorax, setting, tmp_path / "meas.h5", tmp_path / "target.h5", n_threads=1)
    small = {"steps": 4, "batch_size": 2, "checkpoint_every": 4}
    train_ct_prior(thorax, {"model": TINY_NET, "z_window": 24, "train": small}, tmp_path / "perp", "slice_perp",
                   device="cpu", progress=False)
    train_ct_prior(thorax, {"model": TINY_NET, "train": small}, tmp_path / "axial", "slice", device="cpu",
                   progress=False)
    params = {"n_steps": 6, "aux_every": 2, "alternation": "periodic", "progress": False, "n_threads": 1,
              "batch_limit": 5, "axial_model": str(tmp_path / "axial"), "dc": "proximal"}
    reconstruct(tmp_path / "meas.h5", "tpdm", tmp_path / "recon.h5", params, model=tmp_path / "perp")
    with h5py.File(tmp_path / "recon.h5") as f:
        (case,) = list(f["cases"])
        rec = f["cases"][case]["reconstruction"][()]
        assert f["cases"][case].attrs["nfe"] == 6
        used = json.loads(f.attrs["sampler_params"])
    assert used["z_window"] == 24 and used["batch_limit"] == 5
    assert used["gamma"] == pytest.approx(np.pi / 16 * 256 / 16)          # γ_o·π/(2V)·256/n
    with h5py.File(tmp_path / "meas.h5") as f:
        sino = f["cases"][case]["sinogram"][()]
    assert rec.shape == (27, 16, 16) and np.isfinite(rec).all()
    with ParallelBeamCT(setting.geometry(16), n_threads=1) as op:
        assert np.linalg.norm(op.forward_np(rec) - sino) < 0.9 * np.linalg.norm(sino)
    # the original's data consistency (the default): DPS through both priors, ζ unconverted
    reconstruct(tmp_path / "meas.h5", "tpdm", tmp_path / "dps.h5", {k: v for k, v in params.items() if k != "dc"},
                model=tmp_path / "perp")
    with h5py.File(tmp_path / "dps.h5") as f:
        used = json.loads(f.attrs["sampler_params"])
        rec = f["cases"][case]["reconstruction"][()]
        assert f["cases"][case].attrs["nfe"] == 6
    assert used["dc"] == "dps" and used["zeta"] == 0.1 and rec.shape == (27, 16, 16) and np.isfinite(rec).all()
    with pytest.raises(ValueError, match="axial_model"):
        reconstruct(tmp_path / "meas.h5", "tpdm", tmp_path / "bad.h5", {**params, "axial_model": None},
                    model=tmp_path / "perp")
    with pytest.raises(ValueError, match="'slice' prior"):
        reconstruct(tmp_path / "meas.h5", "tpdm", tmp_path / "bad.h5", {**params, "axial_model": str(tmp_path / "perp")},
                    model=tmp_path / "perp")
    assert not (tmp_path / "bad.h5").exists()
    assert methods.get("tpdm").extra_models == {"axial_model": "ct_slice"}
