"""score-MRI samplers against linear-Gaussian posteriors of a CORRELATED prior.

With an isotropic prior the posterior of the unmeasured frequencies is the prior itself, so a
sampler that ignores the data until one final projection passes such tests. Here the prior
couples pixels (a squared-exponential covariance on a 6 × 6 grid), so the posterior mean of the
unmeasured frequencies depends on the measured samples, and only a loop that keeps the
iterates data-consistent while the prior's score acts finds it.

For x ~ N(μ, Σ) and VE noise σ the score is −(Σ + σ² I)⁻¹ (x − μ). The posterior of a Gaussian
under a noise-free linear constraint B v = b is Gaussian with mean m + C Bᵀ (B C Bᵀ)⁺ (b − B m)
and covariance C − C Bᵀ (B C Bᵀ)⁺ B C. Statistics come from K independent chains run as one batch
(the leading axis of y), at the configs' settings: snr 0.16, λ = 1 projections, the ``acs``
phase reference for Alg. 3–5.

Tolerances. The mean is compared as the RMS error over pixels relative to the RMS shift from
prior to posterior mean (what the data teach). With N = 100 steps the correct loops reach a few
per cent (discretisation; Monte-Carlo error ≈ 0.5 %); a Langevin step ten times too small or
data consistency applied only at the end give clearly more. (Predictor and corrector swapped in
Alg. 4/5 leave the mean alone and change the spread: see the test of the last corrector step.)
The covariance is compared through the posterior variance summed over pixels: the projected
(score-POCS) sampler is not an exact posterior sampler for a correlated prior (the unmeasured
part is driven by the score at noise-free measured values), so its variance exceeds the
posterior's by ~10–20 % here; sampling the prior and projecting once would give ~10× the
posterior's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffrecon.samplers.score_mri as score_mri
from diffrecon.diffusion.sde import VESDE
from diffrecon.physics.fft import fft2c
from diffrecon.physics.mri import MultiCoilMRI, SingleCoilMRI
from diffrecon.samplers.pc import langevin, reverse_diffusion
from diffrecon.samplers.score_mri import SamplerConfig, ScoreMRISampler, acs_reference, sense_correction

H = W = 6
NPIX = H * W
SDE = VESDE(0.01, 10.0)


def prior():
    """μ (H·W,) and Σ (H·W, H·W), float64: a squared-exponential covariance (length 1.5 px) plus a nugget."""
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    pts = np.stack([yy.ravel(), xx.ravel()], 1)
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    sigma = 0.08 * np.exp(-d2 / (2 * 1.5 ** 2)) + 0.01 * np.eye(NPIX)
    mu = 0.5 + 0.2 * np.cos(xx.ravel() / 2.0)
    return mu, sigma


def gaussian_score(mu_parts: np.ndarray, sigma: np.ndarray):
    """Exact VE score of N(μ, Σ) for a real batch (B, 1, H, W); ``mu_parts`` (P, H·W) is the mean of
    the batch images in turn (P = 2: real and imaginary parts of one complex image)."""
    ev, u = np.linalg.eigh(sigma)
    u, ev, mus = torch.tensor(u), torch.tensor(ev), torch.tensor(mu_parts)

    def score(x, s):
        m = mus.repeat(x.shape[0] // mus.shape[0], 1)
        c = ((x.reshape(x.shape[0], NPIX) - m) @ u) / (ev + s.view(-1, 1) ** 2)
        return -(c @ u.T).reshape(x.shape)

    return score


def dft_matrix() -> np.ndarray:
    """F as an (H·W, H·W) matrix acting on raveled images (the centred orthonormal DFT)."""
    eye = torch.eye(NPIX, dtype=torch.complex128).reshape(NPIX, H, W)
    return fft2c(eye).reshape(NPIX, NPIX).T.numpy()


def constrained_posterior(m, c, b_mat, b):
    """Mean and covariance of N(m, C) conditioned on B v = b."""
    g = np.linalg.pinv(b_mat @ c @ b_mat.T, rcond=1e-10)
    k = c @ b_mat.T @ g
    return m + k @ (b - b_mat @ m), c - k @ b_mat @ c


def measured_rows(mask: torch.Tensor, lin: np.ndarray, y: np.ndarray):
    """Real constraint rows [Re; Im] of (M · lin) v = y on the measured samples."""
    idx = np.flatnonzero(mask.numpy().ravel())
    rows, vals = lin[idx], y.ravel()[idx]
    return np.concatenate([rows.real, rows.imag]), np.concatenate([vals.real, vals.imag])


def column_mask() -> torch.Tensor:
    """The three central columns (frequencies −1, 0, 1: closed under k → −k, and a fully sampled
    3 × 3 ACS block)."""
    m = torch.zeros(H, W, dtype=torch.float64)
    m[:, 2:5] = 1
    return m


def complex_truth(seed: int, n_coils: int | None = None) -> torch.Tensor:
    """A complex image (or coil images) with a smooth phase far from 0 and a peak of about 0.6."""
    g = np.random.default_rng(seed)
    mu, sigma = prior()
    chol = np.linalg.cholesky(sigma)
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    imgs = []
    for c in range(n_coils or 1):
        mag = (mu + chol @ g.standard_normal(NPIX)).reshape(H, W) * (0.6 if c == 0 else 0.45)
        imgs.append(mag * np.exp(1j * (2.0 + 0.6 * xx - 0.4 * yy + 1.3 * c)))
    x = torch.tensor(np.stack(imgs))
    return x if n_coils else x[0]


def complex_posterior(y: torch.Tensor, mask: torch.Tensor, r: torch.Tensor):
    """Posterior of x = r ⊙ (z_r + i z_i), z_r, z_i ~ N(μ, Σ) independent, given M F x = y: mean and
    covariance of the real vector (Re x, Im x)."""
    mu, sigma = prior()
    f = dft_matrix()
    lin = f @ np.diag(r.numpy().ravel())                              # z ↦ F (r ⊙ z)
    b_mat, b = measured_rows(mask, np.concatenate([lin, 1j * lin], axis=1), y.numpy())
    zero = np.zeros_like(sigma)
    pm, pc = constrained_posterior(np.concatenate([mu, mu * 0]), np.block([[sigma, zero], [zero, sigma]]), b_mat, b)
    # back to x: (Re x, Im x) = T (z_r, z_i), T = [[Re r, −Im r], [Im r, Re r]] pixel-wise
    rr, ri = np.diag(r.real.numpy().ravel()), np.diag(r.imag.numpy().ravel())
    t = np.block([[rr, -ri], [ri, rr]])
    return t @ pm, t @ pc @ t.T


def stats(samples: torch.Tensor, real_only: bool):
    """Sample mean and covariance of K images (K, H, W) as real vectors (Re[, Im])."""
    v = samples.real.reshape(len(samples), NPIX) if real_only else \
        torch.cat([samples.real.reshape(len(samples), NPIX), samples.imag.reshape(len(samples), NPIX)], 1)
    v = v.numpy()
    return v.mean(0), np.cov(v.T)


def mean_error(emp_mean, post_mean, prior_mean):
    """RMS error of the sample mean relative to the RMS shift from prior to posterior mean."""
    return np.sqrt(((emp_mean - post_mean) ** 2).mean() / ((post_mean - prior_mean) ** 2).mean())


def config(n_steps=100, **kw) -> SamplerConfig:
    return SamplerConfig(n_steps=n_steps, snr=0.16, dc_lambda=1.0, progress=False, seed=1, **kw)


K = 1500
MEAN_TOL = 0.032
VAR_RANGE = (0.9, 1.35)


def test_real_algorithm_2_finds_the_correlated_posterior():
    mu, sigma = prior()
    g = np.random.default_rng(0)
    x_true = torch.tensor((mu + np.linalg.cholesky(sigma) @ g.standard_normal(NPIX)).reshape(H, W))
    mask = column_mask()
    y = mask * fft2c(x_true.to(torch.complex128))
    b_mat, b = measured_rows(mask, dft_matrix(), y.numpy())
    pm, pc = constrained_posterior(mu, sigma, b_mat, b)
    sampler = ScoreMRISampler(gaussian_score(mu[None], sigma), SDE, config())
    out = sampler.sample(y.expand(K, H, W).contiguous(), SingleCoilMRI(mask), "real")
    em, ec = stats(out, True)
    assert mean_error(em, pm, mu) < MEAN_TOL
    assert VAR_RANGE[0] < np.trace(ec) / np.trace(pc) < VAR_RANGE[1]


@pytest.mark.parametrize("algorithm", ["complex", "ssos"])
def test_complex_algorithms_find_the_correlated_posterior_with_the_acs_reference(algorithm):
    """Alg. 3 (one complex image) and Alg. 4 (two coil images, each its own posterior)."""
    mu, sigma = prior()
    n_coils = 2 if algorithm == "ssos" else None
    x_true = complex_truth(1, n_coils)
    mask = column_mask()
    op = SingleCoilMRI(mask)
    y = mask * fft2c(x_true)
    r = acs_reference(y, op, 3)
    sampler = ScoreMRISampler(gaussian_score(np.stack([mu, 0 * mu]), sigma), SDE,
                              config(phase_reference="acs", acs_width=3))
    out = sampler.sample(y.expand(K, *y.shape).contiguous(), op, algorithm)
    images = [(out, y, r)] if n_coils is None else [(out[:, c], y[c], r[c]) for c in range(n_coils)]
    for o, yc, rc in images:
        pm, pc = complex_posterior(yc, mask, rc)
        prior_mean = np.concatenate([(rc.numpy().ravel() * mu).real, (rc.numpy().ravel() * mu).imag])
        em, ec = stats(o, False)
        assert mean_error(em, pm, prior_mean) < MEAN_TOL
        assert VAR_RANGE[0] < np.trace(ec) / np.trace(pc) < VAR_RANGE[1]


def test_multicoil_estimate_is_the_noise_free_mean_of_the_last_corrector_step():
    """Alg. 4 ends P, DC, C, DC and returns the corrector's noise-free mean x + ε s: at stationarity
    (ε ‖s‖² = 2 r² ‖z‖²) this shrinks the spread about the posterior mean by ≈ (1 − 2 r²)² ≈ 0.90
    in variance. Alg. 3 ends with the predictor's mean at σ_{N−1} → 0 (no shrinkage), so on the
    same single-coil data Alg. 4's variance is ≈ 0.90 times Alg. 3's. (Predictor and corrector
    swapped in Alg. 4 would end with the predictor's mean: ratio ≈ 1.)"""
    mu, sigma = prior()
    x_true = complex_truth(2)
    mask = column_mask()
    op = SingleCoilMRI(mask)
    y = (mask * fft2c(x_true)).expand(K, H, W).contiguous()
    sampler = ScoreMRISampler(gaussian_score(np.stack([mu, 0 * mu]), sigma), SDE,
                              config(phase_reference="acs", acs_width=3))
    var3 = np.trace(stats(sampler.sample(y, op, "complex"), False)[1])
    var4 = np.trace(stats(sampler.sample(y[:, None], op, "ssos")[:, 0], False)[1])
    assert 0.85 < var4 / var3 < 0.95


def pattern_noise(monkeypatch, seed: int = 3):
    """Replace torch.randn by one fixed (H, W) pattern broadcast to any shape: every image of a
    batch (slice, coil, real/imaginary part) then gets the same noise whatever the batch is."""
    pattern = torch.randn(H, W, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def randn(shape, generator=None, dtype=None, device=None):
        return pattern.to(dtype=dtype or torch.float32).expand(tuple(shape)).clone()

    monkeypatch.setattr(torch, "randn", randn)


def test_batched_multicoil_run_equals_per_coil_runs(monkeypatch):
    """Alg. 4 on (S, C, H, W) in one batch gives the numbers of C separate single-coil runs: the
    coils are independent between SENSE corrections, so nothing (a shared step size, a mixed-up
    reshape) may couple them. Same noise for every image (a fixed pattern), so runs of different
    batch sizes are comparable exactly."""
    pattern_noise(monkeypatch)
    mu, sigma = prior()
    x_true = torch.stack([complex_truth(4, 3), complex_truth(5, 3)])               # (S, C, H, W)
    mask = column_mask()
    op = SingleCoilMRI(mask)
    y = mask * fft2c(x_true)
    sampler = ScoreMRISampler(gaussian_score(np.stack([mu, 0 * mu]), sigma), SDE,
                              config(n_steps=20, phase_reference="acs", acs_width=3))
    batched = sampler.sample(y, op, "ssos")
    per_coil = torch.cat([sampler.sample(y[:, c:c + 1], op, "ssos") for c in range(3)], dim=1)
    assert not torch.allclose(batched[:, 0], batched[:, 1])
    torch.testing.assert_close(batched, per_coil, rtol=0, atol=1e-12)


def smooth_maps(n_coils: int) -> torch.Tensor:
    """Coil maps with smooth magnitude and phase, RSS-normalised to 1."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    maps = torch.stack([(1.2 + np.cos(np.pi * c / n_coils) * xx + np.sin(np.pi * c / n_coils) * yy)
                        * torch.exp(1j * (0.7 * c + 0.5 * xx * (c + 1) - 0.3 * yy)) for c in range(n_coils)])
    return maps / torch.sqrt((maps.abs() ** 2).sum(0, keepdim=True))


def test_hybrid_corrects_at_step_0_every_m_steps_and_ends_data_consistent(monkeypatch):
    """Alg. 5 as the original: SENSE corrections at i mod m = 0 (the first at i = 0) with
    λ_i = λ_start + (λ_end − λ_start) i / (N − 1), each moving the coil images towards the SENSE
    data (the residual ‖y − A ρ‖ falls for 0 < λ ≤ 1 and unit-RSS maps); the last correction
    (N divisible by m) is followed by m − 1 steps of per-coil data consistency, so the estimate
    agrees with every coil's measured samples."""
    calls = []

    def spy(x, y, op, lam):
        out = sense_correction(x, y, op, lam)
        resid = [(y - op.A(op.coil_combine(v))).norm() for v in (x, out)]
        calls.append((lam, float(resid[0]), float(resid[1])))
        return out

    monkeypatch.setattr(score_mri, "sense_correction", spy)
    mu, sigma = prior()
    n_coils, n_steps, m = 3, 20, 5
    maps = smooth_maps(n_coils)
    rho = complex_truth(6)
    mask = column_mask()
    mask[:, 0] = 1
    y = (mask * fft2c(maps * rho)).unsqueeze(0)                                     # (1, C, H, W)
    sampler = ScoreMRISampler(gaussian_score(np.stack([mu, 0 * mu]), sigma), SDE,
                              config(n_steps=n_steps, hybrid_every=m, hybrid_lambda=(1.0, 0.2),
                                     phase_reference="acs", acs_width=3))
    out = sampler.sample(y, SingleCoilMRI(mask), "hybrid", sense_op=MultiCoilMRI(maps, mask))
    steps = list(range(0, n_steps, m))                                              # 0, 5, 10, 15
    assert [c[0] for c in calls] == pytest.approx([1.0 + (0.2 - 1.0) * i / (n_steps - 1) for i in steps])
    assert all(after < before for _, before, after in calls)
    torch.testing.assert_close(mask * fft2c(out), y, rtol=0, atol=1e-10)


def test_langevin_step_follows_its_definition():
    """ε = 2 (r ‖z‖ / ‖s‖)² per group of images, x ← x + ε s + sqrt(2ε) z; the mean drops the noise."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, H, W, generator=g, dtype=torch.float64)

    def score(v, sigma):
        return -(v - 0.3) / (0.5 + sigma ** 2)

    out, mean = langevin(score, x, 0.7, 0.16, torch.Generator().manual_seed(1), 1, 2, with_mean=True)
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s = score(x, 0.7)
    for grp in (slice(0, 2), slice(2, 4)):
        eps = 2 * (0.16 * z[grp].norm() / s[grp].norm()) ** 2
        torch.testing.assert_close(mean[grp], x[grp] + eps * s[grp])
        torch.testing.assert_close(out[grp], x[grp] + eps * s[grp] + torch.sqrt(2 * eps) * z[grp])
    p_out, p_mean = reverse_diffusion(score, x, 0.7, 0.5, torch.Generator().manual_seed(1), with_mean=True)
    torch.testing.assert_close(p_mean, x + (0.49 - 0.25) * s)
    torch.testing.assert_close(p_out, p_mean + np.sqrt(0.24) * z)
