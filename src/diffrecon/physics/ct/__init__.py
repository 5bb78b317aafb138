"""Slice-wise 2-D parallel-beam CT (ASTRA toolbox).

* :mod:`.geometry`  :class:`CTGeometry` (angles, detector, projector kind)
* :mod:`.operator`  :class:`ParallelBeamCT` (``A``, ``A^T``, FBP, ``gram()``) and :func:`fbp`
* :mod:`.backends`  the arithmetic: ``cpu`` (2-D ASTRA per slice, thread pool), ``matrix``
  (ASTRA's sparse system matrix, torch CSR), ``cuda`` (ASTRA 3-D CUDA), one protocol

Names are imported on first use (PEP 562): ``CTGeometry`` alone (config validation) does not
pull torch in.
"""

import importlib

_NAMES = {
    "CTGeometry": ".geometry",
    "ParallelBeamCT": ".operator",
    "fbp": ".operator",
    "MATRIX_MAX_NNZ": ".backends.matrix",
}

__all__ = sorted(_NAMES)


def __getattr__(name):
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
