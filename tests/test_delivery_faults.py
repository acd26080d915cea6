"""The delivery verbs over a faulty network (the fault proxy in front of SeaweedFS): only
the bytes a clip needs are fetched, faults mid-read are retried with the exact result, an
object replaced while being read is refused, progress follows the download grammar, and
closing a stream, or a call failing, stops its requests."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

import delivery_oracle as oracle
from conftest import profile_for
from faultproxy import FaultProxy, RequestRecord, Rule
from ursa import (
    AccessDeniedError,
    DataInterface,
    DownloadProgress,
    ObjectStoreError,
    Profile,
    RetryPolicy,
)
from ursa.catalog import ModalityRow
from ursa.testing import Recording, RowSpec, build_recording

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, idle_timeout_s=2.0)
ROWS = (
    RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunk_bytes=16_000),
    RowSpec(
        "imu",
        asset_format="parquet",
        segments=1,
        segment_size=1,
        table_rows=20_000,
        table_row_group_rows=1_000,
    ),
    RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_fps=30),
)


@pytest.fixture(scope="module")
def rec(profile: Profile) -> Recording:
    return build_recording(profile, ROWS, seed=941, duration_s=100.0)


def row(rec: Recording, modality: str) -> ModalityRow:
    return next(r for r in rec.rows if r.modality == modality)


def asset_bytes(boto: Any, r: ModalityRow) -> int:
    assert r.storage_uri is not None
    bucket, key = oracle.split(r.storage_uri)
    listing = boto.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
    return sum(o["Size"] for o in listing if o["Key"] == key or o["Key"].startswith(key + "/"))


@pytest.mark.parametrize("modality", ["eeg", "imu", "camera"])
def test_a_tenth_of_an_asset_reads_well_under_half_of_it(
    profile: Profile, rec: Recording, boto: Any, modality: str
) -> None:
    data = DataInterface(profile)
    events: list[DownloadProgress] = []
    target = data.query(recording_hash=rec.recording_hash, modality=modality)
    (got,) = data.materialize(target, start=50.0, stop=60.0, progress=events.append)
    whole = asset_bytes(boto, row(rec, modality))
    fetched = events[-1].bytes_done
    assert events[-1].phase == "finish"
    if modality == "camera":  # a lazy clip: frames() fetches
        clip = got["camera"]
        assert fetched == 0
        assert len(clip.frames()) == 300
        fetched = clip.bytes_fetched
    else:
        assert len(got[modality]["time"] if modality == "eeg" else got[modality]) > 0
    assert 0 < fetched < whole * 0.35, (fetched, whole)


def test_progress_follows_the_download_grammar(profile: Profile, rec: Recording) -> None:
    data = DataInterface(profile)
    events: list[DownloadProgress] = []
    target = data.query(recording_hash=rec.recording_hash, modality=["eeg", "imu"])
    data.materialize(target, start=1.0, stop=3.0, progress=events.append)
    phases = [e.phase for e in events]
    assert phases == ["start", "plan_done"] + [
        "modality_start",
        "file_done",
        "modality_done",
    ] * 2 + ["finish"]
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and done[-1] > 0
    assert all(e.bytes_total is None for e in events[:1])
    assert all(e.bytes_total is not None for e in events[1:])
    assert [e.modality for e in events if e.phase == "file_done"] == ["eeg", "imu"]
    assert events[-1].bytes_done <= (events[-1].bytes_total or 0)


FAULTS = [
    Rule("reset_mid_body", method="GET", after_bytes=1_000, times=1),
    Rule("status", method="GET", status=503, times=2),
    Rule("truncate", method="GET", after_bytes=2_000, times=1),
    Rule("flip_byte", method="GET", after_bytes=100, times=1),
]


@pytest.mark.parametrize("rule", FAULTS, ids=lambda r: r.fault)
def test_faults_mid_read_are_retried_to_the_exact_clip(
    profile: Profile, rec: Recording, faulty: FaultProxy, rule: Rule
) -> None:
    direct = DataInterface(profile)
    target = direct.query(recording_hash=rec.recording_hash, modality="eeg")
    (truth,) = direct.materialize(target, start=10.0, stop=13.0)
    rule.key = r"/eeg\.zarr/data/c/"  # a chunk, mid-read of the clip
    faulty.add(rule)
    events: list[DownloadProgress] = []
    through = DataInterface(profile_for(faulty.endpoint))
    (got,) = through.materialize(target, start=10.0, stop=13.0, retry=FAST, progress=events.append)
    assert rule.fired >= 1
    assert got["eeg"].identical(truth["eeg"])
    assert events[-1].retries >= 1


def test_an_object_replaced_while_read_is_refused(
    profile: Profile, boto: Any, faulty: FaultProxy
) -> None:
    rows = [RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunk_bytes=8_000)]
    rec = build_recording(profile, rows, seed=951, duration_s=10.0)
    assert rec.rows[0].storage_uri is not None
    bucket, key = oracle.split(rec.rows[0].storage_uri)
    chunk = f"{key}/data/c/0/3"
    original = boto.get_object(Bucket=bucket, Key=chunk)["Body"].read()

    def replace() -> None:
        boto.put_object(Bucket=bucket, Key=chunk, Body=bytes(len(original)))

    faulty.add(Rule("replace_object", method="GET", key=r"/data/c/0/3$", action=replace))
    data = DataInterface(profile_for(faulty.endpoint))
    target = data.query(recording_hash=rec.recording_hash)
    with pytest.raises(ObjectStoreError) as caught:
        data.materialize(target, start=2.5, stop=4.5, retry=FAST)
    assert "c/0/3" in str(caught.value)


def chunk_records(proxy: FaultProxy, rec: Recording) -> list[RequestRecord]:
    return [
        r
        for r in proxy.requests
        if r.method == "GET" and "/data/c/" in r.path and rec.recording_hash in r.path
    ]


def chunk_gets(proxy: FaultProxy, rec: Recording) -> list[str]:
    return [r.path for r in chunk_records(proxy, rec)]


@pytest.fixture(scope="module")
def own_rec(profile: Profile) -> Recording:
    """A recording no other test reads: a stream another test left to the garbage
    collector may still be fetching the shared one's chunks through the session proxy."""
    return build_recording(profile, ROWS[:1], seed=942, duration_s=100.0)


