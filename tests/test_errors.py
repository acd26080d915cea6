"""Errors users can act on: one line that names what to fix, no library-internal source
paths, no raw XML, and an unreachable store said plainly with its cause."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conftest import profile_for
from ursa import ConfigurationError, DataInterface, ObjectStoreError, Profile
from ursa.testing import Recording


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_bad_where_filter_is_one_line_without_internal_paths(
    profile: Profile, recording: Recording
) -> None:
    data = DataInterface(profile)
    with pytest.raises(ValueError) as info:
        data.query(where="no_such_column = 1")
    message = str(info.value)
    assert "no_such_column" in message and "No field named" in message
    assert ".rs:" not in message and "/home/" not in message, message
    assert "\n" not in message


def test_an_unreachable_endpoint_says_so_with_its_cause(
    recording: Recording, profile: Profile, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigurationError) as info:
        DataInterface(profile_for(endpoint)).query()
    message = str(info.value)
    assert "cannot be reached" in message and endpoint in message, message
    assert ".rs:" not in message and "\n" not in message

    rows = DataInterface(profile).query(recording_hash=recording.recording_hash, modality="imu")
    with pytest.raises(ObjectStoreError) as store_info:
        DataInterface(profile_for(endpoint)).download(rows, tmp_path / "out")
    message = str(store_info.value)
    assert "cannot reach profile 'r2-test'" in message and endpoint in message, message
    assert "Connection refused" in message and "\n" not in message
    assert not (tmp_path / "out").exists()
