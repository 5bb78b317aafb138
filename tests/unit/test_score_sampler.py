"""score-MRI sampler: analytic Gaussian posteriors, data consistency, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.diffusion.sde import VESDE
from diffrecon.physics.fft import fft2c, ifft2c
from diffrecon.physics.mri import MultiCoilMRI, SingleCoilMRI
from diffrecon.samplers.score_mri import (
    SamplerConfig,
    ScoreMRISampler,
    acs_reference,
    magnitude,
    sense_correction,
    slice_peak,
)

H = W = 8


def gaussian_score(mu: torch.Tensor, tau: float):
    """Exact score of N(mu, tau^2 I) convolved with N(0, sigma^2 I): -(x - mu) / (tau^2 + sigma^2)."""

    def score(x, sigma):
        return -(x - mu) / (tau ** 2 + sigma.view(-1, 1, 1, 1) ** 2)

    return score


def symmetric_column_mask(keep: list[int]) -> torch.Tensor:
    """Column mask closed under k -> -k on the centred grid (so real images stay real under DC)."""
    m = torch.zeros(H, W)
    for c in keep:
        m[:, c] = 1
        m[:, (W - c) % W] = 1          # column c holds frequency c - W/2; -(c - W/2) sits at W - c
    return m


@pytest.mark.parametrize("algorithm, n_corrector", [("real", 1), ("complex", 1), ("complex", 0)])
def test_posterior_matches_the_gaussian_closed_form(algorithm, n_corrector):
    """Prior x ~ N(mu, tau^2 I) per real part; y = M F x_true, noise-free.

    The posterior keeps the measured frequencies and draws the unmeasured ones from the prior:
    mean = F^-1[y + (1 - M) F mu], per-pixel variance of each real part = tau^2 (1 - mean(M)).
    """
    torch.manual_seed(0)
    tau, K = 0.5, 400
    mu_real = torch.rand(H, W, dtype=torch.float64)
    mask = symmetric_column_mask([4, 5]) if algorithm == "real" else (torch.rand(H, W) < 0.4).double()
    if algorithm == "real":
        mu = mu_real
        x_true = mu_real + tau * torch.randn(H, W, dtype=torch.float64)
        prior_mean = torch.complex(mu_real, torch.zeros_like(mu_real))
    else:
        mu_imag = torch.rand(H, W, dtype=torch.float64) - 0.5
        mu = None
        x_true = torch.complex(mu_real + tau * torch.randn(H, W, dtype=torch.float64),
                               mu_imag + tau * torch.randn(H, W, dtype=torch.float64))
        prior_mean = torch.complex(mu_real, mu_imag)
    y = mask * fft2c(torch.as_tensor(x_true, dtype=torch.complex128))
    if algorithm == "real":
        score = gaussian_score(mu.view(1, 1, H, W), tau)
    else:
        # the batch interleaves real and imaginary parts of each image: (re, im, re, im, ...)
        mus = torch.stack([mu_real, mu_imag]).view(2, 1, H, W)

        def score(x, sigma):
            m = mus.repeat(x.shape[0] // 2, 1, 1, 1)
            return -(x - m) / (tau ** 2 + sigma.view(-1, 1, 1, 1) ** 2)

    sde = VESDE(0.005, 20.0)
    # the published algorithm (no reference): the prior is on x itself
    sampler = ScoreMRISampler(score, sde, SamplerConfig(n_steps=300, snr=0.16, n_corrector=n_corrector, progress=False,
                                                        seed=3, phase_reference="none"))
    samples = sampler.sample(y.expand(K, H, W).contiguous(), SingleCoilMRI(mask), algorithm)   # K draws
    post_mean = ifft2c(y + (1 - mask) * fft2c(prior_mean))
    post_var = tau ** 2 * (1 - mask.mean())
    err_mean = (samples.mean(0) - post_mean).abs().max()
    emp_var = samples.real.var(0).mean()
    assert err_mean < 4 * float(post_var.sqrt()) / np.sqrt(K) + 0.02
    assert emp_var == pytest.approx(float(post_var), rel=0.12)
    # measured frequencies are exact
    assert torch.allclose(mask * fft2c(samples[0]), y, atol=1e-6) or algorithm == "real"


def test_data_consistency_is_an_idempotent_projection():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, H, W, dtype=torch.complex128, generator=g)
    x_true = torch.randn(3, H, W, dtype=torch.complex128, generator=g)
    mask = (torch.rand(H, W, generator=g) < 0.3).double()
    op = SingleCoilMRI(mask)
    y = op.A(x_true)
    once = op.project(x, y)
    assert torch.allclose(op.project(once, y), once, atol=1e-12)
    assert torch.allclose(op.A(once), y, atol=1e-12)                     # measured samples are y
    # unmeasured frequencies untouched
    assert torch.allclose((1 - mask) * fft2c(once), (1 - mask) * fft2c(x), atol=1e-12)
    # the hand-written formula F^-1[(1 - lam M) F x + lam y]
    for lam in (1.0, 0.3):
        k = fft2c(x)
        assert torch.equal(op.project(x, y, lam), ifft2c(k - lam * mask * k + lam * y))


@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_data_consistency_of_batched_coils_equals_per_coil(lam):
    """The sampler's DC on (S, C, H, W) coil images is the per-coil DC, bit for bit."""
    g = torch.Generator().manual_seed(8)
    S, C = 2, 3
    mask = (torch.rand(H, W, generator=g) < 0.4).float()
    op = SingleCoilMRI(mask)
    x = torch.randn(S, C, H, W, dtype=torch.complex64, generator=g)
    y = op.A(torch.randn(S, C, H, W, dtype=torch.complex64, generator=g))
    batched = op.project(x, y, lam)
    per_coil = torch.stack([op.project(x[:, c], y[:, c], lam) for c in range(C)], dim=1)
    assert batched.shape == (S, C, H, W)
    assert torch.equal(batched, per_coil)


