"""The sampler steps against diffusers' schedulers (an independent implementation of the same
papers' steps).

VE-SDE (score-MRI, DiffusionMBIR), :mod:`diffrecon.samplers.pc` against
``ScoreSdeVeScheduler`` (score_sde's reverse-diffusion predictor and Langevin corrector):

* predictor ``reverse_diffusion(score, x, σ, σ')``:  x + (σ² − σ'²) s + sqrt(σ² − σ'²) z equals
  ``step_pred`` (mean and sample) when given diffusers' pair σ = σ_k, σ' = σ_{k−1} of its
  discrete table (k = ⌊t (N − 1)⌋, σ_{−1} = 0), the same score values and the same noise;
* corrector ``langevin(score, x, σ, r, batch=B)``:  ε = 2 (r ‖z‖ / ‖s‖)², x + ε s + sqrt(2ε) z
  equals ``step_correct``, which averages the norms over the whole batch (ours with
  ``batch = B``; for a single image the default ``batch = 1`` is the same step);
* schedule: the samplers' σ_i = σ(t_i), t_i = linspace(1, ε, N), equals diffusers' ``sigmas``
  (the network's noise label in score_sde and diffusers). The samplers also take the predictor's
  G_i² = σ_i² − σ_{i+1}² from this table, where score_sde / diffusers take σ_k² − σ_{k−1}² from
  the discrete geometric table σ_k = σ(k / (N − 1)); the two tables differ by a factor
  exp(ln(σ_max/σ_min) · i ε / (N − 1)) ≤ 1 + 1.1e-4, bounded below (docs/crosschecks.md).

The noise: both draw standard normal noise of the sample's shape and dtype from a
``torch.Generator``; two generators seeded alike give both the same noise. The score is the
exact score of Gaussian data N(μ, s0² I) perturbed with σ: −(x − μ) / (s0² + σ²).

VP / DDIM (DDS, DiffusionBlend), :mod:`diffrecon.diffusion.vp` against ``DDIMScheduler``
(linear β 1e-4 … 0.02, T = 1000, ε-prediction, no clipping, ᾱ_{−1} = 1 via
``set_alpha_to_one``, "leading" spacing t = T − T/N, …, 0):

* ``tweedie`` then ``ddim_step(…, eta=0)`` equal ``DDIMScheduler.step(…, eta=0)``
  (``pred_original_sample`` and ``prev_sample``) at every step, and the ᾱ table and the
  sampling times are diffusers';
* η is defined differently. Ours (DDS, DiffusionBlend):
  x_{t'} = sqrt(ᾱ_{t'}) x̂_0 + sqrt(1 − ᾱ_{t'}) (η ξ + sqrt(1 − η²) ε̂), i.e. a noise std
  σ_t = η_DDS sqrt(1 − ᾱ_{t'}). diffusers (Song et al.'s DDIM):
  σ_t = η_DDIM sqrt((1 − ᾱ_{t'}) / (1 − ᾱ_t)) sqrt(1 − ᾱ_t / ᾱ_{t'}), and the ε̂ weight
  sqrt(1 − ᾱ_{t'} − σ_t²) in both. So η_DDIM = η_DDS sqrt((1 − ᾱ_t) / (1 − ᾱ_t / ᾱ_{t'})),
  a step-dependent factor > 1: both agree at η = 0 only, and DDS's η = 0.85 on 200 steps
  is η_DDIM ≈ 0.90 … 3.86 (more noise than DDPM's η_DDIM = 1 on all steps but the last).
  Checked by passing diffusers the converted η and the same noise (η_DDS < 1: at η_DDS = 1,
  fresh noise, diffusers' ε̂ weight is the square root of a rounding-level difference).
"""

from __future__ import annotations

import math

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffrecon.diffusion.sde import VESDE  # noqa: E402
from diffrecon.diffusion.vp import VPSchedule, ddim_step, tweedie  # noqa: E402
from diffrecon.samplers.pc import langevin, reverse_diffusion  # noqa: E402

SIGMA_MIN, SIGMA_MAX, EPS_T, SNR = 0.01, 378.0, 1e-5, 0.16
S0 = 0.3                                                         # data std of the analytic prior


def _mu(shape, dtype):
    """The analytic prior's mean: a smooth image per batch element."""
    h, w = shape[-2:]
    r = torch.linspace(0, 1, h, dtype=dtype)[:, None]
    c = torch.linspace(0, 1, w, dtype=dtype)[None, :]
    return (0.2 + 0.5 * r * c + 0.1 * torch.sin(6 * c)).expand(shape).clone()


