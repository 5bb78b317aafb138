"""The random draws of a training loss, independent of how a global batch is split over processes.

A loss draws its per-sample randomness (diffusion times, noise) from the generator of the step.
In data-parallel training each process holds rows ``[start, stop)`` of the step's global batch
of ``total`` samples; it receives a :class:`BatchShare` instead of the bare generator, draws the
whole global batch's randomness (the same draws, in the same order, as a single process) and
keeps its own rows. Sample ``i`` of step ``k`` therefore gets the same time and noise whatever
the number of processes: the union of the processes' batches is the single-process batch.

The helpers take either a :class:`torch.Generator` (one process: exactly ``torch.rand(shape,
generator=gen)`` etc.) or a :class:`BatchShare`; ``shape[0]`` is always the local batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchShare:
    """One process's rows ``[start, stop)`` of a global batch of ``total`` samples, and the
    generator of the step (seeded identically in every process)."""

    generator: torch.Generator
    start: int
    stop: int
    total: int

    def __post_init__(self):
        if not 0 <= self.start <= self.stop <= self.total:
            raise ValueError(f"batch share [{self.start}, {self.stop}) is not within a batch of {self.total}")


Source = torch.Generator | BatchShare | None


def _draw(fn, gen: Source, shape, **kwargs) -> torch.Tensor:
    shape = tuple(int(n) for n in shape)
    if not isinstance(gen, BatchShare):
        return fn(shape, generator=gen, **kwargs)
    if shape[0] != gen.stop - gen.start:
        raise ValueError(f"draw of {shape[0]} rows for a batch share of {gen.stop - gen.start}")
    full = fn((gen.total, *shape[1:]), generator=gen.generator, **kwargs)
    return full[gen.start:gen.stop].clone()


def batch_rand(gen: Source, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """U[0, 1) of ``shape`` (CPU): ``torch.rand`` of the local rows."""
    return _draw(torch.rand, gen, shape, dtype=dtype)


def batch_randn(gen: Source, shape, dtype: torch.dtype | None = None) -> torch.Tensor:
    """N(0, 1) of ``shape`` (CPU): ``torch.randn`` of the local rows."""
    return _draw(torch.randn, gen, shape, dtype=dtype)


def batch_randint(gen: Source, high: int, shape) -> torch.Tensor:
    """U{0 … high − 1} of ``shape`` (CPU, int64): ``torch.randint(0, high, …)`` of the local rows."""
    return _draw(lambda s, generator: torch.randint(0, high, s, generator=generator), gen, shape)
