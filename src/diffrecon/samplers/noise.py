"""Gaussian noise drawn per slice, so that any block of a volume's slices sees the same noise
as the whole volume does.

A sampler that treats slices independently (score-MRI: every slice, coil and posterior sample
is its own chain between the data-consistency steps) can then reconstruct a volume in blocks
of slices — separate jobs, checkpointed parts, smaller network batches — and get the
numbers of the one-job run: slice ``s`` of sample ``k`` of volume ``case`` draws all its noise
from one generator seeded by :func:`slice_seed` ``(seed, k, case, s)``, ``s`` the slice's index
in the whole volume. Draws are slice-major: a draw of shape (S·m, ...) takes rows
[i·m, (i+1)·m) from the generator of the block's i-th slice.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["SliceNoise", "slice_seed", "randn"]


def slice_seed(seed: int, sample: int, case: str, index: int) -> int:
    """The seed of slice ``index`` (0-based, in the whole volume) of posterior sample ``sample``
    of volume ``case``, for a run seeded ``seed``: a 63-bit integer from numpy's SeedSequence of
    (seed, sample, crc32(case), index), stable across platforms and Python runs."""
    if min(seed, sample, index) < 0:
        raise ValueError(f"seed, sample and slice index must be >= 0, got {seed}, {sample}, {index}")
    words = np.random.SeedSequence([int(seed), int(sample), zlib.crc32(case.encode()), int(index)]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & ((1 << 63) - 1)


class SliceNoise:
    """One ``torch.Generator`` per slice; :meth:`randn` draws slice-major noise from them.

    ``seeds`` (S,): one seed per slice of the block, in slice order (:func:`slice_seed`).
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        if len(seeds) == 0:
            raise ValueError("SliceNoise needs at least one slice")
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    @property
    def n_slices(self) -> int:
        return len(self.generators)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normal noise of ``shape`` whose leading axis (S·m) is slice-major: rows
        [i·m, (i+1)·m) come from slice i's generator."""
        shape = tuple(int(n) for n in shape)
        s = self.n_slices
        if not shape or shape[0] % s:
            raise ValueError(f"noise of shape {shape}: the leading axis is not a multiple of the {s} slices")
        per = (shape[0] // s, *shape[1:])
        return torch.cat([torch.randn(per, generator=g, dtype=dtype, device=device) for g in self.generators])


def randn(shape: Sequence[int], gen, dtype: torch.dtype, device) -> torch.Tensor:
    """Standard normal noise from ``gen``: a ``torch.Generator`` or a :class:`SliceNoise`."""
    if isinstance(gen, SliceNoise):
        return gen.randn(shape, dtype=dtype, device=device)
    return torch.randn(tuple(shape), generator=gen, dtype=dtype, device=device)
