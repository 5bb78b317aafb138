"""The contract between the reconstruct stage and every method.

A method's module defines ``build(method, problem, params, model) -> Runner``. The runner loads what it
needs once (network, projector, coil-map estimator), then maps the measured data of one case to
one :class:`Result`; the stage times the call and writes the result.

* MRI data: k-space ``(S, H, W)`` complex (magnitude / single-coil) or ``(S, C, H, W)``
  (multi-coil), already masked; reconstruction: magnitude ``(S, H, W)``.
* CT data: sinogram ``(S, V, det)``; reconstruction: volume ``(S, n, n)``.

``runner(data, block)``: ``block`` (:class:`SliceBlock`) says which volume the data are and
where its slices start in it. MRI methods treat slices independently (sampling methods seed
their noise per (volume, slice)), so a block of slices reconstructs to the whole run's numbers
and a volume may run in blocks — separate jobs, checkpointed parts. CT methods couple slices
(z-TV, 3-slice patches) and always get whole volumes.
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


@dataclass(frozen=True)
class SliceBlock:
    """Where the data given to a runner sit: volume (case) ``case``, slices ``start`` … ``stop − 1``
    of it (``stop`` None: to its end)."""

    case: str = ""
    start: int = 0
    stop: int | None = None


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

    def __call__(self, data: np.ndarray, block: SliceBlock | None = None) -> Result:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (idempotent); the default holds none."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FunctionRunner(Runner):
    """A runner from ``fn(data) -> ndarray | Result`` (and an optional ``close``); the function
    works on the slices it is given (the block does not change what it computes)."""

    def __init__(self, fn: Callable[[np.ndarray], Any], close: Callable[[], None] | None = None,
                 device: str = "cpu"):
        self._fn, self._close, self.device = fn, close, str(device)

    def __call__(self, data: np.ndarray, block: SliceBlock | None = None) -> Result:
        out = self._fn(data)
        return out if isinstance(out, Result) else Result(reconstruction=np.asarray(out))

    def close(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            close()


def image_size(problem: Problem) -> tuple[int, int]:
    """The (H, W) image grid of ``problem``: the mask's (MRI) or the geometry's n x n (CT)."""
    if problem.modality == "mri":
        return tuple(int(n) for n in problem.mask.shape[-2:])
    return (int(problem.geometry.n),) * 2


def check_trained_for(model, meta: dict, problem: Problem, params: dict | None = None) -> None:
    """Refuse a checkpoint trained for another problem than ``problem``: one line naming it and both values.

    The one rule of every learned method: the sidecar records what the network was trained for —
    ``image_size`` (every model), ``mask`` (kind, acceleration, ACS fraction: the MRI U-Net and E2E-VarNet) or
    ``setting`` (the FBP-U-Net) — and the runner compares it with the measurement. Priors are
    trained per image size; ``allow_size_mismatch: true`` in the method's parameters lets an
    expert apply a convolutional network at another size. A measurement without a named
    setting (a user sinogram, prospective data, a given mask file) is not compared by setting.
    """
    from diffrecon.errors import CheckpointError

    params = params or {}
    size = meta.get("image_size")
    grid = image_size(problem)
    if size is None:
        raise CheckpointError(f"{model}: sidecar records no image_size: cannot check it against the data's {grid[0]} x {grid[1]}")
    if (int(size), int(size)) != grid and not params.get("allow_size_mismatch", False):
        raise CheckpointError(f"{model}: trained on {size} x {size} images, the data are {grid[0]} x {grid[1]} "
                              "(train a model for this size, or set allow_size_mismatch: true)")
    if meta.get("kind") == "fbp_unet":
        if problem.setting != "user" and meta.get("setting") != problem.setting:
            raise CheckpointError(f"{model}: trained for setting {meta.get('setting')}, not {problem.setting}")
    elif meta.get("method") in ("unet", "varnet") and problem.modality == "mri":
        from diffrecon.settings import MRISetting

        try:
            setting = MRISetting.parse(problem.setting)
        except ValueError:
            return                      # prospective data / a mask file: no mask family to compare
        trained = meta.get("mask") or {}
        want = (setting.mask, float(setting.acceleration), float(setting.acs_fraction))
        have = (trained.get("kind"), trained.get("acceleration"), trained.get("acs_fraction"))
        try:
            same = have[0] == want[0] and abs(float(have[1]) - want[1]) < 1e-9 and abs(float(have[2]) - want[2]) < 1e-9
        except (TypeError, ValueError):
            same = False
        if not same:
            raise CheckpointError(f"{model}: trained for mask {have[0]} R{have[1]} ACS {have[2]}, "
                                  f"the data are {want[0]} R{want[1]:g} ACS {want[2]:g} (setting {problem.setting})")
