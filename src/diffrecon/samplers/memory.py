"""Network batches sized to a memory budget.

The samplers evaluate their network on many images at once (all 3-slice patches of a
DiffusionBlend partition, all slices of a DDS step, all slices × coils × real/imaginary parts of
a score-MRI step) and chunk that batch into network calls of at most ``batch_limit`` images
(:func:`~diffrecon.samplers.blend.blended_eps`, :func:`~diffrecon.models.inference.network_fn`).
Chunking changes no number beyond float rounding: every image is evaluated independently
(convolutions, GroupNorm and attention act per image).

With a budget of B bytes the limit is ``floor((B − fixed) / per_image)`` (at least 1), from one
measurement of the network at the sampler's image size, channels and precision
(:func:`measure_network`): the peak memory of a forward pass of 1 and of 2 images,
``per_image = peak(2) − peak(1)``, ``fixed = peak(1) − per_image`` (workspaces, the time
embedding; never negative). The peak is

* on CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call (the
  caching allocator's real peak, cuDNN workspaces included);
* on the CPU: the peak of the allocation timeline that ``torch.profiler`` records with
  ``profile_memory=True`` (every allocation and free of the forward pass, in order). This is
  the same quantity for the CPU allocator; a CUDA forward pass allocates the same activations
  plus cuDNN workspaces, so on the GPU the CPU figure is a lower estimate — ``bench/gpu_check.py``
  records both and their ratio.

The budget bounds the network's activations only; weights (already resident) and the
sampler's own volume-sized tensors (iterate, ε̂, ADMM state: a few copies of the volume) come on
top of it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger("diffrecon")

GIB = 1024 ** 3

__all__ = ["NetworkMemory", "measure_network", "forward_peak_bytes", "batch_for_budget", "GIB"]


@dataclass(frozen=True)
class NetworkMemory:
    """Activation memory of one network call: ``fixed + per_image · b`` bytes for b images."""

    per_image: int
    fixed: int
    how: str                   # cuda (max_memory_allocated) | cpu-profiler (allocation timeline)

    def batch(self, budget_gb: float) -> int:
        """Images per call within ``budget_gb`` GiB (at least 1)."""
        return batch_for_budget(budget_gb * GIB, self.per_image, self.fixed)


def batch_for_budget(budget_bytes: float, per_image: int, fixed: int = 0) -> int:
    """``floor((budget − fixed) / per_image)``, at least 1 (one image always runs)."""
    if not budget_bytes > 0:
        raise ValueError(f"memory budget must be > 0 bytes, got {budget_bytes}")
    if per_image <= 0:
        raise ValueError(f"per-image memory must be > 0 bytes, got {per_image}")
    return max(1, int(math.floor((budget_bytes - fixed) / per_image)))


def _flush_c_stdio() -> None:
    """fflush(NULL): write out the C library's stdio buffers now."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _native_output_silenced():
    """Discard what native code writes to file descriptors 1 and 2 meanwhile: the profiler's
    library logs its start and stop there, which would land in the user's console and job logs
    (Python exceptions still propagate)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:                     # no standard descriptors (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _flush_c_stdio()                # the native library's buffered lines go to /dev/null too
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _cpu_peak(call: Callable[[], object]) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _native_output_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    timeline = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                      if e.self_cpu_memory_usage)
    now = peak = 0
    for _, change in timeline:
        now += change
        peak = max(peak, now)
    return peak


def forward_peak_bytes(call: Callable[[], object], device: torch.device | str) -> int:
    """Peak bytes allocated while ``call()`` runs on ``device`` above what was allocated before
    (CUDA: ``max_memory_allocated``; CPU: the profiler's allocation timeline)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    return _cpu_peak(call)


def measure_network(fn: Callable, example: Callable[[int], tuple], device: torch.device | str) -> NetworkMemory:
    """Activation memory of ``fn(*example(b))`` (the sampler's network function, e.g. from
    :func:`~diffrecon.models.inference.network_fn`) from forward passes of b = 1 and b = 2
    images; ``example(b)`` returns the call's arguments for b images (x (b, C, H, W) and the
    conditioning tensors) on ``device``."""
    device = torch.device(device)
    with torch.inference_mode():
        fn(*example(1))                                   # first call: lazy init, layout conversion
        peaks = [forward_peak_bytes(lambda b=b: fn(*example(b)), device) for b in (1, 2)]
    per = peaks[1] - peaks[0]
    if per <= 0:                                          # allocator reuse hid the growth
        per = max(peaks[0], 1)
    out = NetworkMemory(per_image=int(per), fixed=int(max(peaks[0] - per, 0)),
                        how="cuda" if device.type == "cuda" else "cpu-profiler")
    log.info("network activations: %.1f MiB per image + %.1f MiB (%s)", out.per_image / 2 ** 20,
             out.fixed / 2 ** 20, out.how)
    return out


def example_inputs(kind: str, channels: int, size: int | tuple[int, int],
                   device: torch.device | str) -> Callable[[int], tuple]:
    """``example(b)`` for :func:`measure_network`: the arguments of a network call on b images of
    ``channels`` × H × W (``size``: H = W, or (H, W)). ``kind``: ``noise`` (VP ε-network: x, t (b,) long, no
    labels), ``labelled`` (VP with class labels (b,) long: DiffusionBlend's spacing) or
    ``score`` (VE: x, σ (b,) float)."""
    if kind not in ("noise", "labelled", "score"):
        raise ValueError(f"network kind '{kind}' is not one of noise, labelled, score")

    def example(b: int) -> tuple:
        h, w = (size, size) if isinstance(size, int) else size
        x = torch.randn(b, channels, h, w, device=device)
        if kind == "score":
            return x, torch.ones(b, device=device)
        t = torch.full((b,), 500, dtype=torch.long, device=device)
        return (x, t, torch.ones(b, dtype=torch.long, device=device)) if kind == "labelled" else (x, t, None)

    return example


def budget_batch_limit(settings: dict, fn: Callable, example: Callable[[int], tuple], device,
                       default: int) -> int:
    """The images per network call of a sampler: from ``settings["memory_budget_gb"]`` (GiB, the
    network measured once, :func:`measure_network`) when given, else ``settings["batch_limit"]``,
    else ``default``. A budget decides alone (an explicit ``batch_limit`` beside it is ignored)."""
    budget = settings.get("memory_budget_gb")
    if budget is None:
        return int(settings.get("batch_limit", default))
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise ValueError(f"memory_budget_gb must be a positive number (GiB), got {budget!r}")
    batch = measure_network(fn, example, device).batch(float(budget))
    log.info("memory budget %.3g GiB: %d images per network call", budget, batch)
    return batch
