"""DiffusionBlend score blending: partitions of the slice axis into 3-slice patches.

A volume x (S, H, W) is scored by a 2-D network that sees 3 slices as 3 channels, conditioned
on the spacing k of the slices (label k: 1 = adjacent, 3 = "jump" interleave). At each reverse
step one **partition** is chosen: a set of patches such that every slice takes its ε̂ from
exactly one patch (a patch may be evaluated for some of its slices only, at the volume's
edges). The "blending" is the change of partition between steps:

* adjacent (DiffusionBlend; label 1) — patches {j, j+1, j+2} for j = o, o+3, … with a random
  offset o ∈ {0, 1, 2}; the o slices before the first patch are kept from the edge patch
  {0, 1, 2}, and the slices after the last whole patch from the edge patch {S−3, S−2, S−1}.
* jump-k (DiffusionBlend++; label k) — within each block of 3k consecutive slices starting at
  b, patches {b+m, b+m+k, b+m+2k}, m = 0 … k−1. The original requires S to be a multiple
  of 3k; here the last S mod 3k slices are covered by adjacent patches (label 1) instead.

The schedule picks jump at every ``jump_every``-th step starting with the first (``jump_every = 2``:
jump, adjacent, jump, … — the original's alternation, whose odd step counter selects jump and
starts at 1; ``0``: adjacent only, i.e. DiffusionBlend). All patches of a step go
through the network together, in chunks of at most ``batch_limit`` patches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

PATCH = 3


@dataclass(frozen=True)
class Patch:
    """Three slice indices (increasing, equal spacing ``spacing``) and which of them are kept."""

    slices: tuple[int, int, int]
    spacing: int
    keep: tuple[bool, bool, bool] = (True, True, True)


def _adjacent_cover(slices: list[int], n: int) -> list[Patch]:
    """Adjacent patches covering the (sorted, contiguous) ``slices`` of a length-``n`` axis,
    each patch inside [0, n), every listed slice kept exactly once."""
    out = []
    i = 0
    while i < len(slices):
        start = min(slices[i], n - PATCH)
        idx = (start, start + 1, start + 2)
        todo = set(slices[i:i + PATCH])
        keep = tuple(j in todo for j in idx)
        out.append(Patch(idx, 1, keep))
        i += sum(keep)
    return out


def adjacent_partition(n: int, offset: int) -> list[Patch]:
    """Adjacent 3-slice patches starting at ``offset`` (0, 1 or 2), with edge patches."""
    if n < PATCH:
        raise ValueError(f"a volume needs at least {PATCH} slices, got {n}")
    if not 0 <= offset < PATCH:
        raise ValueError(f"offset must be 0, 1 or 2, got {offset}")
    offset = min(offset, n - PATCH)
    patches = []
    if offset:
        patches += _adjacent_cover(list(range(offset)), n)
    j = offset
    while j + PATCH <= n:
        patches.append(Patch((j, j + 1, j + 2), 1))
        j += PATCH
    if j < n:
        patches += _adjacent_cover(list(range(j, n)), n)
    return patches


def jump_partition(n: int, k: int = 3) -> list[Patch]:
    """Interleaved patches {b+m, b+m+k, b+m+2k} in blocks of 3k slices; the tail is adjacent."""
    if n < PATCH:
        raise ValueError(f"a volume needs at least {PATCH} slices, got {n}")
    if k < 1:
        raise ValueError(f"jump spacing must be >= 1, got {k}")
    block = PATCH * k
    patches = []
    b = 0
    while b + block <= n:
        patches += [Patch((b + m, b + m + k, b + m + 2 * k), k) for m in range(k)]
        b += block
    if b < n:
        patches += _adjacent_cover(list(range(b, n)), n)
    return patches


def choose_partition(step: int, n: int, rng: np.random.Generator, jump_every: int = 2, k: int = 3) -> list[Patch]:
    """The partition of reverse step ``step`` (0-based): jump-k when ``jump_every`` > 0 and
    step % jump_every == 0 (the first step jumps), else adjacent with a random offset drawn
    from ``rng``."""
    if jump_every and step % jump_every == 0:
        return jump_partition(n, k)
    return adjacent_partition(n, int(rng.integers(0, PATCH)))


def coverage(patches: list[Patch], n: int) -> np.ndarray:
    """How many times each of the ``n`` slices is kept (1 everywhere for a valid partition)."""
    count = np.zeros(n, dtype=int)
    for p in patches:
        for s, kept in zip(p.slices, p.keep):
            count[s] += int(kept)
    return count


EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]   # (P,3,H,W), t (P,), y (P,) -> (P,3,H,W)


def blended_eps(x: torch.Tensor, t: int, patches: list[Patch], eps_fn: EpsFn, batch_limit: int = 64) -> torch.Tensor:
    """Volume ε̂ (S, H, W) of ``x`` (S, H, W) at step ``t``: every patch of the partition through
    ``eps_fn`` in batches of at most ``batch_limit`` patches, each slice from its one patch."""
    idx = torch.tensor([p.slices for p in patches], device=x.device)                 # (P, 3)
    labels = torch.tensor([p.spacing for p in patches], device=x.device)
    keep = torch.tensor([p.keep for p in patches], device=x.device)                  # (P, 3)
    out = torch.empty_like(x)
    for lo in range(0, len(patches), batch_limit):
        sl = slice(lo, lo + batch_limit)
        batch = x[idx[sl]]                                                           # (b, 3, H, W)
        steps = torch.full((batch.shape[0],), t, device=x.device, dtype=torch.long)
        eps = eps_fn(batch, steps, labels[sl])
        k = keep[sl]
        out[idx[sl][k]] = eps[k]
    return out


def per_patch_eps(x: torch.Tensor, t: int, patches: list[Patch], eps_fn: EpsFn) -> torch.Tensor:
    """Reference loop, one network call per patch (the original's batch-1 evaluation)."""
    out = torch.empty_like(x)
    for p in patches:
        eps = eps_fn(x[list(p.slices)][None], torch.tensor([t], device=x.device),
                     torch.tensor([p.spacing], device=x.device))[0]
        for j, (s, kept) in enumerate(zip(p.slices, p.keep)):
            if kept:
                out[s] = eps[j]
    return out
