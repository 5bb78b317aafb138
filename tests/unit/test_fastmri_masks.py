"""fastMRI's own column masks (random, equispaced, equispaced fraction) equal the package's."""

from __future__ import annotations

import numpy as np
import pytest

from diffrecon.physics.masks import MASK_KINDS, acs_width, make_mask, mask_from_columns, measured_acs_width

subsample = pytest.importorskip("fastmri.data.subsample")

FUNCS = {"random": "RandomMaskFunc", "equispaced": "EquiSpacedMaskFunc",
         "equispacedfraction": "EquispacedMaskFractionFunc"}


@pytest.mark.parametrize("kind", sorted(FUNCS))
@pytest.mark.parametrize("seed", [0, 3, 1234])
@pytest.mark.parametrize("width, acceleration, fraction", [(368, 4, 0.08), (320, 8, 0.04), (321, 4, 0.08)])
def test_equal_to_fastmri(kind, seed, width, acceleration, fraction):
    func = getattr(subsample, FUNCS[kind])([fraction], [acceleration])
    ref, n_low = func((1, width, 2), seed=seed)
    ours = make_mask(kind, (64, width), acceleration, fraction, seed)
    assert kind in MASK_KINDS
    np.testing.assert_array_equal(ours.array, np.broadcast_to(ref.numpy().reshape(1, width), (64, width)))
    assert acs_width(ours) == n_low


def test_seeded_and_centred():
    a = make_mask("random", (320, 320), 4, 0.08, seed=9).array
    assert np.array_equal(a, make_mask("random", (320, 320), 4, 0.08, seed=9).array)
    assert not np.array_equal(a, make_mask("random", (320, 320), 4, 0.08, seed=10).array)
    assert measured_acs_width(a) >= round(320 * 0.08)
    with pytest.raises(ValueError, match="integer acceleration"):
        make_mask("equispaced", (32, 32), 2.5, 0.08)


def test_mask_from_columns():
    cols = np.zeros(20)
    cols[8:12] = 1
    cols[0] = 1
    m = mask_from_columns(cols, 5)
    assert m.shape == (5, 20) and m.effective_acceleration == 4 and measured_acs_width(m.array) == 4
