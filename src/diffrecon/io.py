"""The one reader and writer of the project's HDF5 files.

Every stage file holds one group per test case, so a reconstruction never sees a target:

``measurements.h5``  root attrs ``modality``, ``dataset``, ``setting``, ``split``;
                     MRI: dataset ``mask`` (H, W), attrs ``coil_mode``, ``mask`` (JSON metadata),
                     ``cases/<case>/kspace`` (S, [C,] H, W) complex64 (attrs ``scale``, ``source``,
                     ``slices``); prospective data (setting ``prospective-<coil_mode>``, root attr
                     ``prospective``) also ``cases/<case>/mask`` (H, W), each case's own mask;
                     CT: dataset ``angles`` (V,) radians, attrs ``n``, ``det_count``, ``projector``,
                     ``noise`` (JSON), ``cases/<case>/sinogram`` (S, V, det) float32 (attr ``source``)
``target.h5``        ``cases/<case>/target`` (S, H, W) float32; root attrs as above
``recon.h5``         ``cases/<case>/reconstruction`` (S, H, W) float32 (fastMRI's prediction key),
                     optional ``std``; case attrs ``seconds``, ``nfe``, ``network_seconds``,
                     ``device``; root attrs ``modality``, ``method``, ``setting``, ``params``
                     (JSON), ``model``, ``provenance`` (JSON: parameter hash, model sha256,
                     commit, library versions, seed), optional ``sampler_params`` (JSON: the
                     parameters as the algorithm used them, e.g. CT data-consistency weights
                     converted to the true adjoint's units); the file of a block of slices
                     (``reconstruct --slices``) also root attr ``block`` and case attrs
                     ``slice_start``, ``slice_stop``, ``volume_slices``; the file of a group of
                     the cases (``reconstruct(cases="K/N")``) root attrs ``case_group`` ("K/N"),
                     ``case_count`` (cases of the whole list) and case attr ``case_index``; it
                     may hold no case (``cases`` is then an empty group)

Files are written atomically: to ``<name>.part``, renamed on success (nothing half-written).
Every reader and writer also takes an open binary buffer (``io.BytesIO``) instead of a path:
the command line keeps its intermediate stage files in memory, so nothing of them outlives
the process.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

__all__ = ["atomic_h5", "read_cases", "read_attrs", "read_case_attrs", "read_mask", "read_problem",
           "ct_geometry", "read_case_masks", "with_mask", "CaseWriter", "write_ct_measurements_header", "write_result", "write_single",
           "read_single", "PartialStore"]


def _is_buffer(path) -> bool:
    return hasattr(path, "read") and hasattr(path, "seek")


def sidecar_model(meta: dict) -> str:
    """Which model a weights file's sidecar describes: its ``method`` (``score_mri`` when absent,
    as in the first exported priors), except the FBP-U-Net, a ``unet`` of ``kind`` ``fbp_unet``."""
    return "fbp_unet" if meta.get("kind") == "fbp_unet" else meta.get("method", "score_mri")


def sidecar_field(meta: dict, field: str):
    """A sidecar's ``field``; ``mask_family`` is derived from a supervised MRI baseline's ``mask``
    record as the workflow names its models' folders (``gaussian1d-R4-acs0.12``)."""
    mask = meta.get("mask")
    if field == "mask_family" and isinstance(mask, dict):
        return f"{mask['kind']}-R{float(mask['acceleration']):g}-acs{float(mask['acs_fraction']):g}"
    return meta.get(field)


