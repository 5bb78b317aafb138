"""DPS and DiffPIR (samplers/dps.py, diffpir.py) on Gaussian priors, where the answer is analytic,
and one step of each against deepinv 0.5.0's implementation.

Prior of every slice: N(μ, Σ) on 4 x 4 pixels (smooth, correlated Σ) in the network's scale;
exact x̂0 = E[x0 | x_k] from the prior (VP: the exact ε; VE: the exact score), so every number
the samplers produce can be written out independently here.

* DPS: one step equals the DDPM posterior draw minus ζ times the autograd gradient of
  Σ_s ‖y_s − A u_s(x̂0(x_k))‖ through x̂0 and A (real, magnitude-MRI and SENSE data terms);
  without guidance (ζ = 0) the sample mean is the prior mean; with guidance the residual of
  noise-free data falls to about ζ/2 (the last step's own step), far below the unguided one.
* DiffPIR: the data step with λ = 1 is the exact posterior mean E[x0 | x_k, y] when the prior is
  flat (p(x0 | x_k) = N(x_k, σ_k² I)); a full-rank operator and σ_n → 0 return x = A⁻¹y; the last
  step is the proximal map of x̂0.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diffrecon.diffusion.sde import VESDE
from diffrecon.diffusion.vp import VPSchedule
from diffrecon.physics.mri import MultiCoilMRI, SingleCoilMRI
from diffrecon.physics.operator import LinearOperator
from diffrecon.samplers.data_terms import LinearData, batched_cg
from diffrecon.samplers.denoisers import VEDenoiser, VPDenoiser
from diffrecon.samplers.diffpir import DiffPIRConfig, DiffPIRSampler
from diffrecon.samplers.dps import DPSConfig, DPSSampler

H = W = 4
D = H * W
M = 6
DT = torch.float64


def _prior(seed=0, var=0.25):
    g = torch.Generator().manual_seed(seed)
    yy, xx = np.mgrid[:H, :W]
    p = np.stack([yy.ravel(), xx.ravel()], 1)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    sig = torch.tensor(var * np.exp(-d2 / (2 * 1.5 ** 2)) + 0.01 * var * np.eye(D))
    mu = 0.2 * torch.randn(D, generator=g, dtype=DT)
    return mu, sig


def vp_eps(mu, sig, abar):
    """Exact E[ε | x_t] of x0 ~ N(mu, sig) under the VP process, inputs (B, 1, H, W); differentiable."""
    def fn(x, t, labels=None):
        a = abar[t].to(x).view(-1, 1, 1)
        cov = a * sig + (1 - a) * torch.eye(D, dtype=x.dtype)
        xs = x.reshape(x.shape[0], 1, D)
        e = torch.linalg.solve(cov, (xs - a.sqrt() * mu).transpose(1, 2)).transpose(1, 2)
        return (e * (1 - a).sqrt()).reshape(x.shape)
    return fn


def ve_score(mu, sig):
    """Exact score of x0 + σ z, x0 ~ N(mu, sig), inputs (B, 1, H, W)."""
    def fn(x, sigma):
        cov = sig + float(sigma[0]) ** 2 * torch.eye(D, dtype=x.dtype)
        return -torch.linalg.solve(cov, (x.reshape(x.shape[0], D) - mu).T).T.reshape(x.shape)
    return fn


class MatrixOp(LinearOperator):
    """u (S, H, W) → a @ vec(u) (S, m): differentiable, real."""

    def __init__(self, a):
        self.a = a

    def A(self, u):  # noqa: N802
        return torch.einsum("md,sd->sm", self.a, u.reshape(u.shape[0], -1))

    def A_adjoint(self, r):  # noqa: N802
        return torch.einsum("md,sm->sd", self.a, r).reshape(-1, H, W)


def _matrix(seed=1, rows=M, gain=10.0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, rows, generator=g, dtype=DT))
    return gain * q.T


def _ddpm_posterior(x, x0, a, a1, z):
    """DDPM's q(x_{t−1} | x_t, x0) for one training step, textbook form (β_t = 1 − ᾱ_t/ᾱ_{t−1})."""
    beta = 1 - a / a1
    mean = math.sqrt(a1) * beta / (1 - a) * x0 + math.sqrt(1 - beta) * (1 - a1) / (1 - a) * x
    return mean + math.sqrt((1 - a1) / (1 - a) * beta) * z


