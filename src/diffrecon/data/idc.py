"""LIDC-IDRI (or any collection) CT series from the NCI Imaging Data Commons, via ``idc-index``.

* :func:`query_series` selects series from the index that ships inside the ``idc-index``
  package (no network): collection, modality, a patient list or the first ``count`` patients.
* :func:`download_series` fetches the selected series with the package's own client into a
  DICOM tree (``<dest>/<collection>/<PatientID>/<StudyUID>/<Modality>_<SeriesUID>/``) that a
  ``source: dicom`` dataset reads. Without network it fails with one line.

From a shell::

    python -m diffrecon.data.idc --dest /data/lidc --count 20            # first 20 patients
    python -m diffrecon.data.idc --dest /data/lidc --patients LIDC-IDRI-0001 LIDC-IDRI-0002
    python -m diffrecon.data.idc --dest /data/lidc --count 20 --dry-run  # list and size only

LIDC-IDRI images are CC BY 3.0 (TCIA); cite the collection when you publish results.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

COLUMNS = ["collection_id", "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
           "SeriesDescription", "instanceCount", "series_size_MB", "license_short_name"]


class DownloadError(RuntimeError):
    """A download did not complete; ``str(err)`` is one line naming what was asked and why it failed."""


def _client(client=None):
    if client is not None:
        return client
    try:
        from idc_index import IDCClient
    except ImportError:
        raise DownloadError("idc: the idc-index package is not installed (pip install idc-index)") from None
    return IDCClient()


def query_series(collection: str = "lidc_idri", modality: str = "CT", patients=None, count: int | None = None,
                 client=None):
    """Series of ``collection`` / ``modality`` in the shipped index (a pandas DataFrame, sorted by patient).

    ``patients``: PatientIDs to keep (each must exist); ``count``: keep the first ``count``
    patients (in PatientID order) of the selection.
    """
    index = _client(client).index
    sel = index[(index["collection_id"] == collection) & (index["Modality"] == modality)]
    if sel.empty:
        raise ValueError(f"idc: no {modality} series in collection '{collection}' of the index")
    if patients:
        missing = sorted(set(patients) - set(sel["PatientID"]))
        if missing:
            raise ValueError(f"idc: patient(s) {', '.join(missing)} have no {modality} series in '{collection}'")
        sel = sel[sel["PatientID"].isin(list(patients))]
    sel = sel.sort_values(["PatientID", "StudyInstanceUID", "SeriesInstanceUID"])
    if count is not None:
        keep = sorted(sel["PatientID"].unique())[:count]
        sel = sel[sel["PatientID"].isin(keep)]
    return sel[[c for c in COLUMNS if c in sel.columns]].reset_index(drop=True)


def _series_files(dest: Path, uids) -> int:
    """DICOM files in the series folders (``..._<SeriesInstanceUID>``) of ``uids`` under ``dest``."""
    wanted = set(uids)
    return sum(1 for d in dest.rglob("*") if d.is_dir() and d.name.rsplit("_", 1)[-1] in wanted
               for f in d.iterdir() if f.suffix == ".dcm" and f.is_file())


def download_series(selection, dest, client=None, progress: bool = False) -> Path:
    """Download the series of ``selection`` (from :func:`query_series`) into ``dest``; return ``dest``.

    Raises :class:`DownloadError` (one line) when the client fails (no network, no space) or when
    fewer files than the index lists arrived.
    """
    dest = Path(dest).expanduser()
    uids = list(selection["SeriesInstanceUID"])
    if not uids:
        raise DownloadError("idc: nothing to download (empty selection)")
    expected = int(selection["instanceCount"].sum())
    size_mb = float(selection["series_size_MB"].sum()) if "series_size_MB" in selection else float("nan")
    what = f"{len(uids)} series ({expected} files, {size_mb:.0f} MB) into {dest}"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _client(client).download_from_selection(downloadDir=str(dest), seriesInstanceUID=uids, quiet=True,
                                                show_progress_bar=progress, use_s5cmd_sync=True)
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - network, subprocess and storage errors alike become one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise DownloadError(f"idc: downloading {what} failed: {reason} (no network access?)") from None
    got = _series_files(dest, uids)
    if got < expected:
        raise DownloadError(f"idc: downloading {what} incomplete: {got} of {expected} files present (no network access?)")
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffrecon.data.idc", description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", required=True, type=Path, help="root of the DICOM tree (the dataset's root)")
    p.add_argument("--collection", default="lidc_idri")
    p.add_argument("--modality", default="CT")
    p.add_argument("--patients", nargs="+", default=None, help="PatientIDs (default: all, or the first --count)")
    p.add_argument("--count", type=int, default=None, help="the first N patients in PatientID order")
    p.add_argument("--dry-run", action="store_true", help="list the selected series and their size only")
    args = p.parse_args(argv)
    try:
        sel = query_series(args.collection, args.modality, args.patients, args.count)
        print(f"{len(sel)} series of {sel['PatientID'].nunique()} patients, {int(sel['instanceCount'].sum())} files, "
              f"{sel['series_size_MB'].sum():.0f} MB")
        if args.dry_run:
            print(sel[["PatientID", "SeriesInstanceUID", "instanceCount", "series_size_MB"]].to_string(index=False))
            return 0
        download_series(sel, args.dest, progress=True)
    except (DownloadError, ValueError) as err:
        print(err, file=sys.stderr)
        return 2
    print(f"done: {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
