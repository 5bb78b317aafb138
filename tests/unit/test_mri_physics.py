"""Tests for the centred FFT, the single-/multi-coil MRI operators, RSS and coil maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffrecon.physics import (
    MultiCoilMRI,
    SingleCoilMRI,
    birdcage_maps,
    dot_test,
    espirit_maps,
    fft2c,
    ifft2c,
    make_mask,
    rss,
)


def _crandn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    """Complex128 standard normal tensor."""
    return torch.from_numpy(rng.standard_normal(shape) + 1j * rng.standard_normal(shape))


def _random_mask(rng: np.random.Generator, h: int, w: int, p: float = 0.4) -> np.ndarray:
    return (rng.random((h, w)) < p).astype(np.float32)


# ----------------------------------------------------------------------------- FFT


@pytest.mark.parametrize("shape", [(8, 8), (7, 10), (2, 3, 9, 5)])
def test_fft2c_matches_numpy_centred_ortho_dft(shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    ax = (-2, -1)
    expected = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)
    got = fft2c(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)

    expected_inv = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=ax), axes=ax, norm="ortho"), axes=ax)
    np.testing.assert_allclose(ifft2c(torch.from_numpy(x)).numpy(), expected_inv, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(16, 16), (9, 12)])
def test_ifft2c_inverts_fft2c_and_is_unitary(shape):
    x = _crandn(np.random.default_rng(1), 3, *shape)
    k = fft2c(x)
    torch.testing.assert_close(ifft2c(k), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(fft2c(ifft2c(x)), x, rtol=0, atol=1e-12)
    assert abs(float(torch.linalg.vector_norm(k)) / float(torch.linalg.vector_norm(x)) - 1) < 1e-12


def test_fft2c_puts_dc_at_centre_index():
    h, w = 10, 7
    k = fft2c(torch.ones(h, w, dtype=torch.complex128))
    assert abs(complex(k[h // 2, w // 2]) - np.sqrt(h * w)) < 1e-10
    k[h // 2, w // 2] = 0
    assert float(k.abs().max()) < 1e-10


# ----------------------------------------------------------------------------- operators


def test_single_coil_dot_test_complex128():
    rng = np.random.default_rng(2)
    op = SingleCoilMRI(_random_mask(rng, 24, 20))
    x, y = _crandn(rng, 24, 20), _crandn(rng, 24, 20)
    assert dot_test(op, x, y) < 1e-12
    # the imaginary part of the Hermitian products must agree too
    lhs = torch.sum(torch.conj(op.A(x)) * y)
    rhs = torch.sum(torch.conj(x) * op.A_adjoint(y))
    assert abs(complex(lhs - rhs)) < 1e-12 * abs(complex(lhs))


def test_multi_coil_dot_test_complex128():
    rng = np.random.default_rng(3)
    c, h, w = 5, 16, 18
    maps = rng.standard_normal((c, h, w)) + 1j * rng.standard_normal((c, h, w))
    op = MultiCoilMRI(maps, _random_mask(rng, h, w))
    x, y = _crandn(rng, 2, h, w), _crandn(rng, 2, c, h, w)
    assert dot_test(op, x, y) < 1e-12
    lhs = torch.sum(torch.conj(op.A(x)) * y)
    rhs = torch.sum(torch.conj(x) * op.A_adjoint(y))
    assert abs(complex(lhs - rhs)) < 1e-12 * abs(complex(lhs))


def test_dot_test_detects_a_wrong_adjoint():
    """Guard that the dot test used above is able to fail."""
    rng = np.random.default_rng(4)
    op = SingleCoilMRI(_random_mask(rng, 12, 12))
    op.A_adjoint = lambda y: fft2c(op.mask * y)  # forward FFT instead of inverse
    assert dot_test(op, _crandn(rng, 12, 12), _crandn(rng, 12, 12)) > 1e-3


def test_multi_coil_forward_matches_per_coil_definition():
    rng = np.random.default_rng(5)
    c, h, w = 3, 10, 12
    maps = _crandn(rng, c, h, w)
    mask = _random_mask(rng, h, w)
    x = _crandn(rng, h, w)
    y = MultiCoilMRI(maps, mask).A(x)
    assert y.shape == (c, h, w)
    m = torch.from_numpy(mask).double()
    for i in range(c):
        expected = m * torch.from_numpy(
            np.fft.fftshift(np.fft.fft2(np.fft.ifftshift((maps[i] * x).numpy()), norm="ortho"))
        )
        torch.testing.assert_close(y[i], expected, rtol=0, atol=1e-12)
    xa = MultiCoilMRI(maps, mask).A_adjoint(y)
    expected_adj = sum(torch.conj(maps[i]) * ifft2c(m * y[i]) for i in range(c))
    torch.testing.assert_close(xa, expected_adj, rtol=0, atol=1e-12)


def test_operators_batch_over_leading_dims():
    rng = np.random.default_rng(6)
    c, h, w = 4, 8, 10
    maps = _crandn(rng, c, h, w)
    mask = _random_mask(rng, h, w)
    single, multi = SingleCoilMRI(mask), MultiCoilMRI(maps, mask)
    x = _crandn(rng, 2, 3, h, w)
    ys, ym = single.A(x), multi.A(x)
    assert ys.shape == (2, 3, h, w) and ym.shape == (2, 3, c, h, w)
    xs, xm = single.A_adjoint(ys), multi.A_adjoint(ym)
    assert xs.shape == xm.shape == (2, 3, h, w)
    for i in range(2):
        for j in range(3):
            torch.testing.assert_close(ys[i, j], single.A(x[i, j]), rtol=0, atol=1e-12)
            torch.testing.assert_close(ym[i, j], multi.A(x[i, j]), rtol=0, atol=1e-12)
            torch.testing.assert_close(xm[i, j], multi.A_adjoint(ym[i, j]), rtol=0, atol=1e-12)
    assert multi.coil_images(x).shape == (2, 3, c, h, w)


def test_single_coil_project_is_the_data_consistency_projection():
    rng = np.random.default_rng(10)
    h, w = 12, 10
    op = SingleCoilMRI(_random_mask(rng, h, w))
    m = op.mask.double()
    x, y = _crandn(rng, 2, 3, h, w), op.A(_crandn(rng, 2, 3, h, w))
    p = op.project(x, y)
    torch.testing.assert_close(op.A(p), y, rtol=0, atol=1e-12)                         # measured samples kept
    torch.testing.assert_close((1 - m) * fft2c(p), (1 - m) * fft2c(x), rtol=0, atol=1e-12)  # others untouched
    torch.testing.assert_close(op.project(p, y), p, rtol=0, atol=1e-12)                # idempotent
    # orthogonal: x - P x is orthogonal to every feasible direction d (A d = 0)
    d = ifft2c((1 - m) * fft2c(_crandn(rng, 2, 3, h, w)))
    assert abs(complex(torch.sum(torch.conj(x - p) * d))) < 1e-10
    for lam in (1.0, 0.25):
        k = fft2c(x)
        assert torch.equal(op.project(x, y, lam), ifft2c(k - lam * m * k + lam * y))


def test_single_coil_forward_is_the_simulated_masked_fft_bit_for_bit():
    """``SingleCoilMRI(mask).A`` reproduces ``fft2c(x) * mask.array`` (numpy) exactly."""
    rng = np.random.default_rng(11)
    mask = make_mask("gaussian1d", (16, 16), 4, 0.12, seed=0)
    x = (rng.standard_normal((2, 3, 16, 16)) + 1j * rng.standard_normal((2, 3, 16, 16))).astype(np.complex64)
    x[0, 0, :4] = 0                                                   # exact zeros, signed zeros in k
    expected = fft2c(torch.from_numpy(x)).numpy() * mask.array
    got = SingleCoilMRI(mask).A(torch.from_numpy(x)).numpy()
    assert got.dtype == expected.dtype == np.complex64
    assert got.tobytes() == expected.tobytes()


def test_multi_coil_maps_with_leading_axes_broadcast_over_slices():
    rng = np.random.default_rng(12)
    s, c, h, w = 2, 3, 8, 6
    maps = _crandn(rng, s, c, h, w)
    mask = _random_mask(rng, h, w)
    op = MultiCoilMRI(maps, mask)
    assert op.n_coils == c
    x, y = _crandn(rng, s, h, w), _crandn(rng, s, c, h, w)
    assert dot_test(op, x, y) < 1e-12
    ya, xa = op.A(x), op.A_adjoint(y)
    for i in range(s):
        one = MultiCoilMRI(maps[i], mask)
        torch.testing.assert_close(ya[i], one.A(x[i]), rtol=0, atol=1e-12)
        torch.testing.assert_close(xa[i], one.A_adjoint(y[i]), rtol=0, atol=1e-12)
    # coil_combine is the adjoint of coil_images
    v = _crandn(rng, s, c, h, w)
    lhs = torch.sum(torch.conj(op.coil_images(x)) * v)
    rhs = torch.sum(torch.conj(x) * op.coil_combine(v))
    assert abs(complex(lhs - rhs)) < 1e-12 * abs(complex(lhs))


def test_full_mask_birdcage_normal_operator_is_identity():
    h, w = 32, 28
    maps = birdcage_maps(8, (h, w))
    assert maps.dtype == np.complex64 and maps.shape == (8, h, w)
    np.testing.assert_allclose(np.sqrt(np.sum(np.abs(maps) ** 2, axis=0)), 1.0, atol=1e-6)
    op = MultiCoilMRI(maps, np.ones((h, w)))
    x = _crandn(np.random.default_rng(7), h, w)
    torch.testing.assert_close(op.A_adjoint(op.A(x)), x, rtol=0, atol=1e-5)
    torch.testing.assert_close(op.normal(x), x, rtol=0, atol=1e-5)


def test_single_coil_dagger_is_pseudo_inverse():
    rng = np.random.default_rng(8)
    h, w = 12, 16
    x = _crandn(rng, h, w)
    full = SingleCoilMRI(np.ones((h, w)))
    torch.testing.assert_close(full.A_dagger(full.A(x)), x, rtol=0, atol=1e-12)
    op = SingleCoilMRI(make_mask("uniform1d", (h, w), 4, 0.25, seed=0))
    # Moore-Penrose: A A^+ A = A  and  A^+ A A^+ = A^+
    torch.testing.assert_close(op.A(op.A_dagger(op.A(x))), op.A(x), rtol=0, atol=1e-12)
    y = _crandn(rng, h, w)
    torch.testing.assert_close(op.A_dagger(op.A(op.A_dagger(y))), op.A_dagger(y), rtol=0, atol=1e-12)


def test_precision_and_device_follow_the_input():
    rng = np.random.default_rng(9)
    c, h, w = 2, 6, 6
    maps = rng.standard_normal((c, h, w)) + 1j * rng.standard_normal((c, h, w))
    op = MultiCoilMRI(maps, _random_mask(rng, h, w))
    x64 = _crandn(rng, h, w).to(torch.complex64)
    assert op.A(x64).dtype == torch.complex64
    assert op.A_adjoint(op.A(x64)).dtype == torch.complex64
    assert op.A(x64.real.contiguous()).dtype == torch.complex64  # real float32 -> complex64
    assert op.A(x64.to(torch.complex128)).dtype == torch.complex128
    moved = op.to("cpu")
    assert moved is not op and moved.maps.device.type == "cpu"
    torch.testing.assert_close(moved.A(x64), op.A(x64))
    s_moved = SingleCoilMRI(op.mask).to("cpu")
    assert s_moved.mask.dtype.is_floating_point and s_moved.shape == (h, w)


def test_shape_mismatch_raises():
    op = MultiCoilMRI(np.ones((2, 8, 8), dtype=np.complex64), np.ones((8, 8)))
    with pytest.raises(ValueError, match="x"):
        op.A(torch.zeros(8, 9, dtype=torch.complex64))
    with pytest.raises(ValueError, match="y"):
        op.A_adjoint(torch.zeros(3, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match="mask"):
        MultiCoilMRI(np.ones((2, 8, 8), dtype=np.complex64), np.ones((8, 6)))


# ----------------------------------------------------------------------------- RSS


def test_rss_is_magnitude_root_sum_of_squares():
    rng = np.random.default_rng(10)
    x = _crandn(rng, 2, 4, 5, 6)
    direct = torch.sqrt(torch.sum(x.real**2 + x.imag**2, dim=-3))
    got = rss(x)
    assert not got.is_complex() and got.shape == (2, 5, 6)
    torch.testing.assert_close(got, direct, rtol=1e-12, atol=0)
    # the complex "sqrt(sum x^2)" differs in magnitude for generic complex data
    assert float((torch.sqrt(torch.sum(x**2, dim=-3)).abs() - direct).abs().max()) > 1e-3
    # other axis and numpy input
    torch.testing.assert_close(rss(x, dim=0), torch.sqrt(torch.sum(x.abs() ** 2, dim=0)))
    np.testing.assert_allclose(rss(x.numpy()), direct.numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------- ESPIRiT


def test_espirit_recovers_birdcage_maps_from_undersampled_kspace():
    import sigpy

    n, calib = 96, 16
    img = sigpy.shepp_logan((n, n)).astype(np.complex128)
    true_maps = birdcage_maps(8, (n, n))
    mask = make_mask("uniform1d", (n, n), 4, calib / n, seed=3)
    assert mask.effective_acceleration > 3.5  # genuinely undersampled
    ksp = MultiCoilMRI(true_maps, mask).A(torch.from_numpy(img))
    est = espirit_maps(ksp, calib_width=calib)
    assert est.shape == (8, n, n) and est.dtype == np.complex64

    obj = np.abs(img) > 0.05 * np.abs(img).max()
    assert obj.sum() > 0.3 * n * n
    corr = np.abs(np.sum(np.conj(true_maps) * est, axis=0))  # phase-invariant agreement
    assert corr[obj].min() > 0.95
    # a wrong answer (maps of a rotated coil array) must not pass the same check
    wrong = np.roll(true_maps, 1, axis=0)
    assert np.abs(np.sum(np.conj(wrong) * est, axis=0))[obj].min() < 0.95


def test_espirit_rejects_small_calibration():
    ksp = np.zeros((4, 32, 32), dtype=np.complex64)
    with pytest.raises(ValueError, match="calib_width"):
        espirit_maps(ksp, calib_width=2)


def _phase_maps(n_coils: int, n: int) -> np.ndarray:
    """Birdcage maps times a smooth, coil-dependent phase ramp (far from real), unit RSS."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    ramps = np.stack([np.exp(1j * (1.1 * c + (0.8 + 0.3 * c) * xx - 0.6 * yy)) for c in range(n_coils)])
    return (birdcage_maps(n_coils, (n, n)) * ramps).astype(np.complex128)


