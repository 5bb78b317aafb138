"""A toy CT method for the registry test: every slice is the mean of the sinogram (no physics).

It exists to show what a new method needs: this one module with ``build`` and one registry
entry (``tests/unit/test_methods.py`` registers it)."""

import numpy as np

from diffrecon.methods.runner import Result, Runner


class MeanFill(Runner):
    def __init__(self, problem, level):
        self.n, self.level = problem.geometry.n, level
        self.closed = False

    def __call__(self, sinogram):
        if sinogram.ndim != 3:
            raise ValueError(f"sinogram must be (S, V, det), got {sinogram.shape}")
        value = self.level * float(np.mean(sinogram))
        rec = np.full((sinogram.shape[0], self.n, self.n), value, np.float32)
        return Result(reconstruction=rec, nfe=7, network_seconds=0.0, provenance={"seed": 3})

    def close(self):
        self.closed = True


def build(method, problem, params, model=None):
    return MeanFill(problem, params["level"])