@pytest.mark.parametrize("reference", ["acs", "none"])
def test_full_mask_returns_the_data(reference):
    g = torch.Generator().manual_seed(2)
    x_true = torch.randn(2, H, W, dtype=torch.complex128, generator=g)
    y = fft2c(x_true)
    mask = torch.ones(H, W, dtype=torch.float64)

    def junk_score(x, sigma):        # a useless prior: DC alone must recover the data
        return torch.randn_like(x)

    sampler = ScoreMRISampler(junk_score, VESDE(0.01, 5.0), SamplerConfig(n_steps=5, progress=False,
                                                                         phase_reference=reference))
    out = sampler.sample(y, SingleCoilMRI(mask), "complex")
    assert torch.allclose(out, x_true, atol=1e-10)
    out = sampler.sample(fft2c(x_true.unsqueeze(0)), SingleCoilMRI(mask), "ssos")      # Alg. 4 with 2 "coils"
    assert torch.allclose(out[0], x_true, atol=1e-10)


def test_acs_reference_makes_a_smooth_phase_image_real_positive_and_unit_peak():
    n = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n, dtype=torch.float64),
                            torch.linspace(-1, 1, n, dtype=torch.float64), indexing="ij")
    obj = ((xx ** 2 / 0.7 + yy ** 2 / 0.5) < 1).double() * (0.6 + 0.4 * (yy > 0).double())
    phase = 2.4 + 0.8 * xx - 0.5 * yy ** 2                           # far from 0, smooth
    x = 0.37 * obj * torch.exp(1j * phase)
    y = fft2c(x)
    z = x / acs_reference(y, SingleCoilMRI(torch.ones(n, n, dtype=torch.float64)), 8)
    inside = obj > 0
    residual = z.angle()[inside].abs()                                 # phase left after the reference
    assert residual.mean() < 0.15 and residual.max() < 0.6             # 8 ACS lines: a coarse but smooth phase
    assert z.real[inside].min() > 0
    assert z.abs().max() == pytest.approx(1.0, rel=0.01)              # the zero-filled (here full) peak
    assert (x.real[inside] < 0).any()                                  # the raw image was not like that


