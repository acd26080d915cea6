"""The delivery verbs refuse bad input with one clear ValueError before any byte moves
(the rows come from the real catalog; the verbs then run against an endpoint where nothing
listens, so any request would fail differently), and need the ``ursa[data]`` extra."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from conftest import profile_for
from ursa import DataInterface, Profile
from ursa.testing import Recording


@pytest.fixture(scope="module")
def dead() -> DataInterface:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return DataInterface(profile_for(f"http://127.0.0.1:{port}"))


def rows(profile: Profile, rec: Recording, status: str = "ingested", modality: Any = None) -> Any:
    return DataInterface(profile).query(
        recording_hash=rec.recording_hash, status=status, modality=modality
    )


@pytest.mark.parametrize(
    ("status", "message"),
    [("raw", "raw row"), ("ingesting", "is ingesting"), ("failed", "is failed")],
)
def test_rows_without_data_are_refused(
    profile: Profile, recording: Recording, dead: DataInterface, status: str, message: str
) -> None:
    target = rows(profile, recording, status)
    assert len(target) == 1
    with pytest.raises(ValueError, match=message):
        dead.materialize(target)
    with pytest.raises(ValueError, match=message):
        dead.stream(target, window=1.0)


def test_unknown_modality(profile: Profile, recording: Recording, dead: DataInterface) -> None:
    target = rows(profile, recording)
    with pytest.raises(ValueError, match=r"unknown modality 'ecg'.*camera/left"):
        dead.materialize(target, modalities=["eeg", "ecg"])
    with pytest.raises(ValueError, match=r"unknown modality 'camera/centre'"):
        dead.stream(target, window=1.0, modalities="camera/centre")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": 5.0, "stop": 5.0}, "start .* must be before stop"),
        ({"start": 6.0, "stop": 2.0}, "start .* must be before stop"),
        ({"start": float("nan")}, "start must be finite"),
        ({"start": dt.datetime(2026, 1, 1)}, "timezone-aware"),
        ({"stop": "10"}, "stop must be seconds"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_materialize_arguments(
    profile: Profile,
    recording: Recording,
    dead: DataInterface,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        dead.materialize(rows(profile, recording), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "window must be > 0"),
        ({"window": -1.0}, "window must be > 0"),
        ({"window": float("inf")}, "window must be > 0"),
        ({"window": 1.0, "stride": 0}, "stride must be > 0"),
        ({"window": 1.0, "prefetch": -1}, "prefetch"),
        ({"window": 1.0, "max_inflight_bytes": 0}, "max_inflight_bytes"),
        ({"window": 1.0, "start": 3.0, "stop": 1.0}, "must be before stop"),
    ],
)
def test_stream_arguments(
    profile: Profile,
    recording: Recording,
    dead: DataInterface,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        dead.stream(rows(profile, recording), **kwargs)


def test_a_plan_above_max_bytes_is_refused(profile: Profile, recording: Recording) -> None:
    data = DataInterface(profile)
    eeg = rows(profile, recording, modality="eeg")
    with pytest.raises(ValueError, match=r"needs about 256,000 bytes, above max_bytes=100,000"):
        data.materialize(eeg, max_bytes=100_000)  # 8 chunks of 32,000 bytes
    (rec,) = data.materialize(eeg, max_bytes=256_000)
    assert rec["eeg"].sizes["time"] == 8_000


@pytest.mark.parametrize("missing", ["xarray", "zarr", "av", "numpy"])
def test_without_the_data_extra_the_verbs_say_what_to_install(missing: str) -> None:
    code = f"""
import sys
sys.modules[{missing!r}] = None
from ursa import DataInterface, Profile
data = DataInterface(Profile(name="x", root="/nonexistent"))
for verb, kw in (("materialize", {{}}), ("stream", {{"window": 1.0}})):
    try:
        getattr(data, verb)([], **kw)
    except ImportError as exc:
        print(exc)
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    assert out == [f"materialize() and stream() need {missing!r}: pip install 'ursa[data]'"] * 2
