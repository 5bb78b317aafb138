"""The VE-SDE of score-MRI and DiffusionMBIR, and its denoising-score-matching loss.

Expected values come from the definitions (sigma(t) = sigma_min (sigma_max/sigma_min)^t, the
exact score of a point mass, the zero predictor's loss 0.5 * H * W), never from a run of the
code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffrecon.diffusion.sde import VESDE, ve_dsm_loss


# ----------------------------------------------------------------------------------- VESDE
def test_vesde_endpoints_and_geometric_levels():
    sde = VESDE(0.01, 50.0)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    s = sde.sigma(t)
    assert s[0].item() == pytest.approx(0.01, rel=1e-12)
    assert s[1].item() == pytest.approx(math.sqrt(0.01 * 50.0), rel=1e-12)   # geometric midpoint
    assert s[2].item() == pytest.approx(50.0, rel=1e-12)

    n = 7
    levels = sde.discrete_sigmas(n)
    assert levels.shape == (n,) and levels.dtype == torch.float64
    assert levels[0].item() == pytest.approx(0.01, rel=1e-12)
    assert levels[-1].item() == pytest.approx(50.0, rel=1e-12)
    ratios = levels[1:] / levels[:-1]
    expected_ratio = (50.0 / 0.01) ** (1 / (n - 1))
    torch.testing.assert_close(ratios, torch.full((n - 1,), expected_ratio, dtype=torch.float64), rtol=1e-12, atol=0)
    # the discrete levels are sigma(t) on the uniform grid k / (N - 1)
    torch.testing.assert_close(levels, sde.sigma(torch.arange(n, dtype=torch.float64) / (n - 1)), rtol=1e-12, atol=0)

    grid = sde.time_grid(5)
    assert grid[0].item() == 1.0 and grid[-1].item() == pytest.approx(sde.eps)
    assert bool((grid[1:] < grid[:-1]).all())


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (-0.1, 1.0), (1.0, 1.0), (2.0, 1.0), (float("nan"), 1.0)])
def test_vesde_rejects_bad_noise_range(lo, hi):
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(lo, hi)


# ------------------------------------------------------------------------------- DSM loss
class PointMassScore(torch.nn.Module):
    """Exact score of x0 = mu perturbed by N(0, sigma^2 I): -(x - mu) / sigma^2."""

    def __init__(self, mu):
        super().__init__()
        self.mu = mu

    def forward(self, x, sigma):
        return -(x - self.mu) / sigma.view(-1, 1, 1, 1) ** 2


def test_dsm_loss_is_zero_for_the_exact_score_and_half_the_pixels_for_zero():
    loss = ve_dsm_loss(VESDE(0.01, 5.0))
    mu = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x0 = mu.expand(64, -1, -1, -1).contiguous()
    exact = loss(PointMassScore(mu), x0, torch.Generator().manual_seed(0))
    assert exact.item() == pytest.approx(0.0, abs=1e-3)
    zero = loss(lambda x, s: torch.zeros_like(x), x0, torch.Generator().manual_seed(0))
    # 0.5 * E ||z||^2 = 0.5 * 256 for z ~ N(0, I) on 16 x 16 pixels (64 * 256 samples: ~1% spread)
    assert zero.item() == pytest.approx(128.0, rel=0.05)