@pytest.mark.parametrize("algorithm", ["complex", "ssos"])
def test_reference_makes_the_sampler_equivariant_to_a_complex_scale(algorithm):
    """With the ACS reference, data c·y give exactly c times the estimate from y (same noise):
    the estimate no longer depends on the arbitrary global phase and scale of the data. The
    published algorithm (no reference) is not equivariant with a prior of positive images."""
    g = torch.Generator().manual_seed(6)
    x_true = torch.rand(1, 2, H, W, dtype=torch.float64, generator=g).to(torch.complex128)
    if algorithm == "complex":
        x_true = x_true[:, 0]
    mask = (torch.rand(H, W, generator=g) < 0.5).double()
    mask[:, W // 2 - 2:W // 2 + 2] = 1
    y = mask * fft2c(x_true)
    c = 0.3 * np.exp(2.1j)

    def score(x, sigma):                                               # a prior of images near 0.5
        return -(x - 0.5) / (0.1 + sigma.view(-1, 1, 1, 1) ** 2)

    for reference, equivariant in (("acs", True), ("none", False)):
        sampler = ScoreMRISampler(score, VESDE(0.01, 5.0), SamplerConfig(n_steps=20, progress=False, acs_width=4,
                                                                         phase_reference=reference))
        op = SingleCoilMRI(mask)
        a, b = sampler.sample(y, op, algorithm, seed=1), sampler.sample(c * y, op, algorithm, seed=1)
        assert torch.allclose(b, c * a, atol=1e-8) == equivariant, reference


def test_unknown_reference_is_rejected():
    sampler = ScoreMRISampler(lambda x, s: x, VESDE(0.01, 1.0), SamplerConfig(n_steps=1, progress=False,
                                                                             phase_reference="bogus"))
    with pytest.raises(ValueError, match="phase_reference"):
        sampler.sample(torch.zeros(1, H, W, dtype=torch.complex64), SingleCoilMRI(torch.ones(H, W)), "complex")


def test_batched_coils_equal_per_coil_runs():
    """One batched call over coils gives the same numbers as reconstructing coils one by one
    when each coil sees the same noise (the algorithm treats coils independently)."""
    g = torch.Generator().manual_seed(4)
    C = 3
    x_true = torch.randn(1, C, H, W, dtype=torch.complex128, generator=g)
    mask = (torch.rand(H, W, generator=g) < 0.5).double()
    y = mask * fft2c(x_true)

    def score(x, sigma):
        return -x / (1 + sigma.view(-1, 1, 1, 1) ** 2)

    cfg = SamplerConfig(n_steps=10, progress=False)
    batched = ScoreMRISampler(score, VESDE(0.01, 5.0), cfg)
    calls = []

    def counting(x, sigma):
        calls.append(x.shape[0])
        return score(x, sigma)

    batched.score_fn = counting
    out = batched.sample(y, SingleCoilMRI(mask), "ssos", seed=7)
    assert set(calls) == {C * 2}           # every call carries all coils' real and imaginary parts
    assert len(calls) == 2 * cfg.n_steps   # one predictor and one corrector call per step
    assert out.shape == y.shape
    mag = magnitude(out, "ssos")
    assert torch.allclose(mag, torch.sqrt((out.abs() ** 2).sum(1)))


def test_sense_correction_reduces_the_sense_residual():
    g = torch.Generator().manual_seed(5)
    C = 4
    maps = torch.randn(C, H, W, dtype=torch.complex128, generator=g)
    maps = maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))
    rho_true = torch.randn(H, W, dtype=torch.complex128, generator=g)
    mask = (torch.rand(H, W, generator=g) < 0.5).double()
    y = (mask * fft2c(maps * rho_true)).unsqueeze(0)
    x = maps * torch.randn(H, W, dtype=torch.complex128, generator=g)
    x = x.unsqueeze(0)

    def resid(v):
        rho = (maps.conj() * v).sum(1, keepdim=True)
        return (y - mask * fft2c(maps * rho)).norm()

    op = MultiCoilMRI(maps, mask)
    after = sense_correction(x, y, op, 1.0)
    assert resid(after) < resid(x)
    # the same numbers as the hand-written SENSE step x + lam S A^H(y - A rho)
    rho = (maps.conj() * x).sum(dim=-3, keepdim=True)
    grad = (maps.conj() * ifft2c(mask * (y - mask * fft2c(maps * rho)))).sum(dim=-3, keepdim=True)
    assert torch.equal(sense_correction(x, y, op, 0.4), x + 0.4 * maps * grad)


