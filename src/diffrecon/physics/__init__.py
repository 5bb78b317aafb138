"""diffrecon.physics: forward operators, sampling masks and coil sensitivities.

Names are imported on first use (PEP 562), so that light modules such as ``physics.masks``
do not pull torch, sigpy and ASTRA into every short pipeline job.
"""

import importlib

_NAMES = {
    "fft2c": "fft", "ifft2c": "fft",
    "MASK_KINDS": "masks", "Mask": "masks", "acs_width": "masks", "make_mask": "masks",
    "MultiCoilMRI": "mri", "SingleCoilMRI": "mri", "rss": "mri",
    "LinearOperator": "operator", "dot_test": "operator", "inner": "operator",
    "birdcage_maps": "sensitivity", "espirit_maps": "sensitivity",
    "CTGeometry": "ct", "ParallelBeamCT": "ct",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
