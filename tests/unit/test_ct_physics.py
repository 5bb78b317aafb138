"""Tests for diffrecon.physics.ct (ASTRA parallel-beam CT, slice by slice) and its backends.

CPU tests run everywhere; tests marked ``gpu`` need ``astra.use_cuda()`` and
are skipped otherwise (ASTRA's 3-D GPU calls crash the process without a GPU,
so nothing here touches them unless CUDA is usable).
"""

from __future__ import annotations

import itertools
import re
import threading

import astra
import numpy as np
import pytest
import torch

from diffrecon.physics.ct import CTGeometry, ParallelBeamCT, fbp
from diffrecon.physics.ct.backends import BACKEND_CLASSES, BACKENDS, CTBackend
from diffrecon.physics.ct.backends.cuda import orient, orient_inverse, select_orientation
from diffrecon.physics.operator import Gram, dot_test, inner

HAS_CUDA = bool(astra.use_cuda())
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="astra.use_cuda() is False (no GPU)")


def _disc(n: int, radius: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    r = np.hypot(yy, xx)
    return (r < radius).astype(np.float32), r


# ------------------------------------------------------------------ geometry
def test_sparse_view_angles():
    g = CTGeometry.sparse_view(64, 8)
    np.testing.assert_allclose(g.angles_deg, np.arange(8) * 22.5, atol=1e-12)
    assert g.n_views == 8
    assert g.det_count == 91  # ceil(sqrt(2) * 64)
    assert g.det_spacing == 1.0 and g.projector == "linear"
    assert g.sino_shape == (8, 91)


def test_limited_angle_angles():
    g = CTGeometry.limited_angle(32)
    np.testing.assert_allclose(g.angles_deg, np.arange(90.0), atol=1e-12)
    assert g.angles[0] == 0.0 and g.n_views == 90
    g2 = CTGeometry.limited_angle(32, n_views=60, step_deg=1.5)
    np.testing.assert_allclose(g2.angles_deg, np.arange(60) * 1.5, atol=1e-12)


def test_geometry_is_hashable_and_normalised():
    g = CTGeometry(n=np.int64(16), angles=[0.0, 1.0])
    assert isinstance(g.angles, tuple) and isinstance(g.n, int)
    assert hash(g) == hash(CTGeometry(n=16, angles=(0.0, 1.0)))
    assert g.det_count == 23


@pytest.mark.parametrize(
    "make",
    [
        lambda: CTGeometry(n=0, angles=(0.0,)),
        lambda: CTGeometry(n=8.0, angles=(0.0,)),
        lambda: CTGeometry(n=8, angles=()),
        lambda: CTGeometry(n=8, angles=(0.0, float("nan"))),
        lambda: CTGeometry(n=8, angles=("a",)),
        lambda: CTGeometry(n=8, angles=(0.0,), det_count=0),
        lambda: CTGeometry(n=8, angles=(0.0,), det_spacing=0.0),
        lambda: CTGeometry(n=8, angles=(0.0,), det_spacing=-1.0),
        lambda: CTGeometry(n=8, angles=(0.0,), projector="cuda"),
        lambda: CTGeometry.sparse_view(8, 0),
        lambda: CTGeometry.limited_angle(8, n_views=181),
        lambda: CTGeometry.limited_angle(8, n_views=10, step_deg=0.0),
        lambda: CTGeometry.limited_angle(8, n_views=91, step_deg=2.0),
    ],
)
def test_geometry_rejects_bad_input(make):
    with pytest.raises(ValueError):
        make()


def test_operator_rejects_bad_arguments():
    g = CTGeometry.sparse_view(8, 4)
    with pytest.raises(ValueError):
        ParallelBeamCT(g, n_threads=0)
    with pytest.raises(ValueError):
        ParallelBeamCT(g, backend="opencl")
    with pytest.raises(TypeError):
        ParallelBeamCT("not a geometry")


@pytest.mark.skipif(HAS_CUDA, reason="only meaningful without CUDA")
def test_cuda_backend_without_gpu_raises_cleanly():
    # The check must happen before any 3-D call (those would SIGFPE the process).
    with pytest.raises(RuntimeError, match="use_cuda"):
        ParallelBeamCT(CTGeometry.sparse_view(8, 4), backend="cuda")


# ------------------------------------------------------------------ adjointness
@pytest.mark.parametrize("backend", ["cpu", "matrix"])
@pytest.mark.parametrize("projector", ["line", "linear", "strip"])
@pytest.mark.parametrize("kind", ["sparse8", "limited90"])
def test_dot_test(projector, kind, backend):
    n = 24
    g = (CTGeometry.sparse_view(n, 8, projector=projector) if kind == "sparse8"
         else CTGeometry.limited_angle(n, projector=projector))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, n, n, dtype=torch.float64, generator=gen)
    y = torch.rand(3, *g.sino_shape, dtype=torch.float64, generator=gen)
    with ParallelBeamCT(g, n_threads=2, backend=backend) as op:
        assert op.backend == backend
        ax, aty = op.A(x), op.A_adjoint(y)
        assert ax.dtype == torch.float64 and aty.dtype == torch.float64
        assert float(inner(ax, y)) > 0  # non-trivial
        assert dot_test(op, x, y) <= 1e-6


