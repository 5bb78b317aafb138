"""The contract between the reconstruct stage and every method.

A method's module defines ``build(method, problem, params, model) -> Runner``. The runner loads what it
needs once (network, projector, coil-map estimator), then maps the measured data of one case to
one :class:`Result`; the stage times the call and writes the result.

* MRI data: k-space ``(S, H, W)`` complex (magnitude / single-coil) or ``(S, C, H, W)``
  (multi-coil), already masked; reconstruction: magnitude ``(S, H, W)``.
* CT data: sinogram ``(S, V, det)``; reconstruction: volume ``(S, n, n)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Problem:
    """What is known about a measurement besides the data: its setting and operator parameters.

    MRI: ``mask`` (H, W) 0/1, ``coil_mode``, ``acs_width`` (side of the fully sampled centre).
    CT: ``geometry`` (:class:`~diffrecon.physics.ct.CTGeometry`), ``limited_angle``.
    """

    modality: str
    setting: str
    mask: np.ndarray | None = None
    coil_mode: str | None = None
    acs_width: int | None = None
    geometry: Any = None
    limited_angle: bool = False


@dataclass
class Result:
    """One reconstructed case.

    ``reconstruction`` (S, H, W) float32; ``std`` the pixel-wise posterior standard deviation
    of sampling methods; ``nfe`` network evaluations (all posterior samples) and
    ``network_seconds`` their time; ``seconds`` the wall time of the whole case (set by the
    stage); ``provenance`` what produced it (device, seed, ... — the stage adds model sha256,
    parameter hash, commit and library versions).
    """

    reconstruction: np.ndarray
    std: np.ndarray | None = None
    nfe: int | None = None
    network_seconds: float | None = None
    seconds: float = math.nan
    provenance: dict = field(default_factory=dict)


class Runner:
    """``runner(data) -> Result`` for one case; :meth:`close` releases what :meth:`build` made.

    Subclasses override :meth:`__call__` (and :meth:`close` when they hold resources); or wrap a
    plain function with :class:`FunctionRunner`. ``device`` is recorded in the provenance.
    """

    device: str = "cpu"
    #: the parameters as the algorithm uses them, when the runner derives them from the
    #: resolved ones (e.g. CT data-consistency weights converted per geometry); recorded by the
    #: stage as the file attribute ``sampler_params``
    sampler_params: dict | None = None

    def __call__(self, data: np.ndarray) -> Result:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (idempotent); the default holds none."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FunctionRunner(Runner):
    """A runner from ``fn(data) -> ndarray | Result`` (and an optional ``close``)."""

    def __init__(self, fn: Callable[[np.ndarray], Any], close: Callable[[], None] | None = None,
                 device: str = "cpu"):
        self._fn, self._close, self.device = fn, close, str(device)

    def __call__(self, data: np.ndarray) -> Result:
        out = self._fn(data)
        return out if isinstance(out, Result) else Result(reconstruction=np.asarray(out))

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()
