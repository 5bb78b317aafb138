"""Method ``tv``: slice-wise total-variation reconstruction (:func:`diffrecon.baselines.mri.total_variation`).

Parameters: ``lam`` (TV weight on the [0, 1]-normalised image), ``iterations`` (PDHG), ``seed``
(sigpy's step-size estimate), ``acs_width`` (ESPIRiT calibration; default: the setting's ACS).
"""

from __future__ import annotations

from diffrecon.methods.runner import FunctionRunner


def build(method, problem, params: dict, model=None) -> FunctionRunner:
    from diffrecon.baselines.mri import total_variation

    kwargs = {k: params[k] for k in ("lam", "iterations", "seed", "acs_width") if k in params}
    kwargs.setdefault("acs_width", problem.acs_width)
    return FunctionRunner(lambda kspace: total_variation(kspace, problem.mask, problem.coil_mode, **kwargs))