@pytest.mark.parametrize("projector", ["line", "linear", "strip"])
def test_matrix_backend_matches_per_slice_astra(projector):
    g = CTGeometry.limited_angle(32, 30, step_deg=3.0, projector=projector)
    rng = np.random.default_rng(3)
    x = rng.random((4, 32, 32)).astype(np.float32)
    y = rng.random((4, *g.sino_shape)).astype(np.float32)
    with ParallelBeamCT(g, n_threads=1, backend="cpu") as ref, ParallelBeamCT(g, backend="matrix") as mat:
        for got, want in ((mat.forward_np(x), ref.forward_np(x)), (mat.adjoint_np(y), ref.adjoint_np(y))):
            assert got.shape == want.shape and got.dtype == np.float32
            assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
        np.testing.assert_array_equal(mat.fbp_np(y), ref.fbp_np(y))  # FBP: the same 2-D algorithm
        assert mat.forward_np(x[0]).shape == g.sino_shape  # single slice in, single slice out


def test_every_backend_implements_the_protocol():
    """Each backend class has every method of the protocol (the CUDA one cannot run here)."""
    methods = [m for m, v in vars(CTBackend).items() if callable(v) and not m.startswith("_")]
    assert set(methods) == {"forward", "adjoint", "fbp", "gram", "close"}
    assert set(BACKENDS) == {"auto", *BACKEND_CLASSES} == {"auto", "cpu", "matrix", "cuda"}
    for name, cls in BACKEND_CLASSES.items():
        assert cls.name == name
        for m in methods:
            assert callable(getattr(cls, m, None)), (name, m)


