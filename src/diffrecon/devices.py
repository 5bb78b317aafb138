"""Device and arithmetic choices shared by training and sampling."""

from __future__ import annotations

import torch


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def bf16_native(device_type: str) -> bool:
    """Whether bfloat16 arithmetic is native (fast) on this machine's ``device_type``."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(precision: str, device_type: str) -> bool:
    """Resolve a ``precision`` setting (float32 | bfloat16 | auto) to whether autocast runs in bf16."""
    if precision not in ("float32", "bfloat16", "auto"):
        raise ValueError(f"precision '{precision}' is not one of float32, bfloat16, auto")
    return precision == "bfloat16" or (precision == "auto" and bf16_native(device_type))
