"""The preprocessed CT store: DICOM series or NIfTI volumes -> one HDF5 volume per series.

Layout (``outdir`` = ``results/data/ct/<dataset>``)::

    <split>/<patient>_<series-hash>.h5   the canonical volume file (diffrecon.data.ct_volumes)
    splits.json, splits.csv              patient, series UID, slice count, output file per split

:func:`build_ct_store` returns the split -> files lists of the manifest and its
``preprocessing`` record (source files with sha256, or size and mtime for large trees;
window, target size, spacings, slice counts, package versions, skipped files).

Volumes are written into a staging folder and moved into place only when every series has
been converted: a failure leaves the previous store (or none), never a partial one.

Patient splits (``splits``: split -> list of PatientIDs or glob patterns): a patient listed by
exact name goes to that split; any other goes to the first split (in config order) with a
matching pattern, e.g. ``{test: [L067], train: ["*"]}``; patients matching nothing are not used.
A listed patient that is not found, or a split left empty, is an error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path

from diffrecon.data.ct_volumes import write_ct_volume
from diffrecon.data.dicom import DEFAULT_WINDOW, files_in_volume_order, load_series, read_series_tree
from diffrecon.data.fastmri import DataFormatError
from diffrecon.io import atomic_path, sha256_file

log = logging.getLogger("diffrecon.data")

HASH_LIMIT_BYTES = 2 * 1024**3     # hash_files: auto -> sha256 below this total size, else size + mtime
PACKAGES = ("diffrecon", "numpy", "h5py", "scikit-image", "pydicom", "nibabel")


def package_versions() -> dict:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _is_pattern(s: str) -> bool:
    return any(c in s for c in "*?[")


def assign_splits(patients, splits_cfg: dict) -> dict:
    """PatientID -> split (see the module docstring); raises naming a listed patient not found."""
    exact = {}
    for split, names in splits_cfg.items():
        for p in names:
            if not _is_pattern(p):
                if p in exact and exact[p] != split:
                    raise DataFormatError(f"splits: patient {p} is listed in both {exact[p]} and {split}")
                exact[p] = split
    missing = sorted(set(exact) - set(patients))
    if missing:
        raise DataFormatError(f"splits: patient(s) {', '.join(missing)} not found in the data")
    out = {}
    for p in patients:
        if p in exact:
            out[p] = exact[p]
            continue
        for split, names in splits_cfg.items():
            if any(_is_pattern(pat) and fnmatch(p, pat) for pat in names):
                out[p] = split
                break
    return out


def fingerprints(files, root: Path, mode: str = "auto") -> list[dict]:
    """Each file's path relative to ``root`` with sha256 (``mode`` sha256) or size and mtime (stat)."""
    files = [Path(f) for f in files]
    if mode == "auto":
        mode = "sha256" if sum(f.stat().st_size for f in files) <= HASH_LIMIT_BYTES else "stat"
    out = []
    for f in files:
        rec = {"path": os.path.relpath(f, root)}
        if mode == "sha256":
            rec["sha256"] = sha256_file(f)
        else:
            st = f.stat()
            rec.update(size=st.st_size, mtime=st.st_mtime)
        out.append(rec)
    return out


def _atomic_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _volume_name(patient: str, key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in patient) or "patient"
    return f"{safe}_{hashlib.sha1(key.encode()).hexdigest()[:10]}.h5"


def _dicom_items(cfg: dict, notes: list) -> list[dict]:
    """Checked series of the DICOM tree as items (patient, key, loader, provenance)."""
    root = Path(cfg["root"]).expanduser()
    window = cfg.get("window", DEFAULT_WINDOW)
    size = cfg.get("size", 256)
    series, skipped = read_series_tree(root, ("CT",), cfg.get("series_filter"),
                                       float(cfg.get("spacing_tolerance", 0.1)), bool(cfg.get("skip_bad_series", False)))
    notes.extend(skipped)
    if not series:
        raise DataFormatError(f"{root}: no axial CT series found ({len(skipped)} files or series skipped)")
    items = []
    for s in series:
        items.append({
            "patient": s.patient_id, "key": s.uid, "series_uid": s.uid, "description": s.description,
            "files": [str(p) for p in files_in_volume_order(s)], "n_slices": s.n_slices,
            "load": (lambda s=s: load_series(s, window, size)),
            "provenance": {"source_series_uid": s.uid, "source_patient_id": s.patient_id,
                           "hu_window": [float(w) for w in window], "resized_from": list(s.shape),
                           "source_root": str(root)},
        })
    return items


