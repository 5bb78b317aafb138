"""Method ``fbp``: filtered backprojection (Ram-Lak) slice by slice with ASTRA. ``n_threads``:
ASTRA worker threads."""

from __future__ import annotations

from diffrecon.methods.runner import FunctionRunner


def build(method, problem, params: dict, model=None) -> FunctionRunner:
    from diffrecon.baselines.ct import fbp

    n_threads = params.get("n_threads")
    return FunctionRunner(lambda sinogram: fbp(sinogram, problem.geometry, n_threads=n_threads))