def test_closing_a_stream_stops_its_requests(
    profile: Profile, own_rec: Recording, faulty: FaultProxy
) -> None:
    rec = own_rec
    data = DataInterface(profile_for(faulty.endpoint))
    target = data.query(recording_hash=rec.recording_hash, modality="eeg")
    # One request at a time, each chunk (2 s of EEG, 16 kB) sent in 0.6 s, forty windows
    # (ten chunks) ahead:
    # without cancellation the engine would go on fetching long after close().
    # The rule goes first: a stream may start fetching ahead as soon as it is made.
    faulty.add(Rule("slow", method="GET", key=r"/data/c/", chunk=4_000, delay_s=0.15))
    stream = data.stream(target, window=0.5, prefetch=40, max_concurrency=1, retry=FAST)
    it = iter(stream)
    first = next(it)
    assert first["eeg"].sizes["time"] == 125
    before = time.monotonic()
    stream.close()
    assert time.monotonic() - before < 1.0
    time.sleep(0.3)  # a request cancelled mid-flight may still reach the proxy
    count = len(chunk_gets(faulty, rec))
    time.sleep(1.0)
    assert len(chunk_gets(faulty, rec)) == count  # nothing new started after close()
    assert count < 10  # fewer than the ten chunks the prefetch asked for (4 seen under load)
    assert list(it) == []


