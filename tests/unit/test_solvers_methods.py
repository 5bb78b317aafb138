"""Methods dps / diffpir (MRI, every coil mode) and dps_ct / diffpir_ct (CT, sparse view and
limited angle) end to end on tiny random priors: shapes, NFE, blocks of slices reproduce the
whole volume, a memory budget changes nothing but rounding, wrong priors are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon import methods
from diffrecon.errors import CheckpointError
from diffrecon.methods.runner import Problem, SliceBlock

TINY_MODEL = {"channels": [8, 16], "attention": [False, True], "norm_num_groups": 4, "layers_per_block": 1}
N = 16
FAST = {"n_steps": 3, "progress": False, "seed": 2}


def _save(stem, network, meta):
    from diffrecon.models.checkpoint import prefixed, save_checkpoint

    return save_checkpoint(stem, prefixed("model", network.state_dict()), meta)


@pytest.fixture(scope="module")
def priors(tmp_path_factory):
    from diffrecon.models.recipes import noise_network, score_network

    out = tmp_path_factory.mktemp("solver_priors")
    torch.manual_seed(0)
    _save(out / "score", score_network({"model": TINY_MODEL}, N),
          {"method": "score_mri", "model": TINY_MODEL, "sde": {"sigma_min": 0.01, "sigma_max": 2.0}, "image_size": N})
    for kind, ch, labels in (("slice", 1, None), ("patch", 3, 4)):
        torch.manual_seed(1)
        meta = {"kind": kind, "model": TINY_MODEL, "image_size": N,
                "schedule": {"beta_start": 1e-4, "beta_end": 0.02, "n_train_steps": 1000}}
        if kind == "patch":
            meta["spacings"] = [1, 3]
        _save(out / kind, noise_network({"model": TINY_MODEL}, N, ch, labels), meta)
    return out


def _mask():
    mask = np.zeros((N, N), np.float32)
    mask[:, [0, 3, 6, 7, 8, 9, 12]] = 1
    return mask


def _mri(coil_mode, slices=4, seed=0):
    """Masked k-space of smooth complex images (coil images under 4 smooth maps for multi-coil)."""
    from diffrecon.physics.fft import fft2c

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:N, :N] / N
    img = np.stack([np.exp(-((yy - 0.5) ** 2 + (xx - 0.4 - 0.05 * s) ** 2) / 0.05) for s in range(slices)])
    img = img * (np.exp(1j * (0.3 + xx)) if coil_mode != "magnitude" else 1.0)
    if coil_mode == "multicoil":
        maps = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5) for cy, cx in
                         ((0, 0), (0, 1), (1, 0), (1, 1))]).astype(np.complex64)
        img = img[:, None] * maps[None]
    k = fft2c(torch.from_numpy(img.astype(np.complex64))).numpy()
    k = k + 0.01 * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    return (k * _mask()).astype(np.complex64)


def _problem(coil_mode):
    return Problem("mri", f"gaussian1d-R4-acs0.25-{coil_mode}", mask=_mask(), coil_mode=coil_mode, acs_width=4)


def test_registry_has_both_solvers_in_both_modalities():
    for name, modality, model in (("dps", "mri", "score_mri"), ("diffpir", "mri", "score_mri"),
                                  ("dps_ct", "ct", "ct_slice"), ("diffpir_ct", "ct", "ct_slice")):
        m = methods.get(name, modality)
        assert m.kind == "diffusion" and m.model == model and m.module == "diffrecon.methods.solvers"
    assert methods.get("dps").paper_n_steps() == 1000 and methods.get("diffpir").paper_n_steps() == 100
    assert methods.get("dps").defaults["zeta"] == 1.0
    assert {"lam", "zeta", "sigma_n"} <= set(methods.get("diffpir_ct").defaults)


@pytest.mark.parametrize("coil_mode", ["magnitude", "singlecoil", "multicoil"])
@pytest.mark.parametrize("name", ["dps", "diffpir"])
def test_mri_runner_reconstructs_every_coil_mode(priors, name, coil_mode):
    k = _mri(coil_mode)
    with methods.build_runner(name, _problem(coil_mode), FAST, priors / "score") as runner:
        out = runner(k, SliceBlock("vol0", 0))
    assert out.reconstruction.shape == (4, N, N) and np.isfinite(out.reconstruction).all()
    assert out.nfe == 3 and out.network_seconds > 0
    assert (out.reconstruction >= 0).all()


@pytest.mark.parametrize("name", ["dps", "diffpir"])
def test_mri_block_of_slices_is_the_whole_volumes_and_budget_changes_nothing(priors, name):
    k = _mri("singlecoil", slices=5)
    with methods.build_runner(name, _problem("singlecoil"), {**FAST, "batch_limit": 4}, priors / "score") as r:
        whole = r(k, SliceBlock("vol0", 0)).reconstruction
        block = r(k[2:5], SliceBlock("vol0", 2)).reconstruction
        other = r(k, SliceBlock("vol1", 0)).reconstruction
    np.testing.assert_allclose(block, whole[2:5], rtol=1e-4, atol=1e-5)
    assert not np.allclose(other, whole)                       # noise seeded per volume
    with methods.build_runner(name, _problem("singlecoil"), {**FAST, "memory_budget_gb": 0.002},
                              priors / "score") as r:
        assert r.batch_limit >= 1 and r.sampler_params["batch_limit"] == r.batch_limit
        budget = r(k, SliceBlock("vol0", 0)).reconstruction
    np.testing.assert_allclose(budget, whole, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("setting", ["sv8", "la90"])
@pytest.mark.parametrize("name", ["dps_ct", "diffpir_ct"])
def test_ct_runner_reconstructs_sparse_view_and_limited_angle(priors, name, setting):
    from diffrecon.physics.ct import CTGeometry, ParallelBeamCT

    geom = CTGeometry.sparse_view(N, 8) if setting == "sv8" else CTGeometry.limited_angle(N, 90)
    yy, xx = np.mgrid[:N, :N] / N
    vol = np.stack([((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.1 + 0.01 * s) * 0.8 for s in range(3)]).astype(np.float32)
    with ParallelBeamCT(geom) as op:
        sino = op.forward_np(vol)
    problem = Problem("ct", setting, geometry=geom, limited_angle=setting.startswith("la"))
    with methods.build_runner(name, problem, {**FAST, "batch_limit": 2}, priors / "slice") as runner:
        out = runner(sino)
    assert out.reconstruction.shape == (3, N, N) and np.isfinite(out.reconstruction).all()
    assert out.nfe == 3


def test_ct_runner_refuses_a_patch_prior(priors):
    from diffrecon.physics.ct import CTGeometry

    problem = Problem("ct", "sv8", geometry=CTGeometry.sparse_view(N, 8))
    with pytest.raises(CheckpointError, match="needs a 'slice' prior"):
        methods.build_runner("dps_ct", problem, FAST, priors / "patch")


def test_mri_runner_refuses_k_space_of_the_wrong_shape(priors):
    with methods.build_runner("diffpir", _problem("multicoil"), FAST, priors / "score") as runner:
        with pytest.raises(ValueError, match=r"must be \(S, C, H, W\)"):
            runner(_mri("magnitude"))