@pytest.mark.parametrize("backend", ["cpu", "matrix"])
def test_gram_layout_applies_the_normal_operator(backend):
    g = CTGeometry.sparse_view(20, 6)
    x = torch.rand(5, 20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with ParallelBeamCT(g, backend=backend) as op:
        want = op.A_adjoint(op.A(x))
        assert torch.allclose(op.normal(x), want)
        gram = op.gram()
        assert isinstance(gram, Gram)
        w = gram.to_work(x)
        assert gram.slice_axis == (1 if backend == "matrix" else 0)
        assert w.shape == ((400, 5) if backend == "matrix" else (5, 20, 20))
        assert w.shape[gram.slice_axis] == 5                               # the slices' axis
        assert torch.equal(gram.from_work(w, x.shape), x)                  # a pure rearrangement
        got = gram.from_work(gram.apply(w), x.shape)
        assert got.shape == x.shape and got.dtype == torch.float64
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
        if backend == "matrix":
            with pytest.raises(ValueError, match="must have shape"):
                gram.apply(x)
    with pytest.raises(RuntimeError, match="closed"):
        op.gram()


def test_auto_backend_falls_back_to_per_slice_when_the_matrix_is_too_big(monkeypatch):
    import diffrecon.physics.ct.backends.matrix as matrix

    g = CTGeometry.sparse_view(16, 4)
    with ParallelBeamCT(g) as op:
        assert op.backend == ("cuda" if astra.use_cuda() else "matrix")
    monkeypatch.setattr(matrix, "MATRIX_MAX_NNZ", 10)
    with ParallelBeamCT(g) as op:
        assert op.backend == ("cuda" if astra.use_cuda() else "cpu")
        assert "backend=" in repr(op) and not op.closed
    assert op.closed


def test_forward_of_known_object():
    # Line integrals of a centred disc of radius R through its centre are 2R
    # at every angle; the total mass per view equals the image sum.
    n, R = 64, 16.0
    disc, _ = _disc(n, R)
    g = CTGeometry.sparse_view(n, 8)
    with ParallelBeamCT(g, n_threads=1) as op:
        s = op.forward_np(disc)
    assert s.shape == (8, g.det_count)
    np.testing.assert_allclose(s.sum(axis=1), disc.sum(), rtol=5e-3)  # Joseph: ~0.2 % at 45 deg
    np.testing.assert_allclose(s.max(axis=1), 2 * R, rtol=0.05)


# ------------------------------------------------------------------ FBP
@pytest.mark.parametrize("projector", ["linear", "strip"])
def test_fbp_of_disc_has_unit_amplitude(projector):
    n, R = 64, 16.0
    disc, r = _disc(n, R)
    g = CTGeometry.sparse_view(n, 180, projector=projector)
    with ParallelBeamCT(g, backend="cpu") as op:
        rec = op.A_dagger(op.A(torch.from_numpy(disc)))
    interior = rec.numpy()[r < R - 3]
    assert np.all(np.abs(interior - 1.0) <= 0.05), (interior.min(), interior.max())
    outside = rec.numpy()[r > R + 4]
    assert np.abs(outside).max() < 0.1


@pytest.mark.parametrize("backend", ["cpu", "matrix"])
def test_fbp_is_ram_lak_sharp_at_the_disc_edge(backend):
    """Ram-Lak (the originals' ramp filter, unapodised) keeps a disc's edge: the rings 1-2 pixels
    inside / outside the edge are within 3 % of 1 / below 0.03 (a Hann window: ≈ 0.95 / 0.055,
    Shepp-Logan ≈ 1.00 / 0.010), and the interior mean is 1 within 1 %."""
    n, R = 64, 16.0
    disc, r = _disc(n, R)
    g = CTGeometry.sparse_view(n, 180)
    with ParallelBeamCT(g, n_threads=1, backend=backend) as op:
        rec = op.A_dagger(op.A(torch.from_numpy(disc))).numpy()
    inside, outside = rec[(r > R - 2) & (r < R - 1)].mean(), rec[(r > R + 1) & (r < R + 2)].mean()
    assert abs(inside - 1.0) < 0.03 and abs(outside) < 0.03, (inside, outside)
    assert abs(rec[r < R - 3].mean() - 1.0) < 0.01


def test_fbp_line_projector_mean_amplitude():
    n, R = 64, 16.0
    disc, r = _disc(n, R)
    g = CTGeometry.sparse_view(n, 180, projector="line")
    sino = ParallelBeamCT(g, backend="cpu")
    try:
        rec = fbp(sino.forward_np(disc), g)
    finally:
        sino.close()
    assert isinstance(rec, np.ndarray) and rec.dtype == np.float32
    assert abs(rec[r < R - 3].mean() - 1.0) <= 0.02


def test_fbp_convenience_accepts_torch():
    g = CTGeometry.sparse_view(16, 30)
    y = torch.rand(2, *g.sino_shape, dtype=torch.float64)
    rec = fbp(y, g, n_threads=1)
    assert isinstance(rec, torch.Tensor) and rec.dtype == torch.float64 and rec.shape == (2, 16, 16)


# ------------------------------------------------------------------ threading
def test_threaded_equals_serial():
    n = 32
    g = CTGeometry.limited_angle(n)
    rng = np.random.default_rng(3)
    x = rng.random((5, n, n)).astype(np.float32)
    y = rng.random((5, *g.sino_shape)).astype(np.float32)
    with ParallelBeamCT(g, n_threads=1) as op1, ParallelBeamCT(g, n_threads=2) as op2:
        assert op1.n_threads == 1 and op2.n_threads == 2
        np.testing.assert_array_equal(op1.forward_np(x), op2.forward_np(x))
        np.testing.assert_array_equal(op1.adjoint_np(y), op2.adjoint_np(y))
        np.testing.assert_array_equal(op1.fbp_np(y), op2.fbp_np(y))
        # and slice-wise: each slice equals its own single-slice projection
        np.testing.assert_array_equal(op2.forward_np(x)[4], op1.forward_np(x[4]))


def test_concurrent_callers_share_one_operator():
    n = 24
    g = CTGeometry.sparse_view(n, 16)
    rng = np.random.default_rng(4)
    xs = [rng.random((4, n, n)).astype(np.float32) for _ in range(4)]
    with ParallelBeamCT(g, n_threads=2) as op:
        expected = [op.forward_np(x) for x in xs]
        got: list = [None] * len(xs)

        def run(i):
            for _ in range(3):
                got[i] = op.forward_np(xs[i])

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(xs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for e, r in zip(expected, got):
        np.testing.assert_array_equal(e, r)


# ------------------------------------------------------------------ autograd
def test_grad_of_inner_product_is_adjoint():
    n = 16
    g = CTGeometry.sparse_view(n, 12)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, n, n, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.rand(2, *g.sino_shape, dtype=torch.float64, generator=gen)
    with ParallelBeamCT(g) as op:
        loss = (op.A(x) * y).sum()
        (gx,) = torch.autograd.grad(loss, x)
        torch.testing.assert_close(gx, op.A_adjoint(y), rtol=0, atol=0)

        # and the other way round
        yy = y.clone().requires_grad_(True)
        loss2 = (op.A_adjoint(yy) * x.detach()).sum()
        (gy,) = torch.autograd.grad(loss2, yy)
        torch.testing.assert_close(gy, op.A(x.detach()), rtol=0, atol=0)


def test_gradcheck_forward_and_adjoint():
    # Both maps are linear, so central differences are exact for any eps; a
    # large eps keeps float32 rounding inside ASTRA from dominating.
    g = CTGeometry.sparse_view(6, 4)
    with ParallelBeamCT(g, n_threads=1) as op:
        x = torch.rand(1, 6, 6, dtype=torch.float64, requires_grad=True)
        y = torch.rand(1, *g.sino_shape, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(op.A, (x,), eps=1.0, atol=1e-4, rtol=1e-3)
        assert torch.autograd.gradcheck(op.A_adjoint, (y,), eps=1.0, atol=1e-4, rtol=1e-3)


def test_double_backward():
    n = 12
    g = CTGeometry.sparse_view(n, 6)
    with ParallelBeamCT(g, n_threads=1) as op:
        x = torch.rand(n, n, dtype=torch.float64, requires_grad=True)
        y = torch.rand(*g.sino_shape, dtype=torch.float64, requires_grad=True)
        v = torch.rand(n, n, dtype=torch.float64)
        (gx,) = torch.autograd.grad((op.A(x) * y).sum(), x, create_graph=True)  # = A^T y
        (gy,) = torch.autograd.grad((gx * v).sum(), y)  # = A v
        torch.testing.assert_close(gy, op.A(v), rtol=0, atol=0)


# ------------------------------------------------------------------ shapes / dtypes
def test_single_slice_shapes():
    n = 20
    g = CTGeometry.sparse_view(n, 8)
    x = torch.rand(n, n)
    with ParallelBeamCT(g) as op:
        y = op.A(x)
        assert y.shape == (8, g.det_count)
        assert op.A_adjoint(y).shape == (n, n)
        assert op.A_dagger(y).shape == (n, n)
        assert op.normal(x).shape == (n, n)
        torch.testing.assert_close(op.A(x[None])[0], y, rtol=0, atol=0)
        assert op.A(torch.rand(3, n, n)).shape == (3, 8, g.det_count)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_preserved(dtype):
    g = CTGeometry.sparse_view(16, 4)
    with ParallelBeamCT(g, n_threads=1) as op:
        x = torch.rand(2, 16, 16).to(dtype)
        y = op.A(x)
        assert y.dtype == dtype and y.device == x.device
        assert op.A_adjoint(y).dtype == dtype
        assert op.A_dagger(y).dtype == dtype
        ref = op.forward_np(x.float().numpy())
        assert ref.dtype == np.float32
        np.testing.assert_allclose(y.float().numpy(), ref, rtol=2e-2, atol=1e-2)


def test_non_contiguous_input():
    g = CTGeometry.sparse_view(16, 5)
    x = torch.rand(16, 16, 3).permute(2, 0, 1)  # (3, 16, 16), not contiguous
    with ParallelBeamCT(g, n_threads=2) as op:
        torch.testing.assert_close(op.A(x), op.A(x.contiguous()), rtol=0, atol=0)


def test_bad_shapes_and_types():
    g = CTGeometry.sparse_view(16, 5)
    with ParallelBeamCT(g, n_threads=1) as op:
        with pytest.raises(ValueError):
            op.A(torch.rand(2, 16, 15))
        with pytest.raises(ValueError):
            op.A(torch.rand(1, 2, 16, 16))
        with pytest.raises(ValueError):
            op.A_adjoint(torch.rand(2, 4, g.det_count))
        with pytest.raises(TypeError):
            op.A(torch.ones(16, 16, dtype=torch.int64))
        with pytest.raises(TypeError):
            op.A(torch.rand(16, 16, dtype=torch.complex64))
        with pytest.raises(TypeError):
            op.forward_np(np.ones((16, 16), dtype=np.complex64))
    with pytest.raises(RuntimeError):
        op.A(torch.rand(16, 16))


# ------------------------------------------------------------------ ASTRA object hygiene
def _astra_counts(capfd) -> dict:
    capfd.readouterr()
    counts = {}
    for name, mod in (("data2d", astra.data2d), ("projector", astra.projector), ("algorithm", astra.algorithm)):
        mod.info()
        out = capfd.readouterr().out
        counts[name] = sum(1 for line in out.splitlines() if re.match(r"^\s*\d+\s", line))
    return counts


def test_no_astra_objects_leak(capfd):
    before = _astra_counts(capfd)
    g = CTGeometry.sparse_view(16, 8)
    op = ParallelBeamCT(g, n_threads=2)
    created = _astra_counts(capfd)
    # per worker: 1 projector, 2 linked buffers, 3 algorithms
    assert created["projector"] - before["projector"] == 2
    assert created["data2d"] - before["data2d"] == 4
    assert created["algorithm"] - before["algorithm"] == 6
    x = torch.rand(3, 16, 16)
    y = op.A(x)
    op.A_adjoint(y)
    op.A_dagger(y)
    op.normal(x)
    assert _astra_counts(capfd) == created
    op.close()
    op.close()  # idempotent
    assert _astra_counts(capfd) == before


# ------------------------------------------------------------------ CUDA orientation logic (CPU-testable)
def test_orient_inverse_is_transpose():
    rng = np.random.default_rng(5)
    a = rng.random((3, 7, 7))
    b = rng.random((3, 7, 7))
    for o in itertools.product((False, True), repeat=4):
        np.testing.assert_allclose(np.vdot(orient(a, o), b), np.vdot(a, orient_inverse(b, o)), rtol=1e-13)
        np.testing.assert_array_equal(orient_inverse(orient(a, o), o), a)


@pytest.mark.parametrize("o_true", [(False, False, False, False), (False, False, True, False),
                                    (True, False, True, False), (True, True, False, True)])
def test_select_orientation_recovers_a_known_convention(o_true):
    # A fake "3-D projector" that sees the volume in another convention o_true.
    g = CTGeometry.sparse_view(16, 7)
    with ParallelBeamCT(g, n_threads=1, backend="cpu") as ref:
        def fake(v):
            return ref.forward_np(np.ascontiguousarray(orient_inverse(v, o_true)))

        rng = np.random.default_rng(6)
        probe = rng.random((3, 16, 16)).astype(np.float32)
        probe[:, :5, :8] += 2.0
        o, err = select_orientation(fake, ref.forward_np, probe)
        assert err < 1e-6
        x = rng.random((3, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(fake(np.ascontiguousarray(orient(x, o))), ref.forward_np(x), rtol=1e-5, atol=1e-4)

        with pytest.raises(RuntimeError):
            select_orientation(lambda v: ref.forward_np(v) + 10.0, ref.forward_np, probe)


# ------------------------------------------------------------------ CUDA (GPU machines only)
@pytest.mark.gpu
@needs_cuda
def test_cuda_matches_cpu_orientation_and_scale():
    n = 64
    g = CTGeometry.sparse_view(n, 23)
    rng = np.random.default_rng(7)
    x = np.zeros((4, n, n), np.float32)
    x[:, 10:30, 20:50] = 1.0  # off-centre, asymmetric block
    x[1:, 40:50, 5:15] = 2.0  # differs between slices
    x += 0.1 * rng.random(x.shape).astype(np.float32)
    y = rng.random((4, *g.sino_shape)).astype(np.float32)
    with ParallelBeamCT(g, backend="cpu") as cpu, ParallelBeamCT(g, backend="cuda") as gpu:
        assert gpu.backend == "cuda"
        s_cpu, s_gpu = cpu.forward_np(x), gpu.forward_np(x)
        assert s_gpu.shape == s_cpu.shape == (4, 23, g.det_count)
        assert np.linalg.norm(s_gpu - s_cpu) / np.linalg.norm(s_cpu) < 0.05
        b_cpu, b_gpu = cpu.adjoint_np(y), gpu.adjoint_np(y)
        assert b_gpu.shape == b_cpu.shape == (4, n, n)
        assert np.linalg.norm(b_gpu - b_cpu) / np.linalg.norm(b_cpu) < 0.05
        f_cpu, f_gpu = cpu.fbp_np(s_cpu), gpu.fbp_np(s_cpu)
        assert np.linalg.norm(f_gpu - f_cpu) / np.linalg.norm(f_cpu) < 0.05
        # torch tensors on the GPU come back on the GPU
        xt = torch.from_numpy(x).cuda().double()
        yt = gpu.A(xt)
        assert yt.is_cuda and yt.dtype == torch.float64


@pytest.mark.gpu
@needs_cuda
def test_cuda_dot_test():
    n = 48
    g = CTGeometry.limited_angle(n)
    gen = torch.Generator().manual_seed(8)
    x = torch.rand(3, n, n, dtype=torch.float64, generator=gen)
    y = torch.rand(3, *g.sino_shape, dtype=torch.float64, generator=gen)
    with ParallelBeamCT(g, backend="cuda") as op:
        # ASTRA's 3-D CUDA BP is only approximately the transpose of its FP.
        assert dot_test(op, x, y) <= 1e-2