# ------------------------------------------------------------------------------------ data terms
def _data_cases():
    g = torch.Generator().manual_seed(3)
    s = 3
    a = _matrix()
    yield "real", LinearData(MatrixOp(a), torch.randn(s, M, generator=g, dtype=DT), 1, 0.5, 0.5), 1
    mask = (torch.rand(H, W, generator=g) < 0.5).to(DT)
    y = SingleCoilMRI(mask).A(torch.randn(s, H, W, generator=g, dtype=DT))
    yield "magnitude", LinearData(SingleCoilMRI(mask), y, 1), 1
    maps = torch.randn(s, 3, H, W, generator=g, dtype=torch.complex128)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    op = MultiCoilMRI(maps, mask)
    y = op.A(torch.randn(s, H, W, generator=g, dtype=torch.complex128))
    ref = torch.exp(1j * torch.rand(s, H, W, generator=g, dtype=DT))
    yield "sense", LinearData(op, y, 2, ref=ref, sub_op=lambda lo, hi: MultiCoilMRI(maps[lo:hi], mask)), 2


@pytest.mark.parametrize("name,data,parts", list(_data_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_norm_gradient_is_the_autograd_gradient(name, data, parts):
    x = torch.randn(data.n_slices * parts, 1, H, W, dtype=DT, generator=torch.Generator().manual_seed(5))
    xr = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(data.residual(xr).sum(), xr)
    f, g = data.norm_grad(x)
    torch.testing.assert_close(f, data.residual(x))
    torch.testing.assert_close(g, expected, rtol=1e-9, atol=1e-12)
    # a selection of slices is the same term restricted
    f1, g1 = data.select(1, 3).norm_grad(x[parts:])
    torch.testing.assert_close(g1, g[parts:])


@pytest.mark.parametrize("name,data,parts", list(_data_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_prox_solves_the_normal_equations(name, data, parts):
    x = torch.randn(data.n_slices * parts, 1, H, W, dtype=DT, generator=torch.Generator().manual_seed(6))
    data.cg_iter = 2 * D
    rho = 0.3
    u = data.to_image(data.prox(x, rho))
    u0 = data.to_image(x)
    lhs = data.op.A_adjoint(data.op.A(u)) + rho * u
    rhs = data.op.A_adjoint(data.y) + rho * u0
    if data.real:
        lhs, rhs = lhs.real, rhs.real
    torch.testing.assert_close(lhs, rhs.to(lhs.dtype), rtol=1e-7, atol=1e-8)


def test_batched_cg_uses_per_slice_steps():
    g = torch.Generator().manual_seed(0)
    mats = [torch.randn(5, 5, generator=g, dtype=DT) for _ in range(2)]
    mats = [m @ m.T + (10.0 ** i) * torch.eye(5, dtype=DT) for i, m in enumerate(mats)]
    b = torch.randn(2, 5, generator=g, dtype=DT)
    x = batched_cg(lambda v: torch.stack([mats[i] @ v[i] for i in range(2)]), b, torch.zeros_like(b), 5)
    for i in range(2):
        torch.testing.assert_close(x[i], torch.linalg.solve(mats[i], b[i]))


# ------------------------------------------------------------------------------------------- DPS
def test_dps_step_is_ddpm_posterior_minus_zeta_times_the_autograd_gradient():
    mu, sig = _prior()
    sched = VPSchedule()
    abar = sched.alphas_cumprod
    times = sched.timesteps(1000)
    k = 500
    den = VPDenoiser(vp_eps(mu, sig, abar), sched, times)
    a_op = _matrix()
    s = 3
    g = torch.Generator().manual_seed(2)
    y = torch.randn(s, M, generator=g, dtype=DT)
    data = LinearData(MatrixOp(a_op), y, 1, 0.5, 0.5)
    x = torch.randn(s, 1, H, W, generator=g, dtype=DT)
    z = torch.randn(s, 1, H, W, generator=g, dtype=DT)
    zeta = 0.7
    sampler = DPSSampler(den, DPSConfig(n_steps=1000, zeta=zeta, batch_limit=2, progress=False))
    out, x0 = sampler.step(x, k, data, z)
    # reference: everything by hand, autograd through ε, Tweedie and A
    t = times[k]
    a, a1 = float(abar[t]), float(abar[t - 1])
    xr = x.clone().requires_grad_(True)
    eps = vp_eps(mu, sig, abar)(xr, torch.full((s,), t))
    x0r = (xr - math.sqrt(1 - a) * eps) / math.sqrt(a)
    r = y - torch.einsum("md,sd->sm", a_op, ((x0r + 1) / 2).reshape(s, -1))
    (grad,) = torch.autograd.grad(r.norm(dim=1).sum(), xr)
    expected = _ddpm_posterior(x, x0r.detach(), a, a1, z) - zeta * grad
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(x0, x0r.detach())
    assert sampler.nfe == 1 and den.network_calls == 2           # 3 slices in chunks of 2


def test_dps_without_guidance_samples_the_prior_mean_and_guidance_fits_the_data():
    mu, sig = _prior()
    sde = VESDE(0.01, 20.0)
    a_op = _matrix(gain=1.0)
    s = 400
    g = torch.Generator().manual_seed(4)
    truth = mu + torch.linalg.cholesky(sig) @ torch.randn(D, generator=g, dtype=DT)
    y = (a_op @ truth).expand(s, M).clone()
    data = LinearData(MatrixOp(a_op), y, 1)
    out = {}
    for zeta in (0.0, 0.05):
        den = VEDenoiser(ve_score(mu, sig), sde, 200)
        sampler = DPSSampler(den, DPSConfig(n_steps=200, zeta=zeta, batch_limit=s, progress=False))
        out[zeta] = sampler.sample(data, (s, 1, H, W), torch.Generator().manual_seed(7)).reshape(s, D)
    mean0 = out[0.0].mean(0)
    se = (sig.diag() / s).sqrt()
    assert float(((mean0 - mu).abs() / se).max()) < 4.5          # unguided: the prior's mean
    res = {z: float((y - out[z] @ a_op.T).norm(dim=1).mean()) for z in out}
    # guided: fits noise-free data up to the last step's own step (its residual is about ζ/2 with
    # a unit-norm guidance direction: the noise-free limit ζ → 0 reaches the data)
    assert res[0.05] < 0.03 * res[0.0], res


# --------------------------------------------------------------------------------------- DiffPIR
def test_diffpir_data_step_is_the_flat_prior_posterior_mean():
    mu, _ = _prior()
    flat = 1e10 * torch.eye(D, dtype=DT)                          # p(x0 | x_k) = N(x_k, σ_k² I)
    sde = VESDE(0.01, 20.0)
    den = VEDenoiser(ve_score(mu, flat), sde, 10)
    a_op = _matrix(gain=2.0)
    g = torch.Generator().manual_seed(8)
    s, sigma_n = 2, 0.3
    y = torch.randn(s, M, generator=g, dtype=DT)
    data = LinearData(MatrixOp(a_op), y, 1, cg_iter=2 * D)
    sampler = DiffPIRSampler(den, DiffPIRConfig(n_steps=10, lam=1.0, zeta=0.5, sigma_n=sigma_n, progress=False))
    x = torch.randn(s, 1, H, W, generator=g, dtype=DT)
    for k in (2, 6):
        sk = den.sigmas[k]
        _, x0 = sampler.step(x, k, data, torch.zeros_like(x))
        prec = a_op.T @ a_op / sigma_n ** 2 + torch.eye(D, dtype=DT) / sk ** 2
        post = torch.linalg.solve(prec, (y @ a_op / sigma_n ** 2 + x.reshape(s, D) / sk ** 2).T).T
        torch.testing.assert_close(x0.reshape(s, D), post, rtol=1e-6, atol=1e-6)
        assert sampler.rho(k) == pytest.approx(sigma_n ** 2 / sk ** 2)


def test_diffpir_recovers_a_full_rank_measurement_and_ends_on_the_prox():
    mu, sig = _prior()
    sched = VPSchedule()
    a_op = _matrix(rows=D, gain=3.0)
    s = 2
    truth = torch.rand(s, D, dtype=DT, generator=torch.Generator().manual_seed(9))
    data = LinearData(MatrixOp(a_op), truth @ a_op.T, 1, 0.5, 0.5, cg_iter=2 * D)
    den = VPDenoiser(vp_eps(mu, sig, sched.alphas_cumprod), sched, sched.timesteps(20))
    sampler = DiffPIRSampler(den, DiffPIRConfig(n_steps=20, lam=7.0, zeta=0.3, sigma_n=1e-6, progress=False))
    out = sampler.sample(data, (s, 1, H, W), torch.Generator().manual_seed(0))
    torch.testing.assert_close(data.to_image(out).reshape(s, D), truth, rtol=1e-6, atol=1e-6)
    assert sampler.nfe == 20
    # the last step: the proximal map of x̂0 with ρ of the last level
    x = torch.randn(s, 1, H, W, dtype=DT, generator=torch.Generator().manual_seed(1))
    sampler.cfg.sigma_n = 0.05
    last, x0p = sampler.step(x, 19, data, torch.zeros_like(x))
    torch.testing.assert_close(last, x0p)
    torch.testing.assert_close(x0p, data.prox(den.x0(x, 19), sampler.rho(19)))


# --------------------------------------------------------------------------- deepinv cross-check
def _load_deepinv(module: str, stubs: dict[str, dict]):
    """One deepinv 0.5.0 module file, loaded without deepinv's package ``__init__`` (which imports
    torchvision, not installable beside the CPU torch): the modules it imports are stubs holding
    the names it takes from them; only the loaded file's own code runs."""
    spec = importlib.util.find_spec("deepinv")
    if spec is None or spec.origin is None:
        pytest.skip("deepinv is not installed (make venv installs deepinv==0.5.0 without dependencies)")
    path = Path(spec.origin).parent / (module.replace(".", "/") + ".py")
    saved = {n: m for n, m in sys.modules.items() if n == "deepinv" or n.startswith("deepinv.")}
    try:
        for n in list(saved):
            del sys.modules[n]
        for name, attrs in stubs.items():
            mod = types.ModuleType(name)
            mod.__dict__.update(attrs)
            sys.modules[name] = mod
        full = "deepinv." + module
        mspec = importlib.util.spec_from_file_location(full, path)
        mod = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(mod)
        return mod
    except Exception as exc:                  # another deepinv version: say why, do not fail
        pytest.skip(f"deepinv's {module} is not loadable here ({exc.__class__.__name__}: {exc})")
    finally:
        for n in [n for n in sys.modules if n == "deepinv" or n.startswith("deepinv.")]:
            del sys.modules[n]
        sys.modules.update(saved)


class _Stub(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()


def test_diffpir_steps_match_deepinv():
    """deepinv's ``DiffPIR`` loop (its own schedule, its [0, 1] denoiser convention, ρ through
    ``prox(gamma = 1/(2ρ))``) against :class:`DiffPIRSampler.step` on the same times: ζ = 0
    (deterministic after the seeded start), 6 iterations, an exact Gaussian prior, a dense
    operator whose L2 prox is solved exactly. deepinv's last iteration does not update x, so its
    output is our state after the first 5 steps."""
    stubs = {"deepinv": {}, "deepinv.models": {"Reconstructor": _Stub, "Denoiser": _Stub},
             "deepinv.sampling": {"BaseSampling": _Stub},
             "deepinv.sampling.sampling_iterators": {"DiffusionIterator": object},
             "deepinv.sampling.diffusion_sde": {n: _Stub for n in ("PosteriorDiffusion", "VariancePreservingDiffusion",
                                                                   "VarianceExplodingDiffusion")},
             "deepinv.sampling.noisy_datafidelity": {"DPSDataFidelity": object},
             "deepinv.sampling.sde_solver": {n: object for n in ("AncestralSolver", "BaseSDESolver", "DDIMSolver",
                                                                 "DDPMSolver", "EulerSolver")}}
    dinv = _load_deepinv("sampling.diffusion", stubs)
    torch.set_default_dtype(torch.float32)
    mu, sig = _prior()
    sched = VPSchedule()
    abar = sched.alphas_cumprod
    eps_fn = vp_eps(mu, sig, abar)
    a_op = _matrix(gain=2.0)
    s, lam, sigma_n, n_iter = 2, 3.0, 0.05, 6
    y = torch.randn(s, M, generator=torch.Generator().manual_seed(3), dtype=DT)
    ref = dinv.DiffPIR(model=None, data_fidelity=None, sigma=sigma_n, max_iter=n_iter, zeta=0.0, lambda_=lam / 2)
    reduced = ref.reduced_alpha_cumprod

    def denoiser(x_aux, sigma):               # deepinv's convention: [0, 1] image, noise std sigma
        t = int(torch.abs(reduced - 2 * sigma).argmin())
        a = float(abar[t])
        xt = math.sqrt(a) * (2 * x_aux.to(DT) - 1)
        x0 = (xt - math.sqrt(1 - a) * eps_fn(xt, torch.full((xt.shape[0],), t))) / math.sqrt(a)
        return ((x0 + 1) / 2).to(x_aux.dtype)

    class L2:                                 # deepinv's L2 prox: argmin γ/2 ‖Ax − y‖² + ½‖x − z‖²
        def prox(self, z, y, physics, gamma):
            m = torch.eye(D, dtype=DT) + float(gamma) * a_op.T @ a_op
            b = z.reshape(s, D).to(DT) + float(gamma) * y.to(DT) @ a_op
            return torch.linalg.solve(m, b.T).T.reshape(z.shape).to(z.dtype)

    physics = types.SimpleNamespace(noise_model=types.SimpleNamespace(sigma=sigma_n))
    ref.model, ref.data_fidelity = denoiser, L2()
    x_init = torch.rand(s, 1, H, W, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(11)
    theirs = ref.forward(y.float(), physics, x_init=x_init).to(DT)
    # ours, on the times deepinv visits, from the same seeded start
    times = [int(torch.abs(reduced - ref.sigmas[int(i)]).argmin()) for i in ref.seq]
    torch.manual_seed(11)
    x = 2 * x_init - 1
    c = (ref.sigmas[ref.seq[0]] ** 2 - 4.0 * sigma_n ** 2).sqrt()
    x = ((x + c * torch.randn_like(x)) / ref.get_alpha_prod()[0][-1]).to(DT)
    den = VPDenoiser(eps_fn, sched, times)
    data = LinearData(MatrixOp(a_op), y, 1, 0.5, 0.5, cg_iter=2 * D)
    sampler = DiffPIRSampler(den, DiffPIRConfig(n_steps=n_iter, lam=lam, zeta=0.0, sigma_n=sigma_n, progress=False),
                             clip=(-1.0, 1.0))
    for k in range(n_iter - 1):
        x, _ = sampler.step(x, k, data, torch.zeros_like(x))
    torch.testing.assert_close((x / 2 + 0.5), theirs, rtol=1e-3, atol=1e-3)


class _Fidelity(nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()
        self.d = None


def test_dps_gradient_matches_deepinv():
    """deepinv's ``DPSDataFidelity.grad`` (∇_x ‖A D(x, σ) − y‖ per image, summed, through the
    denoiser D) against :meth:`DPSSampler.guided_x0` with the VE x̂0 = x + σ² s of an exact
    Gaussian score, at two noise levels."""
    stubs = {"deepinv": {}, "deepinv.optim": {"DataFidelity": _Fidelity},
             "deepinv.optim.linear": {"conjugate_gradient": None}, "deepinv.physics": {"Physics": object},
             "deepinv.models": {"Denoiser": _Stub}}
    dinv = _load_deepinv("sampling.noisy_datafidelity", stubs)
    mu, sig = _prior()
    score = ve_score(mu, sig)
    sde = VESDE(0.01, 20.0)
    den = VEDenoiser(score, sde, 10)
    a_op = _matrix(gain=2.0)
    s = 3
    g = torch.Generator().manual_seed(12)
    y = torch.randn(s, M, generator=g, dtype=DT)
    op = MatrixOp(a_op)
    sampler = DPSSampler(den, DPSConfig(n_steps=10, zeta=1.0, batch_limit=4, progress=False))
    fid = dinv.DPSDataFidelity(denoiser=lambda x, sigma: x + float(sigma) ** 2 * score(x, torch.full((x.shape[0],), float(sigma))),
                               weight=1.0)
    for k in (1, 7):
        x = (den.sigmas[k] * torch.randn(s, 1, H, W, generator=g, dtype=DT)).float()
        theirs = fid.grad(x.clone(), y, op, den.sigmas[k])
        _, _, ours = sampler.guided_x0(x.to(DT), k, LinearData(op, y, 1))
        torch.testing.assert_close(ours, theirs.to(DT), rtol=1e-4, atol=1e-6)
