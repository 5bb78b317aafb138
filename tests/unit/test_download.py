"""Downloads from a local HTTP server with Range support (127.0.0.1, started and stopped here)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from diffrecon.data.download import DownloadError, download_all, read_url_list

SECRET = "Signature=s3cr3t-token"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        srv.requests.append((path, rng))
        data = srv.payloads.get(path)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data):
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = data[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut.pop(path, None)
        if cut is not None:                     # drop the connection part-way through
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.payloads, srv.cut, srv.requests = {}, {}, []
    srv.timeout = 5
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def _url(srv, name):
    return f"http://127.0.0.1:{srv.server_address[1]}/data/{name}?X-Expires=1&{SECRET}"


def _tar_gz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _list(tmp_path, lines):
    p = tmp_path / "urls.txt"
    p.write_text("# my fastMRI links\n" + "\n".join(lines) + "\n")
    return p


FILES = {"multicoil_val/file1000000.h5": random.Random(0).randbytes(20000), "multicoil_val/file1000001.h5": b"x" * 9000}


def test_interrupted_transfer_resumes_with_a_range_request(server, tmp_path, caplog):
    archive = _tar_gz(FILES)
    server.payloads["/data/knee_multicoil_val.tar.gz"] = archive
    server.cut["/data/knee_multicoil_val.tar.gz"] = 1000
    sha = hashlib.sha256(archive).hexdigest()
    urls = _list(tmp_path, [f"{_url(server, 'knee_multicoil_val.tar.gz')} size={len(archive)} sha256={sha}"])
    dest = tmp_path / "raw"
    caplog.set_level(logging.INFO, logger="diffrecon")
    with pytest.raises(DownloadError, match="knee_multicoil_val.tar.gz: transfer interrupted after 1000") as err:
        download_all(read_url_list(urls), dest, timeout=5)
    assert "\n" not in str(err.value) and SECRET not in str(err.value)
    assert (dest / "knee_multicoil_val.tar.gz.part").stat().st_size == 1000
    assert not (dest / "knee_multicoil_val.tar.gz").exists() and not (dest / ".knee_multicoil_val.tar.gz.done").exists()

    recs = download_all(read_url_list(urls), dest, timeout=5)
    assert server.requests == [("/data/knee_multicoil_val.tar.gz", None),
                               ("/data/knee_multicoil_val.tar.gz", "bytes=1000-")]
    assert recs[0]["status"] == "downloaded" and recs[0]["sha256"] == sha
    for name, data in FILES.items():
        assert (dest / "knee_multicoil_val" / name).read_bytes() == data
    assert not (dest / "knee_multicoil_val.tar.gz").exists()          # archive removed after extraction
    done = (dest / ".knee_multicoil_val.tar.gz.done").read_text()
    assert SECRET not in done and SECRET not in caplog.text and "127.0.0.1" not in caplog.text
    assert download_all(read_url_list(urls), dest)[0]["status"] == "already done"
    assert len(server.requests) == 2


def test_wrong_sha256_fails_and_leaves_nothing(server, tmp_path):
    server.payloads["/data/a.tar.gz"] = _tar_gz(FILES)
    urls = _list(tmp_path, [f"{_url(server, 'a.tar.gz')} sha256={'0' * 64}"])
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError, match=r"a.tar.gz: sha256 .* differs .*partial file removed") as err:
        download_all(read_url_list(urls), dest, timeout=5)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in dest.iterdir()) == []


def test_corrupt_archive_fails_and_leaves_nothing(server, tmp_path):
    server.payloads["/data/b.tar.gz"] = b"\x1f\x8b\x08 this is not a gzip stream" * 50
    urls = _list(tmp_path, [_url(server, "b.tar.gz")])
    dest = tmp_path / "raw"
    with pytest.raises(DownloadError, match="b.tar.gz: corrupt or unreadable archive"):
        download_all(read_url_list(urls), dest, timeout=5)
    assert sorted(p.name for p in dest.iterdir()) == []


def test_cli_download_zip_names_only(server, tmp_path, capsys, monkeypatch):
    from diffrecon.cli import main

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("brain/file_brain_1.h5", b"abc" * 100)
    server.payloads["/data/brain_val.zip"] = buf.getvalue()
    monkeypatch.setenv("FASTMRI_URLS_FILE", str(_list(tmp_path, [_url(server, "brain_val.zip")])))
    assert main(["download", "--dest", str(tmp_path / "raw"), "--only", "brain_val.zip"]) == 0
    out = capsys.readouterr().out
    assert "brain_val.zip: downloaded" in out and SECRET not in out and "127.0.0.1" not in out
    assert (tmp_path / "raw" / "brain_val" / "brain" / "file_brain_1.h5").read_bytes() == b"abc" * 100
    assert main(["download", "--dest", str(tmp_path / "raw"), "--only", "other.tar"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "diffrecon: error: not in the URL list: other.tar"


def test_url_list_errors_do_not_echo_links(tmp_path, monkeypatch):
    bad = _list(tmp_path, [f"ftp://host/x.tar?{SECRET}"])
    with pytest.raises(DownloadError, match="line 2: not an http") as err:
        read_url_list(bad)
    assert SECRET not in str(err.value)
    monkeypatch.delenv("FASTMRI_URLS_FILE", raising=False)
    with pytest.raises(DownloadError, match="FASTMRI_URLS_FILE"):
        read_url_list(None)
    assert json.dumps(repr(read_url_list(_list(tmp_path, [f"https://h/k.tar?{SECRET} size=3"]))[0])).count("s3cr3t") == 0
