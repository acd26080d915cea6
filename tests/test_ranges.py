"""Ranged reads through the engine (``ursa.ranges``), against SeaweedFS behind the fault
proxy: exact bytes (boto3 is the oracle), nearby ranges sharing a GET, the ETag pin,
retries mid-read, whole-object checksums, cancellation and the byte budget."""

from __future__ import annotations

import time
from concurrent.futures import CancelledError
from typing import Any

import numpy as np
import pytest

from conftest import boto_client, profile_for
from faultproxy import FaultProxy, Rule
from ursa import IntegrityError, ObjectChangedError, RetryPolicy
from ursa.ranges import ByteRange, RangeReader
from ursa.stores import locate
from ursa.testing.seaweed import SeaweedServer

KiB, MiB = 1 << 10, 1 << 20
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, idle_timeout_s=2.0)
BUCKET = "ursa-assets"


@pytest.fixture(scope="module")
def boto(s3: SeaweedServer) -> Any:
    """boto3 uploading as older SDKs did (no stored checksum: an object's only check is
    its MD5 ETag), and reading as the oracle."""
    return boto_client(s3.endpoint, request_checksum_calculation="when_required")


def put(boto: Any, key: str, size: int, seed: int) -> tuple[bytes, str]:
    data = np.random.default_rng(seed).bytes(size)
    boto.put_object(Bucket=BUCKET, Key=key, Body=data)
    head = boto.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    assert "ChecksumCRC32" not in head, "the store keeps a checksum: not an old upload"
    return data, head["ETag"]


def reader_for(proxy: FaultProxy, **options: Any) -> RangeReader:
    store = locate(profile_for(proxy.endpoint), f"s3://{BUCKET}/").store
    return RangeReader(store, retry=FAST, **options)


def gets(proxy: FaultProxy, key: str) -> list[str | None]:
    return [r.range for r in proxy.records() if r.method == "GET" and r.path.endswith(key)]


def test_ranges_are_the_stores_bytes(faulty: FaultProxy, boto: Any) -> None:
    key = "ranges/exact/obj.bin"
    data, etag = put(boto, key, 3 * MiB + 17, seed=1)
    wanted = [(0, 10), (5, 5), (1 * MiB - 3, 2 * MiB + 5), (3 * MiB, 3 * MiB + 17), (7, 9)]
    reader = reader_for(faulty, part_size=256 * KiB, coalesce_gap=0)
    got = reader.read([ByteRange(key, len(data), etag, a, b) for a, b in wanted])
    for (a, b), bytes_ in zip(wanted, got, strict=True):
        oracle = b"" if a == b else _boto_range(boto, key, a, b)
        assert bytes_ == oracle == data[a:b]
    whole = reader.read([ByteRange.whole(key, len(data), etag)])
    assert whole == [data]
    # Every GET carried the ETag seen when listing.
    assert {r.if_match for r in faulty.records() if r.method == "GET"} == {etag}


def _boto_range(boto: Any, key: str, start: int, stop: int) -> bytes:
    body = boto.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={start}-{stop - 1}")["Body"]
    return bytes(body.read())


def test_nearby_ranges_share_a_get_and_distant_ones_do_not(faulty: FaultProxy, boto: Any) -> None:
    key = "ranges/coalesce/obj.bin"
    data, etag = put(boto, key, 4 * MiB, seed=2)
    reader = reader_for(faulty, coalesce_gap=64 * KiB)
    near = [ByteRange(key, len(data), etag, a, a + 1000) for a in (0, 10_000, 50_000)]
    far = [ByteRange(key, len(data), etag, a, a + 1000) for a in (2 * MiB, 3 * MiB)]
    got = reader.read(near + far)
    assert got == [data[r.start : r.stop] for r in near + far]
    assert sorted(gets(faulty, key)) == [  # type: ignore[type-var]
        "bytes=0-50999",
        "bytes=2097152-2098151",
        "bytes=3145728-3146727",
    ]
    assert reader.bytes_fetched == 51_000 + 2 * 1000