def test_coil_combine_of_coil_images_returns_the_object():
    """Σ_c conj(S_c) (S_c ρ) = ρ for unit-RSS maps: the conjugate undoes every coil's phase (without it
    the coils' phases add up and scramble the object)."""
    n = 24
    maps = _phase_maps(6, n)
    g = np.random.default_rng(0)
    rho = torch.from_numpy(g.standard_normal((n, n)) + 1j * g.standard_normal((n, n)))
    op = MultiCoilMRI(maps, np.ones((n, n)))
    torch.testing.assert_close(op.coil_combine(op.coil_images(rho)), rho, rtol=0, atol=1e-6)


def test_single_coil_reference_image_is_the_object_up_to_a_smooth_phase():
    """stages.simulate.mri_ground_truth (single-coil mode) combines coil images made with known
    complex maps into the object: the ESPIRiT maps equal the true ones up to one phase per pixel
    (referenced to coil 0), so |image| = |object| inside the object."""
    import sigpy

    from diffrecon.stages.simulate import mri_ground_truth

    n = 48
    obj = sigpy.shepp_logan((n, n)).astype(np.complex128)
    maps = _phase_maps(6, n)
    coils = (maps * obj)[None].astype(np.complex64)                      # (S=1, C, H, W)
    img, target = mri_ground_truth(coils, "singlecoil", True, acs=24)
    inside = np.abs(obj) > 0.2 * np.abs(obj).max()
    assert np.abs(np.abs(img[0][inside]) - np.abs(obj[inside])).max() < 0.03
    np.testing.assert_allclose(target, np.abs(img))


@pytest.mark.parametrize("calib", [8, 16])
def test_espirit_default_kernel_width_is_min_6_half_the_calibration(calib):
    """The default kernel is min(6, calib_width // 2), as documented: 4 for 8 ACS lines, 6 for 16."""
    n = 32
    img = np.asarray(__import__("sigpy").shepp_logan((n, n)), dtype=np.complex128)
    ksp = MultiCoilMRI(birdcage_maps(4, (n, n)), np.ones((n, n))).A(torch.from_numpy(img)).numpy()
    default = espirit_maps(ksp, calib_width=calib)
    documented = min(6, calib // 2)
    np.testing.assert_array_equal(default, espirit_maps(ksp, calib_width=calib, kernel_width=documented))
    for other in (documented - 1, documented + 1):
        assert not np.allclose(default, espirit_maps(ksp, calib_width=calib, kernel_width=other), atol=1e-4)