def gaussian_score(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Score of N(μ, s0² I) convolved with N(0, σ² I)."""
    return -(x - _mu(x.shape, x.dtype)) / (S0 ** 2 + sigma ** 2)


def _ve_scheduler(n: int):
    sched = diffusers.ScoreSdeVeScheduler(num_train_timesteps=n, snr=SNR, sigma_min=SIGMA_MIN,
                                          sigma_max=SIGMA_MAX, sampling_eps=EPS_T)
    sched.set_timesteps(n)
    sched.set_sigmas(n)
    return sched


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ VE-SDE
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("i", [0, 1, 700, 1998, 1999])
def test_reverse_diffusion_equals_step_pred(i, dtype):
    n = 2000
    sched = _ve_scheduler(n)
    if dtype == torch.float64:
        # diffusers keeps its σ table in float32, where σ² − σ'² loses ~5 digits at σ ≈ σ_max;
        # give it the same table in float64 so that the step formula alone is compared
        sched.discrete_sigmas = VESDE(SIGMA_MIN, SIGMA_MAX, EPS_T).discrete_sigmas(n)
    t = sched.timesteps[i]
    k = int((t * (n - 1)).long())                                # diffusers' discrete index
    sigma = float(sched.discrete_sigmas[k])
    sigma_next = float(sched.discrete_sigmas[k - 1]) if k > 0 else 0.0
    scale = max(sigma, 1.0)
    x = _mu((3, 1, 16, 12), dtype) + scale * torch.randn((3, 1, 16, 12), generator=_gen(1), dtype=dtype)

    ours, ours_mean = reverse_diffusion(gaussian_score, x, sigma, sigma_next, _gen(7), with_mean=True)
    ref = sched.step_pred(gaussian_score(x, sigma), t, x, generator=_gen(7))

    tol = dict(rtol=1e-5, atol=1e-5 * scale) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12 * scale)
    torch.testing.assert_close(ours_mean, ref.prev_sample_mean.to(dtype), **tol)
    torch.testing.assert_close(ours, ref.prev_sample.to(dtype), **tol)


@pytest.mark.parametrize("sigma", [SIGMA_MAX, 1.3, SIGMA_MIN])
def test_langevin_equals_step_correct_single_image(sigma):
    sched = _ve_scheduler(10)
    x = _mu((1, 1, 20, 20), torch.float32) + sigma * torch.randn((1, 1, 20, 20), generator=_gen(2))
    ours = langevin(gaussian_score, x, sigma, SNR, _gen(11))                  # batch = 1 (default)
    ref = sched.step_correct(gaussian_score(x, sigma), x, generator=_gen(11)).prev_sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5 * max(sigma, 1.0))


def test_langevin_batch_means_equal_step_correct():
    """diffusers (like score_sde) takes one step size from the batch-mean norms: ours with
    ``batch = B``; per-image step sizes (``batch = 1``) are a different step."""
    sigma = 2.0
    shape = (4, 1, 16, 16)
    x = _mu(shape, torch.float32) * torch.tensor([0.5, 1.0, 2.0, 4.0]).view(-1, 1, 1, 1) \
        + sigma * torch.randn(shape, generator=_gen(3))
    sched = _ve_scheduler(10)
    ref = sched.step_correct(gaussian_score(x, sigma), x, generator=_gen(5)).prev_sample
    ours = langevin(gaussian_score, x, sigma, SNR, _gen(5), batch=4)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    per_image = langevin(gaussian_score, x, sigma, SNR, _gen(5), batch=1)
    assert not torch.allclose(per_image, ref, rtol=1e-3, atol=1e-3)


def test_sampler_sigmas_are_diffusers_noise_labels_and_close_to_its_discrete_table():
    n = 2000
    sched = _ve_scheduler(n)
    sde = VESDE(SIGMA_MIN, SIGMA_MAX, EPS_T)
    ours = sde.sigma(sde.time_grid(n))                                       # σ_i, i = 0 … N−1
    torch.testing.assert_close(ours, sched.sigmas.to(torch.float64), rtol=2e-6, atol=0.0)
    # the discrete table (float64 here) is the same geometric sequence
    torch.testing.assert_close(sde.discrete_sigmas(n), sched.discrete_sigmas.to(torch.float64), rtol=2e-6, atol=0)

    # predictor: our (σ_i, σ_{i+1}) against diffusers' (σ_k, σ_{k−1}); k = N − 1 − i up to
    # diffusers' float32 rounding of t_i (N − 1), which can lower k by one
    table = sde.discrete_sigmas(n)
    k = torch.arange(n - 1, -1, -1)
    ratio = ours / table[k]
    bound = math.exp(math.log(SIGMA_MAX / SIGMA_MIN) * EPS_T)
    assert float(ratio.min()) >= 1.0 - 1e-12 and float(ratio.max()) <= bound + 1e-12
    g2_ours = ours ** 2 - torch.cat([ours[1:], ours.new_zeros(1)]) ** 2
    g2_ref = table[k] ** 2 - torch.cat([table[k][1:], table.new_zeros(1)]) ** 2
    rel = ((g2_ours - g2_ref) / g2_ref).abs()
    assert float(rel.max()) < 2.2e-4
    k_diffusers = (sched.timesteps * (n - 1)).long()
    assert torch.equal(k_diffusers, k)                                      # k = N − 1 − i


# ------------------------------------------------------------------------------------ VP / DDIM
T = 1000


def _ddim_scheduler(n_steps: int, schedule: VPSchedule | None = None):
    sched = diffusers.DDIMScheduler(num_train_timesteps=T, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                    clip_sample=False, set_alpha_to_one=True, steps_offset=0,
                                    prediction_type="epsilon", timestep_spacing="leading", thresholding=False)
    sched.set_timesteps(n_steps)
    if schedule is not None:           # the same ᾱ numbers in both: the step formula alone is compared
        sched.alphas_cumprod = schedule.alphas_cumprod.clone()
    return sched


def gaussian_eps(x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """Exact ε-prediction for data N(μ, s0² I): E[ε | x_t]."""
    mu = _mu(x.shape, x.dtype)
    a = alpha_bar
    return math.sqrt(1 - a) * (x - math.sqrt(a) * mu) / (a * S0 ** 2 + 1 - a)


def test_vp_alpha_bar_and_timesteps_are_diffusers():
    schedule = VPSchedule()
    for n in (1, 7, 50, 200, 1000):
        sched = _ddim_scheduler(n)
        assert schedule.timesteps(n) == [int(t) for t in sched.timesteps], n
    torch.testing.assert_close(schedule.alphas_cumprod, sched.alphas_cumprod.to(torch.float64), rtol=1e-5, atol=0)
    assert schedule.alpha_bar(-1) == 1.0 == float(sched.final_alpha_cumprod)


@pytest.mark.parametrize("n_steps", [50, 200])
def test_ddim_eta0_equals_diffusers_step(n_steps):
    schedule = VPSchedule()
    sched = _ddim_scheduler(n_steps, schedule)
    times = schedule.timesteps(n_steps)
    shape = (2, 1, 12, 12)
    x = torch.randn(shape, generator=_gen(0), dtype=torch.float64)
    for i, t in enumerate(times):
        a = schedule.alpha_bar(t)
        a_next = schedule.alpha_bar(times[i + 1] if i + 1 < len(times) else -1)
        eps = gaussian_eps(x, a)
        x0 = tweedie(x, eps, a)
        ours = ddim_step(x0, eps, a_next, 0.0)
        ref = sched.step(eps, t, x, eta=0.0)
        torch.testing.assert_close(x0, ref.pred_original_sample, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ours, ref.prev_sample, rtol=1e-10, atol=1e-10)
        x = ours


@pytest.mark.parametrize("eta_dds", [0.85, 0.3])
def test_dds_eta_is_diffusers_eta_times_a_step_factor(eta_dds):
    n_steps = 200
    schedule = VPSchedule()
    sched = _ddim_scheduler(n_steps, schedule)
    times = schedule.timesteps(n_steps)
    shape = (2, 1, 8, 8)
    x = torch.randn(shape, generator=_gen(4), dtype=torch.float64)
    factors = []
    for i, t in enumerate(times[:-1]):
        a, a_next = schedule.alpha_bar(t), schedule.alpha_bar(times[i + 1])
        eps = gaussian_eps(x, a)
        x0 = tweedie(x, eps, a)
        ours = ddim_step(x0, eps, a_next, eta_dds, _gen(100 + i))
        noise = torch.randn(shape, generator=_gen(100 + i), dtype=torch.float64)   # the noise ours drew
        factor = math.sqrt((1 - a) / (1 - a / a_next))
        factors.append(factor)
        ref = sched.step(eps, t, x, eta=eta_dds * factor, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
        plain = sched.step(eps, t, x, eta=eta_dds, variance_noise=noise).prev_sample
        assert not torch.allclose(ours, plain, rtol=1e-6, atol=1e-6)     # same number, other step
        x = ours
    assert min(factors) > 1.0
    if eta_dds == 0.85:      # DDS / DiffusionBlend, 200 steps: above DDPM's noise on all steps but the last
        etas = [eta_dds * f for f in factors]
        assert 0.9 < min(etas) < 0.91 and 3.8 < max(etas) < 3.9
        assert sum(e > 1 for e in etas) == len(etas) - 1
