"""`python -m minicompress.data --download` (what `make test` runs): fetch once, or say how."""

from __future__ import annotations

import urllib.error

import pytest

from minicompress import data


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No data anywhere: no $MINICOMPRESS_DATA, an empty cache, no system copy."""
    monkeypatch.delenv("MINICOMPRESS_DATA", raising=False)
    monkeypatch.setattr(data, "_user_cache", lambda: tmp_path / "cache")
    monkeypatch.setattr(data, "search_paths", lambda root=None, dataset="fashion-mnist": [])
    data._load_uint8.cache_clear()
    yield tmp_path
    data._load_uint8.cache_clear()


def test_offline_download_fails_with_the_remedies(nowhere, monkeypatch, capsys):
    def offline(ds, target):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data, "_download", offline)
    assert data.main(["--download"]) == 1
    err = capsys.readouterr().err
    assert "the download failed (URLError" in err
    assert "apt-get install dataset-fashion-mnist" in err and "MINICOMPRESS_DATA" in err


def test_without_download_the_command_only_reports(nowhere, monkeypatch, capsys):
    def must_not_run(ds, target):
        raise AssertionError("downloaded without --download")

    monkeypatch.setattr(data, "_download", must_not_run)
    assert data.main([]) == 1
    assert "not found" in capsys.readouterr().err