def test_stream_retries_faults_too(profile: Profile, rec: Recording, faulty: FaultProxy) -> None:
    direct = DataInterface(profile)
    target = direct.query(recording_hash=rec.recording_hash, modality="eeg")
    truth = [w["eeg"]["data"].to_numpy() for w in direct.stream(target, window=2.0, stop=10.0)]
    faulty.add(Rule("reset_mid_body", method="GET", key=r"/data/c/", after_bytes=500, times=3))
    through = DataInterface(profile_for(faulty.endpoint))
    stream = through.stream(target, window=2.0, stop=10.0, retry=FAST)
    got = [w["eeg"]["data"].to_numpy() for w in stream]
    assert len(got) == len(truth) == 5
    for a, b in zip(got, truth, strict=True):
        np.testing.assert_array_equal(a, b)
    assert stream.retries >= 3


# A failed call stops its other reads. Every chunk (16 kB) is sent in 1 kB pieces 0.1 s
# apart, so each read takes ~1.5 s; one chunk of eeg is refused for good (403: never
# retried). A read cancelled mid-body ends at the proxy's next piece; one left running ends
# up to 1.5 s later.
LATE_S = 0.5


def refuse(faulty: FaultProxy, chunk: str) -> None:
    """Refuse eeg's chunk ``chunk`` (e.g. "0/2") for good and slow every other chunk."""
    faulty.add(Rule("status", method="GET", key=rf"/eeg\.zarr/data/c/{chunk}$", status=403))
    faulty.add(Rule("slow", method="GET", key=r"/data/c/", chunk=1_000, delay_s=0.1))


@pytest.fixture(scope="module")
def signals(profile: Profile) -> Recording:
    """Two Zarr rows of 50 chunks each, read by no other test."""
    rows = [
        RowSpec(m, asset_format="zarr", segments=1, segment_size=1, zarr_chunk_bytes=16_000)
        for m in ("eeg", "emg")
    ]
    return build_recording(profile, rows, seed=943, duration_s=100.0)


def assert_stopped(faulty: FaultProxy, rec: Recording, raised: float) -> None:
    """Nothing of the failed call runs on after it raised: no chunk request starts later,
    and none in flight then is answered in full."""
    time.sleep(LATE_S)  # a request cancelled mid-flight may still reach the proxy
    seen = chunk_gets(faulty, rec)
    time.sleep(1.5)
    assert chunk_gets(faulty, rec) == seen, "chunk requests started after the call raised"
    late = [r.path for r in chunk_records(faulty, rec) if (r.done or 0) > raised + LATE_S]
    assert late == [], "chunk requests were answered in full after the call raised"


def test_a_failed_materialize_stops_its_other_reads(
    profile: Profile, signals: Recording, faulty: FaultProxy
) -> None:
    data = DataInterface(profile_for(faulty.endpoint))
    target = data.query(recording_hash=signals.recording_hash)
    assert [r.modality for r in target] == ["eeg", "emg"]  # eeg is decoded (and fails) first
    refuse(faulty, "0/1")
    # One request at a time, taken in turn by the two rows' reads (each row's chunks in
    # key order: c/0/0, c/0/1, c/0/10, ...): eeg's second fails with emg's 49 to go.
    with pytest.raises(AccessDeniedError, match="c/0/1"):
        data.materialize(target, max_concurrency=1, retry=FAST)
    assert_stopped(faulty, signals, time.monotonic())


def test_a_failed_stream_stops_its_reads_ahead(
    profile: Profile, signals: Recording, faulty: FaultProxy
) -> None:
    data = DataInterface(profile_for(faulty.endpoint))
    target = data.query(recording_hash=signals.recording_hash, modality="eeg")
    refuse(faulty, "0/2")
    # One chunk per 2 s window, two requests at a time, 8 windows fetched ahead: the
    # window that needs c/0/2 fails with reads ahead under way and waiting.
    stream = data.stream(target, window=2.0, prefetch=8, max_concurrency=2, retry=FAST)
    got = 0
    with pytest.raises(AccessDeniedError, match="c/0/2"):
        for _ in stream:
            got += 1
    assert got == 2
    assert_stopped(faulty, signals, time.monotonic())
