"""Tests for k-space sampling masks."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffrecon.physics import MASK_KINDS, Mask, make_mask
from diffrecon.physics.masks import acs_width

ACS = 0.08
SHAPES = [(64, 64), (320, 320)]
ACCELS = [4, 8]
EXACT_KINDS = ("gaussian1d", "uniform1d", "gaussian2d", "uniform2d")
ONE_D = ("gaussian1d", "uniform1d")
FASTMRI_KINDS = ("random", "equispaced", "equispacedfraction")  # fastMRI's arithmetic: test_fastmri_masks.py


@functools.lru_cache(maxsize=None)
def _mask(kind: str, shape: tuple[int, int], accel: float, acs: float = ACS, seed: int = 0) -> Mask:
    """Cache masks: sigpy's Poisson-disc generator takes ~1.5 s at 320x320."""
    return make_mask(kind, shape, accel, acs, seed)


def _centre(n: int, width: int) -> slice:
    """Centred block of ``width`` indices around the DC index ``n // 2``."""
    return slice(n // 2 - width // 2, n // 2 - width // 2 + width)


grid = pytest.mark.parametrize(
    "kind,shape,accel", [(k, s, r) for k in MASK_KINDS if k not in FASTMRI_KINDS for s in SHAPES for r in ACCELS]
)


@grid
def test_mask_is_binary_float32_of_requested_shape(kind, shape, accel):
    m = _mask(kind, shape, accel)
    assert m.array.shape == shape and m.array.dtype == np.float32
    assert set(np.unique(m.array)) <= {0.0, 1.0}
    assert (m.kind, m.acceleration, m.acs_fraction, m.seed) == (kind, accel, ACS, 0)


@grid
def test_effective_acceleration_hits_target(kind, shape, accel):
    m = _mask(kind, shape, accel)
    h, w = shape
    assert m.effective_acceleration == pytest.approx(1.0 / m.array.mean())
    if kind in ONE_D:
        # exactly round(W/R) columns: R_eff = W / round(W/R)
        assert int(m.array[0].sum()) == round(w / accel)
        assert abs(m.effective_acceleration / accel - 1) <= 0.5 / round(w / accel) + 1e-12
    elif kind in EXACT_KINDS:
        assert int(m.array.sum()) == round(h * w / accel)
        assert abs(m.effective_acceleration / accel - 1) <= 0.5 / round(h * w / accel) + 1e-12
    else:  # poisson: sigpy's binary search stops within 0.1 of the target
        assert abs(m.effective_acceleration / accel - 1) < 0.10


@grid
def test_acs_region_fully_sampled(kind, shape, accel):
    m = _mask(kind, shape, accel)
    h, w = shape
    if kind in ONE_D:
        n_acs = round(w * ACS)
        assert np.all(m.array[:, _centre(w, n_acs)] == 1)
        assert acs_width(m) == n_acs
    else:
        c = round(min(h, w) * ACS)
        assert np.all(m.array[_centre(h, c), _centre(w, c)] == 1)
        assert acs_width(m) == c
    assert m.array[h // 2, w // 2] == 1  # DC always sampled


@pytest.mark.parametrize("kind", ONE_D)
@pytest.mark.parametrize("shape", SHAPES + [(40, 96)])
def test_1d_masks_identical_across_rows(kind, shape):
    m = make_mask(kind, shape, 4, ACS, seed=5)
    assert np.all(m.array == m.array[:1])


@pytest.mark.parametrize("kind", ("gaussian2d", "uniform2d", "poisson"))
def test_2d_masks_are_not_line_masks(kind):
    m = _mask(kind, (64, 64), 4)
    assert not np.all(m.array == m.array[:1])
    assert not np.all(m.array == m.array[:, :1])


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_seed_reproducibility(kind):
    a = make_mask(kind, (64, 64), 4, ACS, seed=11).array
    b = make_mask(kind, (64, 64), 4, ACS, seed=11).array
    c = make_mask(kind, (64, 64), 4, ACS, seed=12).array
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("prefix", ["gaussian1d", "gaussian2d"])
def test_gaussian_kinds_concentrate_near_centre(prefix):
    """Variable density: sampled points lie closer to DC than under uniform sampling."""
    h = w = 320
    uniform = prefix.replace("gaussian", "uniform")
    rows, cols = np.mgrid[:h, :w]
    radius = np.hypot(rows - h / 2, cols - w / 2) if prefix.endswith("2d") else np.abs(cols - w / 2)
    g, u = _mask(prefix, (h, w), 4).array, _mask(uniform, (h, w), 4).array
    outside_acs = radius > round(w * ACS)  # compare only the randomly drawn points
    mean_r_g = radius[(g == 1) & outside_acs].mean()
    mean_r_u = radius[(u == 1) & outside_acs].mean()
    # ratio is ~0.5 for these densities (<= 0.63 over 30 seeds); ~1 if the weights were ignored
    assert mean_r_g < 0.75 * mean_r_u


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_acceleration_one_is_fully_sampled(kind):
    assert make_mask(kind, (32, 32), 1, ACS, seed=0).array.min() == 1


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(EXACT_KINDS),
    h=st.integers(8, 80),
    w=st.integers(8, 80),
    accel=st.floats(1.0, 12.0),
    acs=st.floats(0.0, 0.2),
    seed=st.integers(0, 2**31),
)
def test_exact_count_kinds_property(kind, h, w, accel, acs, seed):
    n_acs_1d = round(w * acs)
    c = round(min(h, w) * acs)
    if kind in ONE_D:
        budget, need = round(w / accel), n_acs_1d
    else:
        budget, need = round(h * w / accel), c * c
    if need > budget:
        with pytest.raises(ValueError, match="acs_fraction"):
            make_mask(kind, (h, w), accel, acs, seed)
        return
    a = make_mask(kind, (h, w), accel, acs, seed).array
    if kind in ONE_D:
        assert a[0].sum() == budget and np.all(a == a[:1])
        assert np.all(a[:, _centre(w, n_acs_1d)] == 1)
    else:
        assert a.sum() == budget
        assert np.all(a[_centre(h, c), _centre(w, c)] == 1)


def test_to_dict_is_json_metadata():
    m = _mask("gaussian2d", (64, 64), 8)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["kind"] == "gaussian2d" and d["shape"] == [64, 64]
    assert d["acceleration"] == 8 and d["acs_fraction"] == ACS and d["seed"] == 0
    assert d["n_sampled"] == int(m.array.sum())
    assert d["effective_acceleration"] == pytest.approx(64 * 64 / d["n_sampled"])
    assert "array" not in d


def test_acs_width_from_shape():
    assert acs_width((320, 320), 0.08) == round(320 * 0.08)
    assert acs_width((64, 128), 0.25) == 16
    with pytest.raises(ValueError):
        acs_width((64, 64))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kind="radial"), "kind"),
        (dict(acceleration=0.5), "acceleration"),
        (dict(acceleration=float("nan")), "acceleration"),
        (dict(acs_fraction=-0.1), "acs_fraction"),
        (dict(acs_fraction=1.0), "acs_fraction"),
        (dict(kind="uniform1d", acceleration=8, acs_fraction=0.3), "acs_fraction"),
        (dict(kind="gaussian1d", acceleration=4, acs_fraction=0.5), "acs_fraction"),
        (dict(kind="uniform2d", acceleration=8, acs_fraction=0.5), "acs_fraction"),
        (dict(kind="poisson", acceleration=8, acs_fraction=0.5), "acs_fraction"),
    ],
)
def test_invalid_parameters_raise(kwargs, match):
    args = dict(kind="gaussian1d", shape=(64, 64), acceleration=4, acs_fraction=ACS, seed=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_mask(**args)