def sha256_file(path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks (any size)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path):
    """Yield ``<path>.part`` to write to; it replaces ``path`` when the block ends without error and
    is removed otherwise. A stale ``.part`` left by a killed job is removed first, so a ``.part`` is
    never taken as an output (nothing half-written under the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_h5(path):
    """Open ``path`` for writing through a temporary file renamed on success; an in-memory
    buffer (``io.BytesIO``) is written directly.

    ``<name>.part`` is never an output (a killed job leaves no file Snakemake would take as
    finished); a stale one left by a killed job is removed before writing, and the temporary file
    is removed when the block fails."""
    if _is_buffer(path):
        path.seek(0)
        path.truncate()
        with h5py.File(path, "w") as f:
            yield f
        return
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield f


# ----------------------------------------------------------------------------------- reading
@contextmanager
def _stage_file(path):
    """The open stage file ``path``; any reading problem is a one-line ``DataFormatError`` naming it."""
    from diffrecon.data.fastmri import open_h5, reading

    if _is_buffer(path):                       # an in-memory stage file (the command line)
        path.seek(0)
        with reading("<in-memory stage file>", "stage file"), h5py.File(path, "r") as f:
            yield f
        return
    path = Path(path)
    with reading(path, "stage file"), open_h5(path) as f:
        yield f


def read_cases(path, key: str) -> dict[str, np.ndarray]:
    """``{case: cases/<case>/<key>}`` of a stage file, in stored order.

    Every case must hold ``key``, a numeric array with at least one slice and only finite values
    (:class:`~diffrecon.errors.DataFormatError` naming the file and case otherwise).
    """
    from diffrecon.data.fastmri import DataFormatError, check_finite

    with _stage_file(path) as f:
        if "cases" not in f or not isinstance(f["cases"], h5py.Group):
            raise DataFormatError(f"{path}: no 'cases' group: not a stage file of this project")
        out = {}
        for name in f["cases"]:
            group = f["cases"][name]
            if not isinstance(group, h5py.Group) or key not in group or not isinstance(group[key], h5py.Dataset):
                raise DataFormatError(f"{path}: case '{name}' has no '{key}' dataset")
            out[name] = group[key][()]
    for name, value in out.items():
        if not np.issubdtype(value.dtype, np.number) or value.ndim < 1 or value.shape[0] == 0:
            raise DataFormatError(f"{path}: cases/{name}/{key} is not a non-empty numeric array "
                                  f"({value.dtype}, shape {value.shape})")
        check_finite(path, f"cases/{name}/{key}", value)
    return out


def read_attrs(path) -> dict:
    """Root attributes of a stage file."""
    with _stage_file(path) as f:
        return dict(f.attrs)


def read_case_attrs(path) -> dict[str, dict]:
    """``{case: attrs of cases/<case>}``."""
    with _stage_file(path) as f:
        return {name: dict(f["cases"][name].attrs) for name in f["cases"]}


def read_mask(path) -> np.ndarray:
    """The (H, W) sampling mask of an MRI measurements file (finite 0/1 values, at least one sample)."""
    from diffrecon.data.fastmri import DataFormatError

    with _stage_file(path) as f:
        if "mask" not in f:
            raise DataFormatError(f"{path}: no 'mask' dataset: not an MRI measurements file")
        mask = f["mask"][()]
    if mask.ndim != 2 or not np.isin(mask, (0, 1)).all() or not mask.any():
        raise DataFormatError(f"{path}: 'mask' must be an (H, W) array of 0/1 values with a sample, "
                              f"got {mask.dtype} {mask.shape}")
    return mask


def ct_geometry(path):
    """The :class:`~diffrecon.physics.ct.CTGeometry` of a CT measurements file."""
    from diffrecon.physics.ct import CTGeometry

    with _stage_file(path) as f:
        a = f.attrs
        return CTGeometry(n=int(a["n"]), angles=tuple(float(t) for t in f["angles"][()]),
                          det_count=int(a["det_count"]), projector=str(a["projector"]))


def _is_limited_angle(setting: str, geom) -> bool:
    """la<degrees> settings; for a user sinogram, views spanning well under 180° (and more than 20)."""
    from diffrecon.settings import CTSetting

    try:
        return CTSetting.parse(setting).kind == "la"
    except ValueError:
        span = max(geom.angles) - min(geom.angles)
        return geom.n_views > 20 and span < np.deg2rad(150)


def read_problem(path):
    """The :class:`~diffrecon.methods.runner.Problem` of a measurements file (mask / geometry)."""
    from diffrecon.data.fastmri import DataFormatError, reading

    attrs = read_attrs(path)
    if attrs.get("modality") not in ("mri", "ct") or "setting" not in attrs:
        raise DataFormatError(f"{path}: root attributes 'modality' (mri / ct) and 'setting' missing: "
                              "not a measurements file")
    with reading(path, "measurements file"):
        return _problem(path, attrs)


def _problem(path, attrs):
    from diffrecon.methods.runner import Problem

    if attrs["modality"] == "mri":
        from diffrecon.physics.masks import acs_width
        from diffrecon.settings import MRISetting

        mask = read_mask(path)
        try:
            setting = MRISetting.parse(attrs["setting"])
        except ValueError:              # prospective data / a given mask: the mask tells the ACS
            return with_mask(Problem("mri", str(attrs["setting"]), mask=mask, coil_mode=str(attrs["coil_mode"])), mask)
        return Problem("mri", setting.name, mask=mask, coil_mode=setting.coil_mode,
                       acs_width=max(acs_width(mask.shape, setting.acs_fraction), 4))
    geom = ct_geometry(path)
    setting = str(attrs["setting"])
    return Problem("ct", setting, geometry=geom, limited_angle=_is_limited_angle(setting, geom))


def read_case_masks(path) -> dict[str, np.ndarray]:
    """``{case: cases/<case>/mask}`` of the cases that carry their own mask (prospective data)."""
    with _stage_file(path) as f:
        return {name: f["cases"][name]["mask"][()] for name in f["cases"] if "mask" in f["cases"][name]}


def with_mask(problem, mask: np.ndarray):
    """``problem`` with another (H, W) mask; the ACS width is that mask's fully sampled centre
    block of columns (at least 4)."""
    import dataclasses

    from diffrecon.physics.masks import measured_acs_width

    return dataclasses.replace(problem, mask=np.asarray(mask, dtype=np.float32),
                               acs_width=max(measured_acs_width(mask), 4))


# ----------------------------------------------------------------------------------- writing
class CaseWriter:
    """Write one stage file case by case: ``with CaseWriter(path) as w: w.add(case, key=array, ...)``.

    ``attrs`` given to :meth:`add` go on the case group; :meth:`finish` sets root attributes
    and root datasets (mask, angles). The ``cases`` group exists even when no case is added. The file appears only when the block ends without error.
    """

    def __init__(self, path, compress: tuple[str, ...] = ()):
        self.path, self.compress = (path if _is_buffer(path) else Path(path)), set(compress)
        self._ctx = None
        self.f: h5py.File | None = None

    def __enter__(self) -> "CaseWriter":
        self._ctx = atomic_h5(self.path)
        self.f = self._ctx.__enter__()
        self.f.require_group("cases")          # present even when no case is added (an empty case group)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)

    def add(self, case: str, attrs: dict | None = None, **arrays) -> None:
        g = self.f.require_group(f"cases/{case}")
        for key, value in arrays.items():
            if value is None:
                continue
            if key in self.compress:
                g.create_dataset(key, data=value, compression="gzip", compression_opts=1)
            else:
                g.create_dataset(key, data=value)
        g.attrs.update({k: v for k, v in (attrs or {}).items() if v is not None})

    def finish(self, attrs: dict | None = None, **datasets) -> None:
        for key, value in datasets.items():
            self.f.create_dataset(key, data=value)
        self.f.attrs.update({k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in (attrs or {}).items()})


def write_ct_measurements_header(writer: CaseWriter, geometry, dataset: str, setting: str,
                                 noise: dict | None = None, split: str = "test") -> None:
    """Root datasets and attributes of a CT measurements file."""
    writer.finish({"modality": "ct", "dataset": dataset, "setting": setting, "split": split, "n": geometry.n,
                   "det_count": geometry.det_count, "projector": geometry.projector,
                   "noise": json.dumps(noise or {})}, angles=np.asarray(geometry.angles))


def write_result(writer: CaseWriter, case: str, result, attrs: dict | None = None) -> None:
    """One :class:`~diffrecon.methods.runner.Result` as ``cases/<case>`` (``attrs``: more case attributes)."""
    std = None if result.std is None else np.asarray(result.std, dtype=np.float32)
    writer.add(case, {"seconds": result.seconds, "nfe": result.nfe, "network_seconds": result.network_seconds,
                      "device": result.provenance.get("device"), **(attrs or {})},
               reconstruction=np.asarray(result.reconstruction).astype(np.float32), std=std)


def write_single(path, arrays: dict, attrs: dict) -> None:
    """A one-reconstruction file for the command line: datasets at the root (``reconstruction``,
    optional ``std``), attributes (dicts as JSON)."""
    with atomic_h5(path) as f:
        for key, value in arrays.items():
            if value is not None:
                f.create_dataset(key, data=value)
        f.attrs.update({k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in attrs.items()})


def read_single(path, key: str = "reconstruction") -> np.ndarray:
    """A root dataset of a file written by :func:`write_single`."""
    with h5py.File(path, "r") as f:
        return f[key][()]


# ----------------------------------------------------------------------------- partial results
class PartialStore:
    """Finished parts of a long reconstruction, kept so that a killed run resumes where it stopped.

    ``<output>.partial/<key>/<case>-<crc>.<start>-<stop>.h5``: one file per reconstructed part
    (a block of a volume's slices, or a whole volume), written atomically
    (:func:`atomic_h5`: ``reconstruction`` (s, H, W) float32, optional ``std``, attrs
    ``seconds``, ``nfe``, ``network_seconds``, ``device``, ``data_sha256``). ``key`` is the hash of
    everything the numbers depend on (method, resolved parameters, model checksum, mask or
    geometry): a rerun with other parameters finds no part of its own and removes the others'
    (:meth:`open`). A part is reused only when the sha256 of its input slices matches too.
    :meth:`remove` deletes the whole directory once the output is complete.
    """

    def __init__(self, output, key: str):
        output = Path(output)
        self.root = output.with_name(output.name + ".partial")
        self.key = str(key)
        self.dir = self.root / self.key

    def open(self) -> "PartialStore":
        """Remove the parts of other keys (stale parameters); the directory of this key is made
        when the first part is saved."""
        import shutil

        if self.root.is_dir():
            for other in self.root.iterdir():
                if other.name != self.key:
                    shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink(missing_ok=True)
        return self

    def tidy(self) -> None:
        """Remove ``<output>.partial`` if it holds no stored part (a run that failed before its first)."""
        import shutil

        if self.root.is_dir() and not any(p.suffix == ".h5" for p in self.root.rglob("*") if p.is_file()):
            shutil.rmtree(self.root, ignore_errors=True)

    def _path(self, case: str, start: int, stop: int) -> Path:
        import re
        import zlib

        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", case)[:80]
        return self.dir / f"{safe}-{zlib.crc32(case.encode()):08x}.{start}-{stop}.h5"

    @staticmethod
    def data_hash(data: np.ndarray) -> str:
        import hashlib

        a = np.ascontiguousarray(data)
        return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()

    def load(self, case: str, start: int, stop: int, data: np.ndarray):
        """The stored :class:`~diffrecon.methods.runner.Result` of slices [start, stop) of ``case``,
        or None (absent, unreadable, or computed from other input data)."""
        from diffrecon.methods.runner import Result

        path = self._path(case, start, stop)
        if not path.is_file():
            return None
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("data_sha256") != self.data_hash(data):
                    return None
                a = dict(f.attrs)
                return Result(reconstruction=f["reconstruction"][()],
                              std=f["std"][()] if "std" in f else None,
                              nfe=None if a.get("nfe", -1) < 0 else int(a["nfe"]),
                              network_seconds=None if np.isnan(a.get("network_seconds", np.nan))
                              else float(a["network_seconds"]),
                              seconds=float(a["seconds"]), provenance={"device": str(a.get("device", ""))})
        except (OSError, KeyError, ValueError):        # a damaged part is recomputed
            return None

    def save(self, case: str, start: int, stop: int, data: np.ndarray, result) -> None:
        """Store ``result`` (slices [start, stop) of ``case``, computed from ``data``) atomically."""
        with atomic_h5(self._path(case, start, stop)) as f:
            f.create_dataset("reconstruction", data=np.asarray(result.reconstruction, dtype=np.float32))
            if result.std is not None:
                f.create_dataset("std", data=np.asarray(result.std, dtype=np.float32))
            f.attrs.update({"seconds": float(result.seconds), "data_sha256": self.data_hash(data),
                            "nfe": -1 if result.nfe is None else int(result.nfe),
                            "network_seconds": np.nan if result.network_seconds is None
                            else float(result.network_seconds),
                            "device": str(result.provenance.get("device", ""))})

    def remove(self) -> None:
        """Delete ``<output>.partial`` (the output is complete)."""
        import shutil

        shutil.rmtree(self.root, ignore_errors=True)