def test_an_object_replaced_after_listing_is_refused(faulty: FaultProxy, boto: Any) -> None:
    key = "ranges/replaced/obj.bin"
    data, etag = put(boto, key, 100 * KiB, seed=3)
    boto.put_object(Bucket=BUCKET, Key=key, Body=b"x" * len(data))
    reader = reader_for(faulty)
    with pytest.raises(ObjectChangedError, match="changed") as info:
        reader.read([ByteRange(key, len(data), etag, 10, 20)])
    assert info.value.key == key


def test_a_fault_mid_body_is_retried_from_where_it_stopped(faulty: FaultProxy, boto: Any) -> None:
    key = "ranges/reset/obj.bin"
    data, etag = put(boto, key, 2 * MiB, seed=4)
    faulty.add(Rule("reset_mid_body", method="GET", key=key, times=1, after_bytes=300 * KiB))
    reader = reader_for(faulty)
    assert reader.read([ByteRange(key, len(data), etag, 1000, 2 * MiB)]) == [data[1000:]]
    assert reader.retries == 1
    ranges = gets(faulty, key)
    assert len(ranges) == 2 and ranges[0] == f"bytes=1000-{2 * MiB - 1}"
    resumed_from = int(ranges[1].split("=")[1].split("-")[0])  # type: ignore[union-attr]
    assert resumed_from > 1000, "the retry started over instead of resuming"


def test_a_whole_object_read_is_checked_against_its_md5_etag(faulty: FaultProxy, boto: Any) -> None:
    key = "ranges/flip/obj.bin"
    data, etag = put(boto, key, 200 * KiB, seed=5)
    faulty.add(Rule("flip_byte", method="GET", key=key, times=1, after_bytes=1234))
    reader = reader_for(faulty)
    assert reader.read([ByteRange.whole(key, len(data), etag)]) == [data]
    assert reader.retries == 1, "the flipped byte went through unnoticed"
    faulty.add(Rule("flip_byte", method="GET", key=key, after_bytes=99))
    with pytest.raises(IntegrityError, match="checksum") as info:
        reader.read([ByteRange.whole(key, len(data), etag)])
    assert info.value.key == key and info.value.attempts == FAST.max_attempts


def test_a_range_outside_its_object_is_refused_before_any_request(
    faulty: FaultProxy, boto: Any
) -> None:
    reader = reader_for(faulty)
    with pytest.raises(ValueError, match="not within the object's 100 bytes"):
        reader.read([ByteRange("ranges/none", 100, None, 0, 10), ByteRange("x", 100, None, 5, 101)])
    with pytest.raises(ValueError, match="not within"):
        reader.read([ByteRange("ranges/none", 100, None, 20, 10)])
    assert faulty.records() == []


def test_cancel_stops_a_read_in_flight(faulty: FaultProxy, boto: Any) -> None:
    key = "ranges/cancel/obj.bin"
    data, etag = put(boto, key, 1 * MiB, seed=6)
    faulty.add(Rule("slow", method="GET", key=key, chunk=8 * KiB, delay_s=0.05))
    reader = reader_for(faulty)
    pending = reader.start([ByteRange.whole(key, len(data), etag)])
    deadline = time.monotonic() + 10
    while reader.bytes_fetched == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    pending.cancel()
    with pytest.raises(CancelledError):
        pending.result()
    stopped_at = reader.bytes_fetched
    time.sleep(0.5)
    assert 0 < stopped_at < len(data)
    assert reader.bytes_fetched == stopped_at, "bytes kept arriving after cancel()"


def test_the_byte_budget_holds_reads_ahead_until_bytes_are_taken(
    faulty: FaultProxy, boto: Any
) -> None:
    key = "ranges/budget/obj.bin"
    data, etag = put(boto, key, 2 * MiB, seed=7)
    reader = reader_for(faulty, max_inflight_bytes=1 * MiB)
    first = reader.start([ByteRange(key, len(data), etag, 0, 1 * MiB)])
    second = reader.start([ByteRange(key, len(data), etag, 1 * MiB, 2 * MiB)])
    deadline = time.monotonic() + 10
    while not first.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    assert first.done() and not second.done()
    assert reader.bytes_fetched == 1 * MiB, "read ahead beyond the budget"
    assert first.result() == [data[: 1 * MiB]]
    assert second.result() == [data[1 * MiB :]]
    assert reader.bytes_fetched == 2 * MiB