def _nifti_items(cfg: dict) -> dict:
    """split -> items of the NIfTI files matched by each split's glob pattern."""
    import glob

    from diffrecon.data.nifti import load_nifti

    window, size = cfg.get("window", DEFAULT_WINDOW), cfg.get("size", 256)
    normalize = cfg.get("normalize", "window")
    out = {}
    for split, pattern in cfg["files"].items():
        matches = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matches:
            raise DataFormatError(f"datasets: split '{split}' pattern '{pattern}' matches no file")
        out[split] = []
        for path in matches:
            stem = Path(path).name.removesuffix(".gz").removesuffix(".nii")
            prov = {"source_patient_id": stem, "scaling": normalize}
            if normalize == "window":
                prov["hu_window"] = [float(w) for w in window]
            out[split].append({"patient": stem, "key": str(Path(path).resolve()), "series_uid": None, "files": [path],
                               "n_slices": None, "load": (lambda p=path: load_nifti(p, window, normalize, size)),
                               "provenance": prov})
    return out


def build_ct_store(name: str, cfg: dict, outdir) -> tuple[dict, dict]:
    """Convert dataset ``name`` (``source: dicom`` or ``nifti``) into ``outdir``; return (splits, preprocessing)."""
    outdir = Path(outdir)
    notes: list[str] = []
    window = cfg.get("window", DEFAULT_WINDOW)
    if not float(window[0]) < float(window[1]):
        raise DataFormatError(f"datasets.{name}.window: {list(window)}: the lower bound must be below the upper")
    if cfg["source"] == "dicom":
        root = Path(cfg["root"]).expanduser()
        items = _dicom_items(cfg, notes)
        assignment = assign_splits(sorted({it["patient"] for it in items}), cfg["splits"])
        by_split = {split: [it for it in items if assignment.get(it["patient"]) == split] for split in cfg["splits"]}
        unused = sorted({it["patient"] for it in items} - set(assignment))
        if unused:
            notes.append(f"patients in no split (not used): {', '.join(unused)}")
    else:
        root = None
        by_split = _nifti_items(cfg)
    for split, its in by_split.items():
        if not its:
            raise DataFormatError(f"datasets.{name}.splits.{split}: no series assigned to this split")
    size = cfg.get("size", 256)
    description = cfg.get("description", f"{cfg['source']} CT")
    staging = outdir / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    splits, records = {}, {}
    try:
        for split, its in by_split.items():
            splits[split], records[split] = [], []
            for it in its:
                volume, spacing = it["load"]()
                fname = _volume_name(it["patient"], it["key"])
                prov = {**it["provenance"], "source_files": it["files"],
                        "target_size": size if size is not None else volume.shape[-1]}
                write_ct_volume(staging / split / fname, volume, spacing, description, prov)
                final = outdir / split / fname
                splits[split].append(str(final))
                src_root = root if root is not None else Path(it["files"][0]).parent
                records[split].append({
                    "patient": it["patient"], "series_uid": it["series_uid"], "output": str(final),
                    "n_slices": int(volume.shape[0]), "shape": list(volume.shape),
                    "spacing_mm": [round(float(v), 6) for v in spacing],
                    "files": fingerprints(it["files"], src_root, cfg.get("hash_files", "auto"))})
                log.info("%s/%s: %s %s -> %s (%d slices, spacing %s mm)", name, split, it["patient"],
                         it["series_uid"] or it["files"][0], final.name, volume.shape[0], records[split][-1]["spacing_mm"])
        for split in by_split:
            shutil.rmtree(outdir / split, ignore_errors=True)
            (staging / split).replace(outdir / split)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_split_tables(outdir, records)
    preprocessing = {
        "source": cfg["source"], "root": str(root) if root is not None else None,
        "window": [float(w) for w in cfg.get("window", DEFAULT_WINDOW)] if cfg.get("normalize", "window") == "window" else None,
        "normalize": cfg.get("normalize", "window"), "target_size": size,
        "spacing_tolerance_mm": cfg.get("spacing_tolerance", 0.1) if cfg["source"] == "dicom" else None,
        "orientation": "slices inferior->superior, rows anterior->posterior, columns right->left (axial display)",
        "splits": records, "skipped": notes, "packages": package_versions(),
    }
    return splits, preprocessing


def _write_split_tables(outdir: Path, records: dict) -> None:
    rows = [{"split": split, "patient": r["patient"], "series_uid": r["series_uid"] or "", "n_slices": r["n_slices"],
             "n_files": len(r["files"]), "output": Path(r["output"]).name}
            for split, recs in records.items() for r in recs]
    _atomic_text(outdir / "splits.json", json.dumps(
        {split: [{k: r[k] for k in ("patient", "series_uid", "n_slices", "output")} | {"files": [f["path"] for f in r["files"]]}
                 for r in recs] for split, recs in records.items()}, indent=2))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["split", "patient", "series_uid", "n_slices", "n_files", "output"])
    writer.writeheader()
    writer.writerows(rows)
    _atomic_text(outdir / "splits.csv", buf.getvalue())