def test_sense_correction_with_per_slice_maps_equals_slice_by_slice():
    g = torch.Generator().manual_seed(9)
    S, C = 2, 3
    maps = torch.randn(S, C, H, W, dtype=torch.complex64, generator=g)
    mask = (torch.rand(H, W, generator=g) < 0.5).float()
    x = torch.randn(S, C, H, W, dtype=torch.complex64, generator=g)
    y = mask * fft2c(torch.randn(S, C, H, W, dtype=torch.complex64, generator=g))
    batched = sense_correction(x, y, MultiCoilMRI(maps, mask), 0.5)
    for s in range(S):
        one = sense_correction(x[s:s + 1], y[s:s + 1], MultiCoilMRI(maps[s], mask), 0.5)
        assert torch.equal(batched[s:s + 1], one)


def test_hybrid_needs_a_sense_operator_and_a_mask_needs_an_operator():
    sampler = ScoreMRISampler(lambda x, s: x, VESDE(0.01, 1.0), SamplerConfig(n_steps=1, progress=False))
    y = torch.zeros(1, 2, H, W, dtype=torch.complex64)
    with pytest.raises(ValueError, match="SENSE"):
        sampler.sample(y, SingleCoilMRI(torch.ones(H, W)), "hybrid")
    with pytest.raises(TypeError, match="SingleCoilMRI"):
        sampler.sample(y, torch.ones(H, W), "ssos")


def test_unknown_algorithm_is_rejected():
    sampler = ScoreMRISampler(lambda x, s: x, VESDE(0.01, 1.0), SamplerConfig(n_steps=1, progress=False))
    with pytest.raises(ValueError, match="not one of"):
        sampler.sample(torch.zeros(1, H, W, dtype=torch.complex64), SingleCoilMRI(torch.ones(H, W)), "bogus")


def test_slice_peak_is_the_zero_filled_peak_per_slice():
    """The runner's per-slice scale: peak of |Aᴴ y| per slice (largest coil for multi-coil data)."""
    g = torch.Generator().manual_seed(11)
    mask = (torch.rand(H, W, generator=g) < 0.5).double()
    op = SingleCoilMRI(mask)
    y = op.A(torch.randn(2, 3, H, W, dtype=torch.complex128, generator=g) * torch.tensor([1.0, 0.2]).view(2, 1, 1, 1))
    peak = slice_peak(y, op, multicoil=True)
    assert peak.shape == (2, 1, 1, 1)
    for s in range(2):
        assert float(peak[s]) == pytest.approx(float(op.A_adjoint(y[s]).abs().max()))
    single = slice_peak(y[:, 0], op, multicoil=False)
    assert single.shape == (2, 1, 1)
    assert float(single[1]) == pytest.approx(float(op.A_adjoint(y[1, 0]).abs().max()))
    assert float(slice_peak(torch.zeros_like(y), op, multicoil=True)[0]) == 1.0
