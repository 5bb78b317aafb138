"""LIDC-IDRI selection from the index shipped in idc-index (offline) and the download's failure paths (mocked)."""

from __future__ import annotations

import pandas as pd
import pytest

from diffrecon.data.idc import DownloadError, download_series, main, query_series


@pytest.fixture(scope="module")
def client():
    idc_index = pytest.importorskip("idc_index")
    return idc_index.IDCClient()           # loads the index bundled with the package: no network


def test_query_lidc_ct_offline(client):
    sel = query_series("lidc_idri", "CT", count=3, client=client)
    assert sel["PatientID"].nunique() == 3
    assert list(sel["PatientID"].unique()) == sorted(sel["PatientID"].unique())
    assert (sel["Modality"] == "CT").all() and (sel["collection_id"] == "lidc_idri").all()
    assert sel["PatientID"].iloc[0] == "LIDC-IDRI-0001"
    assert (sel["instanceCount"] > 50).all()                 # axial CT series, not radiographs
    one = query_series("lidc_idri", "CT", patients=["LIDC-IDRI-0002"], client=client)
    assert set(one["PatientID"]) == {"LIDC-IDRI-0002"} and len(one) >= 1
    with pytest.raises(ValueError, match="LIDC-IDRI-9999"):
        query_series("lidc_idri", "CT", patients=["LIDC-IDRI-9999"], client=client)


class _FailingClient:
    def download_from_selection(self, **kw):
        raise RuntimeError("s5cmd: dial tcp: lookup s3.amazonaws.com: no such host\nmore detail")


class _SilentClient:
    """A client that returns without error but downloads nothing (as s5cmd may when offline)."""

    def download_from_selection(self, **kw):
        self.kw = kw


SEL = pd.DataFrame({"collection_id": ["lidc_idri"], "PatientID": ["LIDC-IDRI-0001"], "StudyInstanceUID": ["1.2"],
                    "SeriesInstanceUID": ["1.2.3"], "Modality": ["CT"], "instanceCount": [133], "series_size_MB": [70.0]})


def test_download_failure_is_one_line(tmp_path):
    with pytest.raises(DownloadError) as exc:
        download_series(SEL, tmp_path / "lidc", client=_FailingClient())
    msg = str(exc.value)
    assert "\n" not in msg and "1 series (133 files" in msg and "no such host" in msg and "no network" in msg


def test_download_that_brings_nothing_is_an_error(tmp_path):
    client = _SilentClient()
    with pytest.raises(DownloadError, match="incomplete: 0 of 133 files"):
        download_series(SEL, tmp_path / "lidc", client=client)
    assert client.kw["seriesInstanceUID"] == ["1.2.3"] and client.kw["downloadDir"] == str(tmp_path / "lidc")


def test_download_counts_the_series_folders(tmp_path):
    class _Writer:
        def download_from_selection(self, downloadDir, seriesInstanceUID, **kw):
            for uid in seriesInstanceUID:
                d = tmp_path / "lidc" / "lidc_idri" / "LIDC-IDRI-0001" / "1.2" / f"CT_{uid}"
                d.mkdir(parents=True)
                for i in range(133):
                    (d / f"{i}.dcm").write_bytes(b"")
    assert download_series(SEL, tmp_path / "lidc", client=_Writer()) == tmp_path / "lidc"


def test_cli_reports_one_line(tmp_path, monkeypatch, capsys):
    import diffrecon.data.idc as idc

    monkeypatch.setattr(idc, "_client", lambda client=None: _FailingClient() if client is None else client)
    monkeypatch.setattr(idc, "query_series", lambda *a, **k: SEL)
    assert main(["--dest", str(tmp_path), "--count", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("idc: downloading 1 series")
