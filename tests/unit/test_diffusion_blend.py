"""DiffusionBlend machinery: partitions, batched patch scoring, CG / ADMM z-TV, VP DDIM sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffrecon.diffusion.vp import VPSchedule, ddim_step, tweedie
from diffrecon.physics.operator import Gram, LinearOperator
from diffrecon.samplers.admm_tv import ADMMTV, conjugate_gradient, dz, dz_adjoint, soft_threshold
from diffrecon.samplers.blend import (
    adjacent_partition,
    blended_eps,
    choose_partition,
    coverage,
    jump_partition,
    per_patch_eps,
)
from diffrecon.samplers.diffusion_blend import BlendConfig, DiffusionBlendSampler


# ------------------------------------------------------------------------------ partitions
@settings(max_examples=200, deadline=None)
@given(n=st.integers(3, 80), offset=st.integers(0, 2))
def test_adjacent_partition_keeps_every_slice_once(n, offset):
    patches = adjacent_partition(n, offset)
    assert (coverage(patches, n) == 1).all()
    for p in patches:
        assert p.spacing == 1 and p.slices == (p.slices[0], p.slices[0] + 1, p.slices[0] + 2)
        assert 0 <= p.slices[0] and p.slices[2] < n
    start = min(offset, n - 3)                                   # whole patches start at the offset
    assert any(p.slices[0] == start and all(p.keep) for p in patches)
    assert all((p.slices[0] - start) % 3 == 0 for p in patches if all(p.keep) and p.slices[0] >= start)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(3, 80), k=st.integers(1, 5))
def test_jump_partition_keeps_every_slice_once_with_its_spacing(n, k):
    patches = jump_partition(n, k)
    assert (coverage(patches, n) == 1).all()
    for p in patches:
        a, b, c = p.slices
        assert b - a == p.spacing and c - b == p.spacing and 0 <= a and c < n
    # whole blocks of 3k slices are interleaved with spacing k
    n_jump = sum(p.spacing == k for p in patches) if k > 1 else None
    if k > 1:
        assert n_jump == k * (n // (3 * k))


def test_partitions_match_the_original_on_multiples_of_nine():
    assert [p.slices for p in jump_partition(9, 3)] == [(0, 3, 6), (1, 4, 7), (2, 5, 8)]
    assert [(p.slices, p.keep) for p in adjacent_partition(9, 1)] == [
        ((0, 1, 2), (True, False, False)), ((1, 2, 3), (True,) * 3), ((4, 5, 6), (True,) * 3),
        ((6, 7, 8), (False, True, True))]


def test_schedule_alternates_and_adjacent_only_never_jumps():
    rng = np.random.default_rng(0)
    kinds = [choose_partition(i, 27, rng, jump_every=2)[0].spacing for i in range(6)]
    assert kinds == [3, 1, 3, 1, 3, 1]                          # the first step jumps, as the original
    assert all(choose_partition(i, 27, rng, jump_every=0)[0].spacing == 1 for i in range(10))
    offsets = {choose_partition(0, 27, np.random.default_rng(s), 0)[0].keep for s in range(20)}
    assert len(offsets) > 1                                     # the offset is random


def test_too_short_volumes_are_rejected():
    with pytest.raises(ValueError, match="at least 3"):
        adjacent_partition(2, 0)


# ------------------------------------------------------------------------------ batched scoring
def _toy_eps(x, t, labels):
    """Depends on the slice position inside the patch, the label and t: any mix-up shows."""
    w = torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1)
    return torch.tanh(x * w) + labels.view(-1, 1, 1, 1) * 0.1 + t.view(-1, 1, 1, 1) * 1e-3


@pytest.mark.parametrize("n, step", [(27, 0), (27, 1), (29, 0), (31, 1)])
def test_batched_patch_scoring_equals_the_per_patch_loop(n, step):
    x = torch.randn(n, 8, 8, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    patches = choose_partition(step, n, np.random.default_rng(3), jump_every=2)
    calls = []

    def counted(b, t, y):
        calls.append(b.shape[0])
        return _toy_eps(b, t, y)

    batched = blended_eps(x, 500, patches, counted, batch_limit=4)
    assert torch.equal(batched, per_patch_eps(x, 500, patches, _toy_eps))
    assert calls[0] == min(4, len(patches)) and len(calls) == math.ceil(len(patches) / 4)


# ------------------------------------------------------------------------------ CG and ADMM
def test_cg_solves_a_small_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 30, generator=g, dtype=torch.float64)
    spd = m @ m.T + 0.5 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: spd @ v, b, torch.zeros(30, dtype=torch.float64), n_iter=200, tol=1e-12)
    assert torch.linalg.vector_norm(spd @ x - b) < 1e-8 * torch.linalg.vector_norm(b)
    few = conjugate_gradient(lambda v: spd @ v, b, torch.zeros(30, dtype=torch.float64), n_iter=3)
    assert torch.linalg.vector_norm(spd @ few - b) > 1e-3                 # n_iter is honoured


def test_dz_adjoint_is_exact():
    g = torch.Generator().manual_seed(1)
    u, v = (torch.randn(7, 4, 5, generator=g, dtype=torch.float64) for _ in range(2))
    assert torch.sum(dz(u) * v) == pytest.approx(float(torch.sum(u * dz_adjoint(v))), rel=1e-12)
    assert torch.allclose(dz(u)[-1], u[0] - u[-1])                        # circular
    assert torch.equal(soft_threshold(torch.tensor([-2.0, 0.3, 1.5]), 0.5), torch.tensor([-1.5, 0.0, 1.0]))


class _MatrixOp(LinearOperator):
    """A dense matrix acting on flattened volumes of ``shape``."""

    def __init__(self, mat: torch.Tensor, shape):
        self.mat, self.shape = mat, tuple(shape)

    def A(self, u):  # noqa: N802
        return self.mat @ u.reshape(-1)

    def A_adjoint(self, r):  # noqa: N802
        return (self.mat.T @ r).reshape(self.shape)


class _ColumnGram(Gram):
    """AᵀA with the slices as columns (H·W, S), like the sparse CT system matrix."""

    slice_axis = 1

    def __init__(self, op: _MatrixOp):
        self.op = op

    def to_work(self, x):
        return x.reshape(x.shape[0], -1).T.contiguous()

    def from_work(self, w, shape):
        return w.T.reshape(shape).contiguous()

    def apply(self, c):
        return self.to_work(self.op.normal(self.from_work(c, self.op.shape)))


class _ColumnMatrixOp(_MatrixOp):
    def gram(self):
        return _ColumnGram(self)


def _matrix_operator(rows: int, shape, seed=2):
    g = torch.Generator().manual_seed(seed)
    mat = torch.randn(rows, int(np.prod(shape)), generator=g, dtype=torch.float64) / math.sqrt(np.prod(shape))
    return _MatrixOp(mat, shape), mat


def test_one_admm_iteration_lowers_the_ztv_objective():
    shape = (6, 4, 4)
    op, _ = _matrix_operator(40, shape)
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(shape, generator=g, dtype=torch.float64).cumsum(0) / 6
    y = op.A(truth)
    start = truth + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
    admm = ADMMTV(op, y, rho=1.0, lam=0.01, cg_iter=5)
    u = admm(start)
    assert admm.objective(u) < admm.objective(start)
    assert admm.v is not None and admm.w is not None                     # duals carried to the next call
    cg_only = ADMMTV(op, y, rho=0.0, lam=0.0, cg_iter=5)
    assert cg_only.objective(cg_only(start)) < cg_only.objective(start)


@pytest.mark.parametrize("rho,slices", [(1.0, 6), (0.0, 6), (1.0, 1)])
def test_admm_in_column_layout_matches_the_volume_layout(rho, slices):
    """The sparse-matrix layout (slices as columns, D_z as a circulant product) is the same ADMM."""
    shape = (slices, 4, 4)
    vol_op, mat = _matrix_operator(40, shape)
    col_op = _ColumnMatrixOp(mat, shape)
    assert vol_op.gram().slice_axis == 0 and col_op.gram().slice_axis == 1
    g = torch.Generator().manual_seed(5)
    y = vol_op.A(torch.rand(shape, generator=g, dtype=torch.float64))
    starts = [torch.rand(shape, generator=g, dtype=torch.float64) for _ in range(3)]
    vol = ADMMTV(vol_op, y, rho=rho, lam=0.02, cg_iter=4)
    col = ADMMTV(col_op, y, rho=rho, lam=0.02, cg_iter=4)
    for u0 in starts:                                        # duals carried across calls in both
        a, b = vol(u0), col(u0)
        assert b.shape == shape and torch.allclose(a, b, atol=1e-10)
    assert col.objective(b) == pytest.approx(vol.objective(a), rel=1e-10)


@pytest.mark.parametrize("rho", [10.0, 0.0])
def test_admm_on_the_ct_matrix_backend_matches_the_per_slice_backend(rho):
    """ParallelBeamCT: the matrix backend's column layout and the cpu backend's volume layout."""
    from diffrecon.physics.ct import CTGeometry, ParallelBeamCT

    geom = CTGeometry.sparse_view(16, 6)
    x = torch.rand(4, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    with ParallelBeamCT(geom, n_threads=1, backend="matrix") as mat, \
            ParallelBeamCT(geom, n_threads=1, backend="cpu") as ref:
        y = ref.A(x)
        a = ADMMTV(mat, y, rho=rho, lam=0.04, cg_iter=3)(x * 0.5)
        b = ADMMTV(ref, y, rho=rho, lam=0.04, cg_iter=3)(x * 0.5)
    assert a.shape == b.shape == x.shape
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ VP / DDIM sampler
def test_schedule_and_ddim_basics():
    sched = VPSchedule()
    assert sched.timesteps(200)[:3] == [995, 990, 985] and sched.timesteps(200)[-1] == 0
    abar = sched.alphas_cumprod
    assert abar[0] == pytest.approx(1 - 1e-4) and bool((abar[1:] < abar[:-1]).all())
    x0 = torch.randn(4, 4, dtype=torch.float64)
    eps = torch.randn(4, 4, dtype=torch.float64)
    a = sched.alpha_bar(500)
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    assert torch.allclose(tweedie(xt, eps, a), x0)
    assert torch.allclose(ddim_step(x0, eps, 1.0, 0.85), x0)            # ᾱ = 1: the clean image


@pytest.mark.parametrize("prior", ["patch", "slice"])
def test_sampler_reaches_the_gaussian_posterior_mean(prior):
    """Prior x_0 ~ N(mu, tau^2 I) per pixel (in [−1, 1] units, mu the same image on every slice,
    so a patch's ε depends on its own content only). The exact ε is then
    E[ε | x_t] = sqrt(1−ᾱ)(x_t − sqrt(ᾱ) mu)/(ᾱ tau² + 1 − ᾱ). With noise-free y = A u and a hard
    projection (CG to convergence from the Tweedie estimate), the posterior mean of u is
    mu_u + A⁺(y − A mu_u) (isotropic prior), which the mean of K samples must reproduce."""
    shape = (11, 3, 3)                          # 11 slices: edge patches and a jump tail are exercised
    op, mat = _matrix_operator(40, shape, seed=4)
    tau = 0.3
    g = torch.Generator().manual_seed(5)
    mu = 0.4 * torch.randn(shape[1:], generator=g, dtype=torch.float64)
    truth_u = (mu + tau * torch.randn(shape, generator=g, dtype=torch.float64) + 1) / 2
    y = op.A(truth_u)
    sched = VPSchedule()
    labels_seen = set()

    def eps_fn(x, t, labels):
        if labels is not None:
            labels_seen.update(labels.tolist())
        a = sched.alphas_cumprod[t].view(-1, 1, 1, 1).to(x)
        return (1 - a).sqrt() * (x - a.sqrt() * mu) / (a * tau ** 2 + 1 - a)

    K = 60
    samples = []
    for k in range(K):
        cfg = BlendConfig(n_steps=50, eta=0.85, prior=prior, rho=0.0, cg_iter=300, batch_limit=2, seed=k,
                          progress=False)
        sampler = DiffusionBlendSampler(eps_fn, sched, cfg)
        samples.append(sampler.sample(y, op, shape))
    assert sampler.nfe == 50
    if prior == "patch":
        assert labels_seen == {1, 3}
    mean = torch.stack(samples).mean(0)
    mu_u = ((mu + 1) / 2).expand(shape).reshape(-1)
    expected = mu_u + torch.linalg.pinv(mat) @ (y - mat @ mu_u)
    err = (mean.reshape(-1) - expected).abs().max()
    assert err < 4 * (tau / 2) / math.sqrt(K) + 0.02, float(err)
    assert torch.allclose(op.A(samples[0]), y, atol=1e-3)               # measured (to the CG tolerance)
    spread = torch.stack(samples).std(0).mean()
    assert spread > 0.02                                                # samples differ (posterior, not a point)


# ------------------------------------------------------------------------------ DiffusionMBIR (VE)
def test_diffusion_mbir_reaches_the_gaussian_posterior_mean():
    """VE prior x ~ N(mu, tau² I) per pixel, exact score −(x − mu)/(tau² + σ²); with a hard
    projection after every step (rho = 0, CG to convergence) the sample mean must match the
    posterior mean mu + A⁺(y − A mu)."""
    from diffrecon.diffusion.sde import VESDE
    from diffrecon.samplers.diffusion_mbir import DiffusionMBIRSampler, MBIRConfig

    shape = (5, 3, 3)
    op, mat = _matrix_operator(20, shape, seed=6)
    tau = 0.2
    g = torch.Generator().manual_seed(7)
    mu = torch.rand(shape, generator=g, dtype=torch.float64)
    y = op.A(mu + tau * torch.randn(shape, generator=g, dtype=torch.float64))

    def score(x, sigma):
        return -(x - mu[:, None]) / (tau ** 2 + sigma.view(-1, 1, 1, 1) ** 2)

    K, samples = 40, []
    for k in range(K):
        cfg = MBIRConfig(n_steps=150, rho=0.0, lam=0.0, cg_iter=300, final_kaczmarz=False, seed=k, progress=False)
        samples.append(DiffusionMBIRSampler(score, VESDE(0.005, 10.0), cfg).sample(y, op, shape))
    mean = torch.stack(samples).mean(0).reshape(-1)
    expected = mu.reshape(-1) + torch.linalg.pinv(mat) @ (y - mat @ mu.reshape(-1))
    assert (mean - expected).abs().max() < 4 * tau / math.sqrt(K) + 0.02
    assert torch.allclose(op.A(samples[0]), y, atol=1e-3)


def test_diffusion_mbir_final_step_reduces_the_residual():
    from diffrecon.diffusion.sde import VESDE
    from diffrecon.samplers.diffusion_mbir import DiffusionMBIRSampler, MBIRConfig

    shape = (4, 3, 3)
    op = _MatrixOp(_matrix_operator(12, shape, seed=8)[1].abs(), shape)   # non-negative, like a projector
    y = op.A(torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9)))
    res = {}
    for final in (False, True):
        cfg = MBIRConfig(n_steps=5, rho=10.0, lam=0.04, cg_iter=1, final_kaczmarz=final, seed=0, progress=False)
        out = DiffusionMBIRSampler(lambda x, s: -x, VESDE(0.01, 1.0), cfg).sample(y, op, shape)
        res[final] = float(torch.linalg.vector_norm(op.A(out) - y))
    assert res[True] < res[False]
