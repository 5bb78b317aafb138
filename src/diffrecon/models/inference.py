"""Evaluating a trained network inside a sampler."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from diffrecon.devices import use_bf16


def network_fn(network: nn.Module, precision: str = "float32", batch_limit: int | None = None) -> Callable:
    """Wrap ``network`` as ``fn(x, *cond)`` for a sampler: no gradients, fast layout, optional bf16.

    * ``x`` (B, C, H, W) and the floating-point ``cond`` tensors (a VE network's σ (B,)) are cast
      to the network's dtype; integer tensors (a VP network's timesteps t (B,), class labels (B,))
      and ``None`` pass unchanged. A score network is called as ``fn(x, sigma)``, a noise network
      as ``fn(x, t, labels)``.
    * With ``batch_limit``, the batch is evaluated in chunks of at most ``batch_limit`` along
      dim 0 — ``x`` and every cond tensor of ``x``'s batch length split alike; ``None``, 0-d and
      other (broadcast) tensors passed whole to every chunk — and the outputs concatenated.
    * The network runs in channels-last memory format (oneDNN's fast convolution layout on CPUs,
      the tensor-core layout on GPUs); the module is converted once, here.
    * ``precision`` (float32 | bfloat16 | auto, see :func:`~diffrecon.devices.use_bf16`) decides
      whether the network runs under bfloat16 autocast on its device (CPUs with AMX/AVX-512 bf16
      and recent GPUs run it several times faster); ``auto`` picks bfloat16 where it is native.

    Returns the output (B, C', H, W) in ``x``'s dtype, contiguous.
    """
    param = next(network.parameters())
    dtype, device_type = param.dtype, param.device.type
    bf16 = use_bf16(precision, device_type)
    network = network.to(memory_format=torch.channels_last)

    def cast(c):
        return c.to(dtype) if isinstance(c, torch.Tensor) and c.is_floating_point() else c

    @torch.inference_mode()
    def fn(x: torch.Tensor, *cond) -> torch.Tensor:
        if batch_limit is None:
            parts = [(x, cond)]
        else:
            xs = x.split(batch_limit)
            split = [c.split(batch_limit) if isinstance(c, torch.Tensor) and c.dim() > 0 and len(c) == len(x)
                     else [c] * len(xs) for c in cond]
            parts = [(xc, tuple(s[i] for s in split)) for i, xc in enumerate(xs)]
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            outs = [network(xc.to(dtype).contiguous(memory_format=torch.channels_last), *map(cast, cc))
                    for xc, cc in parts]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.to(x.dtype).contiguous()

    return fn
