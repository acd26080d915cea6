"""The event contract's second-release additions: ``file_done`` names the local file and
its size, a failing callback's exception is in the WARNING's message, and a progress
argument that cannot be called is refused before anything moves."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ursa import DataInterface, DownloadProgress, Profile, QueryResult
from ursa.testing import Recording


def test_file_done_names_the_local_file_and_its_size(
    profile: Profile, recording: Recording, tmp_path: Path, boto: Any
) -> None:
    data = DataInterface(profile)
    events: list[DownloadProgress] = []
    rows = data.query(recording_hash=recording.recording_hash, status="all")
    rows = QueryResult(r for r in rows if r.status in ("raw", "ingested"))
    paths = data.download(rows, tmp_path, progress=events.append)
    done = [e for e in events if e.phase == "file_done"]
    assert sorted(e.path for e in done if e.path) == sorted(paths)
    buckets = {urlsplit(r.raw_storage_uri).netloc for r in rows}
    buckets |= {urlsplit(r.storage_uri).netloc for r in rows if r.storage_uri}
    for e in done:
        assert e.path is not None and e.path.is_absolute() and e.key is not None
        heads = []
        for bucket in buckets:
            with contextlib.suppress(boto.exceptions.ClientError):
                heads.append(boto.head_object(Bucket=bucket, Key=e.key)["ContentLength"])
        assert e.size in heads and e.path.stat().st_size == e.size
    # Appended after retries, so positional construction and field order stay valid.
    names = [f.name for f in dataclasses.fields(DownloadProgress)]
    assert names[-3:] == ["retries", "path", "size"]
    assert all(e.path is None and e.size is None for e in events if e.phase != "file_done")


def test_a_failing_callback_is_named_in_the_warning_text(
    profile: Profile, recording: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(e: DownloadProgress) -> None:
        if e.phase == "modality_done":
            raise RuntimeError("widget gone")

    caplog.set_level(logging.WARNING, logger="ursa.download")
    data = DataInterface(profile)
    data.download(data.query(recording_hash=recording.recording_hash), tmp_path, progress=explode)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert messages
    assert all(m.endswith("modality_done: RuntimeError: widget gone") for m in messages), messages


@pytest.mark.parametrize("progress", ["yes", 1, True])
def test_a_progress_that_cannot_be_called_is_a_type_error(
    profile: Profile, recording: Recording, tmp_path: Path, progress: Any
) -> None:
    data = DataInterface(profile)
    rows = data.query(recording_hash=recording.recording_hash)
    with pytest.raises(TypeError, match="progress must be a callable"):
        data.download(rows, tmp_path / "dest", progress=progress)
    assert not (tmp_path / "dest").exists()
