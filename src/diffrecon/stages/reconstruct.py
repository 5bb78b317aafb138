"""Stage ``reconstruct``: one method on every case of a measurements file → ``recon.h5``.

The method comes from the registry (:mod:`diffrecon.methods`); its runner is built once for
the file's :class:`~diffrecon.methods.runner.Problem` and applied to each case. Every case records
its wall time, and sampling methods their NFE and network seconds; the file records the resolved
parameters and the provenance (parameter hash, model sha256, commit, library versions, seed), and
the parameters as the algorithm used them when the runner derives them (``sampler_params``, e.g.
CT data-consistency weights converted to the true adjoint's units). Prospective measurements
carry one mask per case: the runner is then built per case.

Blocks and resuming (MRI: the methods treat slices independently, sampling methods seed their
noise per (volume, slice)):

* ``slices`` — a block of every volume's slices, ``"START:STOP"`` or ``"K/N"`` (the K-th of N
  near-equal blocks, K = 1 … N): the file holds that block of each case (case attrs
  ``slice_start``, ``slice_stop``, ``volume_slices``; root attr ``block``), and
  :func:`merge_blocks` assembles the files of blocks covering the volumes into the file a one-job
  run writes (same datasets, bit for bit with the same thread count).
* ``checkpoint_slices`` — reconstruct each case in parts of this many slices, each part stored
  when done (:class:`~diffrecon.io.PartialStore`, ``<output>.partial/<key>/``); a rerun after a
  kill reuses the stored parts whose key (method, resolved parameters, model checksum, mask or
  geometry) and input data match, and the directory is removed once the output is written.
  Without it every finished case is stored (CT volumes are always one part).

Case groups (both modalities, every method):

* ``cases`` — ``"K/N"``: only the K-th of N contiguous groups of the cell's case list (stored
  order, after ``max_cases``; group K = cases [⌊(K−1)·C/N⌋, ⌊K·C/N⌋) of C, so sizes differ by at
  most one, and a group is empty only when N > C: its file is valid and holds no case). Root
  attrs ``case_group`` ("K/N") and ``case_count`` (C), case attr ``case_index`` (the case's
  position in the whole list); :func:`merge_cases` concatenates the groups into the file a
  one-job run writes. A case's numbers do not depend on the grouping: MRI samplers seed per
  (volume, slice), CT samplers start every volume from a generator seeded by ``seed`` alone.
  One at a time with ``slices``.

None of these changes ``params_hash``: they only say which slices or cases this job computes, in
which order.
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


def parse_slices(spec) -> tuple[str, int, int]:
    """A block specification: ``"START:STOP"`` (STOP may be empty: to the end) → ("range", START,
    STOP or −1); ``"K/N"`` → ("part", K, N) with 1 ≤ K ≤ N. ValueError naming the value otherwise."""
    text = str(spec).strip()
    try:
        if "/" in text:
            k, n = (int(v) for v in text.split("/"))
            if not 1 <= k <= n:
                raise ValueError
            return "part", k, n
        a, b = text.split(":")
        start, stop = int(a or 0), (int(b) if b.strip() else -1)
        if start < 0 or (stop != -1 and stop <= start):
            raise ValueError
        return "range", start, stop
    except ValueError:
        raise ValueError(f"slices '{spec}': expected START:STOP (0 <= START < STOP) or K/N (1 <= K <= N)") from None


def block_range(spec, n_slices: int) -> tuple[int, int]:
    """Slices [start, stop) of a volume of ``n_slices`` that block ``spec`` covers (may be empty):
    START:STOP clipped to the volume; K/N = [⌊(K−1)·S/N⌋, ⌊K·S/N⌋)."""
    if spec is None:
        return 0, n_slices
    kind, a, b = parse_slices(spec)
    if kind == "part":
        return (a - 1) * n_slices // b, a * n_slices // b
    stop = n_slices if b == -1 else min(b, n_slices)
    return min(a, stop), stop


def parse_cases(spec) -> tuple[int, int]:
    """A case group specification ``"K/N"`` → (K, N) with 1 ≤ K ≤ N; ValueError naming the value otherwise."""
    try:
        k, n = (int(v) for v in str(spec).strip().split("/"))
        if not 1 <= k <= n:
            raise ValueError
        return k, n
    except ValueError:
        raise ValueError(f"cases '{spec}': expected K/N (1 <= K <= N)") from None


def case_range(spec, n_cases: int) -> tuple[int, int]:
    """Cases [start, stop) of a list of ``n_cases`` that group ``spec`` (K/N) covers:
    [⌊(K−1)·C/N⌋, ⌊K·C/N⌋) (empty when N > C and the group gets none)."""
    if spec is None:
        return 0, n_cases
    k, n = parse_cases(spec)
    return (k - 1) * n_cases // n, k * n_cases // n


def _parts(start: int, stop: int, size: int | None) -> list[tuple[int, int]]:
    if size is None or stop - start <= size:
        return [(start, stop)]
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def _joined(parts: list) -> "Result":
    """One case's :class:`Result` from the results of its consecutive parts: arrays concatenated,
    seconds and network seconds summed, NFE that of a part (every part runs the same network
    evaluations, each on its slices)."""
    import numpy as np

    from diffrecon.methods.runner import Result

    if len(parts) == 1:
        return parts[0]
    stds = [p.std for p in parts]
    nfes = [p.nfe for p in parts if p.nfe is not None]
    nets = [p.network_seconds for p in parts if p.network_seconds is not None]
    return Result(reconstruction=np.concatenate([np.asarray(p.reconstruction, dtype=np.float32) for p in parts]),
                  std=None if any(s is None for s in stds) else np.concatenate([np.asarray(s, np.float32) for s in stds]),
                  nfe=max(nfes) if nfes else None, network_seconds=sum(nets) if nets else None,
                  seconds=sum(p.seconds for p in parts), provenance=dict(parts[0].provenance))


def run_key(method: str, resolved: dict, model, problem) -> str:
    """Hash of what a part's numbers depend on besides its input slices: method, resolved
    parameters, model checksum, code commit, mask or geometry (the name of the ``.partial``
    subdirectory)."""
    import hashlib

    import numpy as np

    prov = provenance(method, resolved, model)
    h = hashlib.sha256(json.dumps([method, prov["params_hash"], prov.get("model_sha256"), prov["commit"], problem.setting,
                                   problem.coil_mode, problem.acs_width, repr(problem.geometry)],
                                  default=str).encode())
    if problem.mask is not None:
        h.update(np.ascontiguousarray(problem.mask, dtype=np.float32).tobytes())
    return h.hexdigest()[:16]


def reconstruct(measurements, method: str, out_path, params: dict | None = None, model=None,
                max_cases: int | None = None, slices=None, checkpoint_slices: int | None = None,
                partial_dir=None, cases=None) -> dict[str, float]:
    """Run ``method`` on the (first ``max_cases``) cases of ``measurements``; write ``out_path``.

    ``params`` override the method's defaults (:func:`diffrecon.methods.resolve_params`);
    ``model`` is the checkpoint stem of a learned method. ``slices`` (block of every volume) and
    ``checkpoint_slices`` (parts stored as they finish), also read from ``params``: see the module
    docstring; MRI only. ``cases`` (``"K/N"``, also read from ``params``): only that group of the
    case list, either modality (module docstring). Parts are stored next to ``out_path`` (``partial_dir``: next to that path
    instead, e.g. for an in-memory output); an in-memory output without ``partial_dir`` stores
    none. Returns the wall seconds per case.
    """
    from diffrecon.io import PartialStore
    from diffrecon.methods.runner import SliceBlock

    params = dict(params or {})
    max_cases = max_cases or params.pop("max_cases", None)
    slices = slices if slices is not None else params.pop("slices", None)
    checkpoint_slices = checkpoint_slices if checkpoint_slices is not None else params.pop("checkpoint_slices", None)
    cases = cases if cases is not None else params.pop("cases", None)
    params.pop("slices", None), params.pop("checkpoint_slices", None), params.pop("cases", None)
    problem = read_problem(measurements)
    entry = methods.get(method, problem.modality)
    mri = problem.modality == "mri"
    if slices is not None:
        parse_slices(slices)
    if cases is not None:
        parse_cases(cases)
        if slices is not None:
            raise ValueError(f"{measurements}: slices and cases: one at a time (a job is a block of every "
                             "volume's slices or a group of the volumes)")
    if checkpoint_slices is not None and (isinstance(checkpoint_slices, bool) or int(checkpoint_slices) < 1):
        raise ValueError(f"checkpoint_slices must be a positive number of slices, got {checkpoint_slices!r}")
    if not mri and (slices is not None or checkpoint_slices is not None):
        raise ValueError(f"{measurements}: slices / checkpoint_slices are for MRI only (CT methods couple the "
                         "slices of a volume: z-TV, 3-slice patches)")
    resolved = methods.resolve_params(method, params, limited_angle=problem.limited_angle)
    own_masks = read_case_masks(measurements) if mri else {}
    store_at = partial_dir if partial_dir is not None else (None if hasattr(out_path, "read") else out_path)
    runner = None if own_masks else methods.build_runner(method, problem, params, model)
    seconds = {}
    store = None
    try:
        data_of = read_cases(measurements, "kspace" if mri else "sinogram")
        every = list(data_of)[:max_cases] if max_cases else list(data_of)
        first, last = case_range(cases, len(every))
        names = every[first:last]
        if store_at is not None:
            store = PartialStore(store_at, run_key(method, resolved, model, problem)).open()
        with CaseWriter(out_path) as fo:
            for index, case in enumerate(names, first):
                data = data_of[case]
                lo, hi = block_range(slices, len(data)) if mri else (0, len(data))
                case_problem = with_mask(problem, own_masks[case]) if case in own_masks else problem
                if case in own_masks:       # prospective data: one runner per case, with its own mask
                    if runner is not None:
                        runner.close()
                    runner = methods.build_runner(method, case_problem, params, model)
                elif runner is None:
                    runner = methods.build_runner(method, problem, params, model)
                parts = []
                for a, b in _parts(lo, hi, int(checkpoint_slices) if checkpoint_slices else None):
                    part = data[a:b]
                    done = store.load(case, a, b, part) if store is not None and b > a else None
                    if done is None and b > a:
                        t0 = time.perf_counter()
                        done = runner(part, SliceBlock(case, a, b)) if mri else runner(part)
                        check_output(done, part, case_problem, method, measurements, case)
                        done.seconds = time.perf_counter() - t0
                        done.provenance.setdefault("device", str(getattr(runner, "device", "cpu")))
                        if store is not None:
                            store.save(case, a, b, part, done)
                    elif done is not None:
                        log.info("%s %s: slices %d-%d reused from %s", method, case, a, b, store.dir)
                    if done is not None:
                        parts.append(done)
                result = _joined(parts) if parts else _empty_result(data, problem)
                seconds[case] = result.seconds
                block_attrs = ({"slice_start": lo, "slice_stop": hi, "volume_slices": len(data)}
                               if slices is not None else {})
                if cases is not None:
                    block_attrs["case_index"] = index
                write_result(fo, case, result, block_attrs or None)
                log.info("%s %s: %.2f s", method, case, result.seconds)
            fo.finish({"modality": problem.modality, "method": entry.name, "setting": problem.setting,
                       "dataset": str(read_attrs(measurements).get("dataset", "")),
                       "params": json.dumps(resolved, default=str), "model": str(model or ""),
                       "provenance": json.dumps(provenance(method, resolved, model), default=str),
                       **({"sampler_params": json.dumps(runner.sampler_params, default=str)}
                          if getattr(runner, "sampler_params", None) is not None else {}),
                       **({"block": str(slices)} if slices is not None else {}),
                       **({"case_group": str(cases).strip(), "case_count": len(every)} if cases is not None else {})})
        if store is not None:
            store.remove()
    except BaseException:
        if store is not None:
            store.tidy()
        raise
    finally:
        if runner is not None:
            runner.close()
    return seconds


def _empty_result(data, problem):
    """The zero-slice result of an empty block (a volume shorter than the block's start)."""
    import numpy as np

    from diffrecon.methods.runner import Result

    h, w = problem.mask.shape[-2:]
    return Result(reconstruction=np.zeros((0, h, w), np.float32), seconds=0.0)


def check_cover(blocks: list[tuple[int, int, object]], total: int, what: str = "") -> None:
    """Blocks ``[(start, stop, file)]`` sorted by start must cover slices [0, ``total``) once,
    without gap; else a one-line ``ValueError`` naming the file where slices are missing or twice."""
    at = 0
    for start, stop, path in blocks:
        if start != at:
            gap = f"slices {at}-{start - 1} missing" if start > at else f"slices {start}-{at - 1} twice"
            raise ValueError(f"{path}: {what}{gap} in the blocks")
        at = stop
    if at != total:
        raise ValueError(f"{blocks[-1][2]}: {what}slices {at}-{total - 1} missing in the blocks")


#: root attributes that must agree between the block files of one reconstruction
_SAME = ("modality", "method", "setting", "dataset", "params", "model", "sampler_params")


def merge_blocks(block_files, out_path) -> None:
    """Assemble the files of slice blocks (:func:`reconstruct` with ``slices``) into the file a
    one-job run writes: per case the blocks' datasets concatenated in slice order, wall and network
    seconds summed, NFE that of a block. The blocks must come from one run (same root attributes
    and parameter hash) and cover each volume's slices once, without gap; otherwise a one-line
    ``ValueError`` names the file and what differs, and nothing is written."""
    import h5py
    import numpy as np

    from diffrecon.errors import DataFormatError
    from diffrecon.io import _stage_file

    block_files = list(block_files)
    if not block_files:
        raise ValueError("merge_blocks: no block files given")
    attrs, cases = [], {}
    for path in block_files:
        with _stage_file(path) as f:
            a = dict(f.attrs)
            if "block" not in a:
                raise DataFormatError(f"{path}: no root attribute 'block': not the file of a slice block")
            attrs.append(a)
            for name in f["cases"]:
                g = f["cases"][name]
                if not {"slice_start", "slice_stop", "volume_slices"} <= set(g.attrs):
                    raise DataFormatError(f"{path}: case '{name}' has no slice_start / slice_stop / volume_slices")
                cases.setdefault(name, []).append((int(g.attrs["slice_start"]), int(g.attrs["slice_stop"]),
                                                   int(g.attrs["volume_slices"]), path,
                                                   {k: g[k][()] for k in g}, dict(g.attrs)))
    first = attrs[0]
    for path, a in zip(block_files[1:], attrs[1:]):
        for key in _SAME:
            if a.get(key) != first.get(key):
                raise ValueError(f"{path}: attribute '{key}' differs from {block_files[0]}'s: blocks of other runs")
        if json.loads(a["provenance"]).get("params_hash") != json.loads(first["provenance"]).get("params_hash"):
            raise ValueError(f"{path}: parameter hash differs from {block_files[0]}'s: blocks of other runs")
    with CaseWriter(out_path) as fo:
        for name, blocks in cases.items():
            blocks.sort(key=lambda b: (b[0], b[1]))
            total = {b[2] for b in blocks}
            if len(total) != 1:
                raise ValueError(f"{blocks[0][3]}: case '{name}' has {sorted(total)} slices in different blocks")
            check_cover([(b[0], b[1], b[3]) for b in blocks], total.pop(), f"case '{name}': ")
            full = [b for b in blocks if b[1] > b[0]]
            keys = set(full[0][4]) if full else {"reconstruction"}
            arrays = {k: np.concatenate([b[4][k] for b in full]) if full else blocks[0][4][k] for k in keys}
            case_attrs = dict(full[0][5]) if full else dict(blocks[0][5])
            for k in ("slice_start", "slice_stop", "volume_slices"):
                case_attrs.pop(k, None)
            case_attrs["seconds"] = float(sum(b[5].get("seconds", 0.0) for b in full))
            nets = [b[5]["network_seconds"] for b in full if "network_seconds" in b[5]]
            if nets:
                case_attrs["network_seconds"] = float(sum(nets))
            fo.add(name, case_attrs, **arrays)
        fo.finish({k: v for k, v in first.items() if k != "block"})


#: root and case attributes that mark the file of a case group (absent from the merged file)
_GROUP_ROOT, _GROUP_CASE = ("case_group", "case_count"), ("case_index",)


def merge_cases(group_files, out_path) -> None:
    """Concatenate the files of case groups (:func:`reconstruct` with ``cases="K/N"``) into the
    file a one-job run writes: every case once, in the order of the whole case list, with its
    datasets and attributes (less ``case_index``), the root attributes of the groups (less
    ``case_group``, ``case_count``). The groups must come from one run (same root attributes,
    parameter hash and split N) and hold each of the list's cases once; otherwise a one-line
    ``ValueError`` names the file and what is wrong (a group missing or given twice, a case of
    another group), and nothing is written. Groups may be given in any order; a group may be empty."""
    from diffrecon.errors import DataFormatError
    from diffrecon.io import _stage_file

    group_files = list(group_files)
    if not group_files:
        raise ValueError("merge_cases: no case group files given")
    groups = []                                 # (K, N, path, root attrs, {case: (index, arrays, attrs)})
    for path in group_files:
        with _stage_file(path) as f:
            a = dict(f.attrs)
            if not set(_GROUP_ROOT) <= set(a):
                raise DataFormatError(f"{path}: no root attribute 'case_group': not the file of a case group")
            k, n = parse_cases(a["case_group"])
            held = {}
            for name in (f["cases"] if "cases" in f else []):
                g = f["cases"][name]
                if "case_index" not in g.attrs:
                    raise DataFormatError(f"{path}: case '{name}' has no case_index")
                held[name] = (int(g.attrs["case_index"]), {key: g[key][()] for key in g}, dict(g.attrs))
        groups.append((k, n, path, a, held))
    first = groups[0]

    def hash_of(a):
        return json.loads(a["provenance"]).get("params_hash")

    for k, n, path, a, held in groups[1:]:
        for key in _SAME:
            if key == "sampler_params" and not (held and first[4]):   # an empty group may build no runner
                continue
            if a.get(key) != first[3].get(key):
                raise ValueError(f"{path}: attribute '{key}' differs from {first[2]}'s: case groups of other runs")
        if hash_of(a) != hash_of(first[3]):
            raise ValueError(f"{path}: parameter hash differs from {first[2]}'s: case groups of other runs")
        if n != first[1] or int(a["case_count"]) != int(first[3]["case_count"]):
            raise ValueError(f"{path}: group {k}/{n} of {int(a['case_count'])} cases, but {first[2]} is group "
                             f"{first[0]}/{first[1]} of {int(first[3]['case_count'])}: case groups of other splits")
    total, n = int(first[3]["case_count"]), first[1]
    groups.sort(key=lambda g: g[0])
    seen, owner = {}, {}
    for k, _, path, _, held in groups:
        if k in seen:
            raise ValueError(f"{path}: case group {k}/{n} given twice (also {seen[k]})")
        seen[k] = path
        lo, hi = case_range(f"{k}/{n}", total)
        indices = sorted(i for i, _, _ in held.values())
        if indices != list(range(lo, hi)):
            raise ValueError(f"{path}: holds cases {indices} of {total}, but group {k}/{n} is cases "
                             f"{list(range(lo, hi))}: a damaged or foreign file")
        for name in held:
            if name in owner:
                raise ValueError(f"{path}: case '{name}' also in {owner[name]}: duplicated cases")
            owner[name] = path
    missing = [k for k in range(1, n + 1) if k not in seen]
    if missing:
        k = missing[0]
        lo, hi = case_range(f"{k}/{n}", total)
        before = [g[2] for g in groups if g[0] < k]
        where = before[-1] if before else groups[0][2]
        what = f"cases {lo}-{hi - 1} of {total}" if hi > lo else f"no case of {total}"
        raise ValueError(f"{where}: case group {k}/{n} ({what}) missing"
                         + (f", and {len(missing) - 1} more group(s)" if len(missing) > 1 else ""))
    full = [g for g in groups if g[4]]
    root = {key: v for key, v in first[3].items() if key not in _GROUP_ROOT}
    if full and "sampler_params" in full[0][3]:
        root["sampler_params"] = full[0][3]["sampler_params"]
    with CaseWriter(out_path) as fo:
        for _, _, _, _, held in groups:
            for name, (_, arrays, case_attrs) in sorted(held.items(), key=lambda item: item[1][0]):
                fo.add(name, {key: v for key, v in case_attrs.items() if key not in _GROUP_CASE}, **arrays)
        fo.finish(root)
