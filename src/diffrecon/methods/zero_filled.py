"""Method ``zero_filled``: |F⁻¹ y| (single coil) or RSS_c |F⁻¹ y_c| (multi-coil)."""

from __future__ import annotations

from diffrecon.methods.runner import FunctionRunner


def build(method, problem, params: dict, model=None) -> FunctionRunner:
    from diffrecon.baselines.mri import zero_filled

    return FunctionRunner(lambda kspace: zero_filled(kspace, problem.mask, problem.coil_mode))
