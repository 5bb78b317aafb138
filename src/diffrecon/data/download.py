"""Download fastMRI archives from the links of the data agreement: resumable, checked, extracted.

URL list: a text file, one archive a line, ``<url> [size=<bytes>] [sha256=<hex>]``; blank lines
and ``#`` comments are ignored. It is given by path (``--urls-file``, config
``download.urls_file``) or by the environment variable ``FASTMRI_URLS_FILE``. The links are
personal and signed: only file names (the last component of the link's path, without its query)
are ever printed, logged or written; keep the list out of the repository.

For an archive ``<name>`` in the destination folder:

* ``<name>.part`` — the bytes received so far; a new run asks only for the missing bytes
  (HTTP ``Range: bytes=<n>-``) and appends them (a server that ignores the range restarts it);
* ``<name>`` — the complete archive, after its size and sha256 (when given) are checked; a wrong
  size or checksum removes the partial file and fails;
* ``<stem>/`` — its content (tar, tar.gz, tar.xz, tar.bz2 or zip), extracted into
  ``.<stem>.extracting`` and renamed when complete; a corrupt archive is removed with it;
* ``.<name>.done`` — a JSON record (size, sha256, folder): only this marks the archive done.

Every failure is a :class:`DownloadError` with a one-line message naming the archive.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from diffrecon.io import sha256_file

log = logging.getLogger("diffrecon")

ENV_URLS = "FASTMRI_URLS_FILE"
_SUFFIXES = (".tar.gz", ".tar.xz", ".tar.bz2", ".tgz", ".tar", ".zip")


class DownloadError(OSError):
    """A download, check or extraction failed; ``str(err)`` is one line naming the archive."""


@dataclass(frozen=True)
class Entry:
    """One line of the URL list (``url`` is never printed)."""

    url: str
    name: str
    size: int | None = None
    sha256: str | None = None

    def __repr__(self) -> str:                          # keep the link out of tracebacks and logs
        return f"Entry(name={self.name!r}, size={self.size}, sha256={self.sha256})"


def file_name(url: str) -> str:
    """The archive's file name: the last component of the link's path (no query)."""
    return unquote(Path(urlsplit(url).path).name)


def read_url_list(path=None) -> list[Entry]:
    """Parse the URL list at ``path`` (default: ``$FASTMRI_URLS_FILE``)."""
    if path is None:
        path = os.environ.get(ENV_URLS)
        if not path:
            raise DownloadError(f"no URL list: give --urls-file (config download.urls_file) or set {ENV_URLS}")
    path = Path(path).expanduser()
    if not path.is_file():
        raise DownloadError(f"{path}: URL list not found")
    entries = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        url, *fields = line.split()
        name = file_name(url)
        if urlsplit(url).scheme not in ("http", "https") or not name:
            raise DownloadError(f"{path}: line {i}: not an http(s) link to a file")
        opts = {}
        for field in fields:
            key, _, value = field.partition("=")
            if key not in ("size", "sha256") or not value:
                raise DownloadError(f"{path}: line {i} ({name}): unknown field '{key}' (allowed: size=, sha256=)")
            opts[key] = value
        try:
            size = int(opts["size"]) if "size" in opts else None
        except ValueError:
            raise DownloadError(f"{path}: line {i} ({name}): size must be an integer") from None
        sha = opts.get("sha256", "").lower() or None
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise DownloadError(f"{path}: line {i} ({name}): sha256 must be 64 hex digits")
        entries.append(Entry(url, name, size, sha))
    if not entries:
        raise DownloadError(f"{path}: no links in the URL list")
    return entries


def fetch(entry: Entry, dest, timeout: float = 60.0, chunk: int = 1 << 20) -> Path:
    """Download ``entry`` into ``dest/<name>`` (resuming ``<name>.part``); check size and sha256."""
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final, part = dest / entry.name, dest / (entry.name + ".part")
    if final.is_file():
        return final
    have = part.stat().st_size if part.is_file() else 0
    if entry.size is not None and have > entry.size:
        part.unlink()
        have = 0
    if entry.size is None or have < entry.size:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            resp = urlopen(Request(entry.url, headers=headers), timeout=timeout)
        except HTTPError as exc:
            if not (exc.code == 416 and have):          # 416: nothing left to send
                raise DownloadError(f"{entry.name}: HTTP error {exc.code} ({exc.reason})") from None
            resp = None
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(f"{entry.name}: cannot connect ({reason.__class__.__name__})") from None
        if resp is not None:
            with resp:
                if have and resp.status != 206:         # the server ignored the range: start again
                    have = 0
                length = resp.headers.get("Content-Length")
                expected = have + int(length) if length is not None else None
                received = have
                with open(part, "ab" if have else "wb") as out:
                    try:
                        while block := resp.read(chunk):
                            out.write(block)
                            received += len(block)
                    except (OSError, ValueError) as exc:
                        raise DownloadError(f"{entry.name}: transfer interrupted after {received} bytes "
                                            f"({exc.__class__.__name__}); run again to resume") from None
                if expected is not None and received < expected:
                    raise DownloadError(f"{entry.name}: transfer interrupted after {received} of {expected} bytes; "
                                        "run again to resume")
    got = part.stat().st_size
    if entry.size is not None and got != entry.size:
        if got < entry.size:
            raise DownloadError(f"{entry.name}: {got} of {entry.size} bytes; run again to resume")
        part.unlink()
        raise DownloadError(f"{entry.name}: {got} bytes, expected {entry.size}; partial file removed")
    if entry.sha256 is not None:
        digest = sha256_file(part)
        if digest != entry.sha256:
            part.unlink()
            raise DownloadError(f"{entry.name}: sha256 {digest[:12]}… differs from the expected "
                                f"{entry.sha256[:12]}…; partial file removed")
    part.replace(final)
    log.info("%s: downloaded (%d bytes)", entry.name, got)
    return final


def archive_stem(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe_members(names, archive: str) -> None:
    for n in names:
        p = Path(n)
        if p.is_absolute() or ".." in p.parts:
            raise DownloadError(f"{archive}: member '{n}' would be written outside the destination")


def extract(archive: Path, dest) -> Path:
    """Extract ``archive`` into ``dest/<stem>/`` through a temporary folder; remove it (and the
    archive) if the archive is corrupt."""
    import lzma
    import zlib

    dest = Path(dest)
    stem = archive_stem(archive.name)
    target, tmp = dest / stem, dest / f".{stem}.extracting"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), archive.name)
                z.extractall(tmp)
        else:
            with tarfile.open(archive, "r:*") as t:
                members = t.getmembers()
                _safe_members([m.name for m in members], archive.name)
                if any(m.issym() or m.islnk() or m.isdev() for m in members):
                    raise DownloadError(f"{archive.name}: links or devices in the archive are not extracted")
                if hasattr(tarfile, "data_filter"):
                    t.extractall(tmp, filter="data")
                else:
                    t.extractall(tmp)
    except DownloadError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise DownloadError(f"{archive.name}: corrupt or unreadable archive ({exc.__class__.__name__}); "
                            "archive removed") from None
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    log.info("%s: extracted into %s/", archive.name, stem)
    return target


def download_all(entries: list[Entry], dest, only=None, keep_archives: bool = False,
                 timeout: float = 60.0) -> list[dict]:
    """Fetch, check and extract the ``entries`` (those named in ``only``, when given) into ``dest``.

    Archives already marked done are skipped. Returns one record per archive: name, status,
    size, sha256 (of the archive), the folder it was extracted to. No record holds a link.
    """
    dest = Path(dest).expanduser()
    if only:
        missing = sorted(set(only) - {e.name for e in entries})
        if missing:
            raise DownloadError(f"not in the URL list: {', '.join(missing)}")
        entries = [e for e in entries if e.name in set(only)]
    records = []
    for entry in entries:
        done = dest / f".{entry.name}.done"
        if done.is_file():
            rec = json.loads(done.read_text())
            if Path(rec["extracted_to"]).is_dir():
                records.append({**rec, "status": "already done"})
                continue
        archive = fetch(entry, dest, timeout=timeout)
        size, digest = archive.stat().st_size, sha256_file(archive)
        folder = extract(archive, dest)
        if not keep_archives:
            archive.unlink()
        rec = {"name": entry.name, "size": size, "sha256": digest, "extracted_to": str(folder)}
        tmp = done.with_name(done.name + ".part")
        tmp.write_text(json.dumps(rec, indent=2))
        tmp.replace(done)
        records.append({**rec, "status": "downloaded"})
    return records
