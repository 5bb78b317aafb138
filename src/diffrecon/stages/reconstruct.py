"""Stage ``reconstruct``: one method on every case of a measurements file → ``recon.h5``.

The method comes from the registry (:mod:`diffrecon.methods`); its runner is built once for
the file's :class:`~diffrecon.methods.runner.Problem` and applied to each case. Every case records
its wall time, and sampling methods their NFE and network seconds; the file records the resolved
parameters and the provenance (parameter hash, model sha256, commit, library versions, seed), and
the parameters as the algorithm used them when the runner derives them (``sampler_params``, e.g.
CT data-consistency weights converted to the true adjoint's units). Prospective measurements
carry one mask per case: the runner is then built per case.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from diffrecon import methods
from diffrecon.io import (CaseWriter, read_attrs, read_case_masks, read_cases, read_problem, with_mask,
                          write_result)

log = logging.getLogger("diffrecon")


def provenance(method: str, params: dict, model=None) -> dict:
    """What produced a reconstruction: hash of the resolved parameters, model checkpoint sha256,
    commit of the code, library versions."""
    from diffrecon.io import sha256_file
    from diffrecon.models.checkpoint import config_hash, git_commit, library_versions

    out = {"method": method, "params_hash": config_hash(params), "commit": git_commit(),
           "versions": library_versions(), "seed": params.get("seed")}
    if model is not None:
        weights = Path(model).with_suffix(".safetensors")
        out["model"] = str(weights)
        out["model_sha256"] = sha256_file(weights) if weights.is_file() else None
    return out


def check_output(result, data, problem, method: str, measurements, case: str) -> None:
    """A method's reconstruction of one case must be a finite (slices, H, W) array with one slice per
    measured slice (H, W the mask's / the geometry's grid); otherwise a one-line ``ValueError``
    names the method, the file and the case (and the stage writes nothing)."""
    import numpy as np

    rec = np.asarray(result.reconstruction)
    grid = tuple(problem.mask.shape) if problem.modality == "mri" else (problem.geometry.n,) * 2
    where = f"{measurements}: case '{case}', method {method}"
    if rec.ndim != 3 or rec.shape[0] != len(data) or (problem.modality == "ct" and tuple(rec.shape[1:]) != grid):
        raise ValueError(f"{where}: reconstruction has shape {rec.shape}, expected ({len(data)}, {grid[0]}, {grid[1]})")
    bad = rec.size - int(np.count_nonzero(np.isfinite(rec)))
    if bad:
        raise ValueError(f"{where}: reconstruction holds {bad} NaN or infinite values of {rec.size} "
                         "(diverged; check the method's parameters): nothing written")
    if result.std is not None and not np.isfinite(np.asarray(result.std)).all():
        raise ValueError(f"{where}: posterior std holds NaN or infinite values: nothing written")


def reconstruct(measurements, method: str, out_path, params: dict | None = None, model=None,
                max_cases: int | None = None) -> dict[str, float]:
    """Run ``method`` on the (first ``max_cases``) cases of ``measurements``; write ``out_path``.

    ``params`` override the method's defaults (:func:`diffrecon.methods.resolve_params`);
    ``model`` is the checkpoint stem of a learned method. Returns the wall seconds per case.
    """
    params = dict(params or {})
    max_cases = max_cases or params.pop("max_cases", None)
    problem = read_problem(measurements)
    entry = methods.get(method, problem.modality)
    resolved = methods.resolve_params(method, params, limited_angle=problem.limited_angle)
    own_masks = read_case_masks(measurements) if problem.modality == "mri" else {}
    runner = None if own_masks else methods.build_runner(method, problem, params, model)
    seconds = {}
    try:
        cases = read_cases(measurements, "kspace" if problem.modality == "mri" else "sinogram")
        names = list(cases)[:max_cases] if max_cases else list(cases)
        with CaseWriter(out_path) as fo:
            for case in names:
                if case in own_masks:       # prospective data: one runner per case, with its own mask
                    if runner is not None:
                        runner.close()
                    runner = methods.build_runner(method, with_mask(problem, own_masks[case]), params, model)
                elif runner is None:
                    runner = methods.build_runner(method, problem, params, model)
                t0 = time.perf_counter()
                result = runner(cases[case])
                check_output(result, cases[case], problem, method, measurements, case)
                result.seconds = seconds[case] = time.perf_counter() - t0
                result.provenance.setdefault("device", str(getattr(runner, "device", "cpu")))
                write_result(fo, case, result)
                log.info("%s %s: %.2f s", method, case, result.seconds)
            fo.finish({"modality": problem.modality, "method": entry.name, "setting": problem.setting,
                       "dataset": str(read_attrs(measurements).get("dataset", "")),
                       "params": json.dumps(resolved, default=str), "model": str(model or ""),
                       "provenance": json.dumps(provenance(method, resolved, model), default=str),
                       **({"sampler_params": json.dumps(runner.sampler_params, default=str)}
                          if getattr(runner, "sampler_params", None) is not None else {})})
    finally:
        if runner is not None:
            runner.close()
    return seconds
