"""The fault matrix: faults injected by our proxy between ursa and a real SeaweedFS.
Transient faults end in exact bytes with the retries counted; permanent ones raise
ObjectStoreError naming the key and leave nothing partial behind."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from conftest import profile_for
from faultproxy import FaultProxy, Rule
from ursa import (
    AccessDeniedError,
    DataInterface,
    DownloadProgress,
    ObjectChangedError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreTransientError,
    Profile,
    QueryResult,
    RetryPolicy,
)
from ursa.stores import locate
from ursa.testing import Recording, RowSpec, build_recording

MiB = 1 << 20
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05, idle_timeout_s=2.0)


@pytest.fixture(scope="module")
def rec(profile: Profile) -> Recording:
    rows = [
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=4 * MiB),
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=6),
    ]
    return build_recording(profile, rows, seed=31)


@pytest.fixture
def data(proxy: FaultProxy) -> DataInterface:
    return DataInterface(profile_for(proxy.endpoint))


def digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != ".ursa"
    }


@pytest.fixture(scope="module")
def truth(
    profile: Profile, rec: Recording, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The bytes as downloaded with no proxy in between."""
    dest = tmp_path_factory.mktemp("truth")
    direct = DataInterface(profile)
    direct.download(direct.query(recording_hash=rec.recording_hash), dest)
    return digests(dest)


def rows(data: DataInterface, rec: Recording, modality: str | None = None) -> QueryResult:
    return data.query(recording_hash=rec.recording_hash, modality=modality)


def download(data: DataInterface, rec: Recording, dest: Path, **kw: Any) -> DownloadProgress:
    events: list[DownloadProgress] = []
    kw.setdefault("retry", FAST)
    data.download(rows(data, rec), dest, progress=events.append, **kw)
    return events[-1]


def mp4_key(rec: Recording) -> str:
    return f"{rec.recording_hash}/camera/camera\\.mp4$"


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".ursa-" in p.name]


# --- transient faults: exact bytes, retries counted ---------------------------------

TRANSIENT = [
    Rule("reset_before", method="GET", times=1),
    Rule("reset_mid_body", method="GET", after_bytes=100_000, times=1),
    Rule("truncate", method="GET", after_bytes=100_000, times=1),
    Rule("status", method="GET", status=500, times=1),
    Rule("status", method="GET", status=502, times=1),
    Rule("status", method="GET", status=503, times=2),
    Rule("status", method="GET", status=429, times=1),
    Rule("status", method="GET", status=408, times=1),
    Rule("stall", method="GET", after_bytes=1000, delay_s=0, times=1),
    Rule("stall", method="GET", after_bytes=-1, delay_s=0, times=1),
    Rule("flip_byte", method="GET", after_bytes=12_345, times=1),
]


@pytest.mark.parametrize("whole", [True, False], ids=["one-stream", "in-parts"])
@pytest.mark.parametrize("rule", TRANSIENT, ids=lambda r: f"{r.fault}-{r.status}-{r.after_bytes}")
def test_transient_faults_end_in_exact_bytes(
    data: DataInterface,
    rec: Recording,
    faulty: FaultProxy,
    truth: dict[str, str],
    tmp_path: Path,
    rule: Rule,
    whole: bool,
) -> None:
    rule = Rule(**{**rule.__dict__, "key": mp4_key(rec), "matched": 0, "fired": 0})
    faulty.add(rule)
    part_size = 16 * MiB if whole else 1 * MiB
    finish = download(data, rec, tmp_path, part_size=part_size, retry=FAST)
    assert rule.fired >= 1
    assert digests(tmp_path) == truth
    assert finish.retries >= rule.fired
    assert not leftovers(tmp_path)


def test_a_reset_resumes_from_the_last_byte_written(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path, truth: dict[str, str]
) -> None:
    faulty.add(Rule("reset_mid_body", method="GET", key=mp4_key(rec), after_bytes=300_000, times=1))
    download(data, rec, tmp_path, part_size=16 * MiB)
    gets = [r for r in faulty.records() if r.method == "GET" and r.path.endswith("camera.mp4")]
    assert gets[0].range is None
    resumed = gets[1].range
    assert resumed is not None and resumed.startswith("bytes=")
    start = int(resumed.removeprefix("bytes=").split("-")[0])
    assert 0 < start <= 300_000
    assert all(g.if_match for g in gets), "every GET is pinned to the planned ETag"
    assert digests(tmp_path) == truth


def test_retry_after_is_honoured(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path
) -> None:
    faulty.add(Rule("status", method="GET", key=mp4_key(rec), status=503, retry_after="1", times=1))
    download(data, rec, tmp_path, part_size=16 * MiB)
    gets = [r for r in faulty.records() if r.method == "GET" and r.path.endswith("camera.mp4")]
    assert gets[1].time - gets[0].time >= 1.0


def test_retries_back_off(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path
) -> None:
    faulty.add(Rule("status", method="GET", key=mp4_key(rec), status=503, times=3))
    policy = RetryPolicy(max_attempts=5, base_delay_s=0.2, max_delay_s=5.0)
    download(data, rec, tmp_path, part_size=16 * MiB, retry=policy)
    gets = [r for r in faulty.records() if r.method == "GET" and r.path.endswith("camera.mp4")]
    gaps = [b.time - a.time for a, b in itertools.pairwise(gets)]
    assert len(gaps) == 3
    # Full jitter between half and all of 0.2 s, 0.4 s, 0.8 s.
    assert 0.1 <= gaps[0] < 1.0 and gaps[1] >= 0.2 and gaps[2] >= 0.4  # upper bound: slack for load
    assert gaps[2] > gaps[0]


def test_ignored_range_still_gives_exact_bytes(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path, truth: dict[str, str]
) -> None:
    rule = faulty.add(Rule("ignore_range", method="GET", key=mp4_key(rec), ranged=True))
    download(data, rec, tmp_path, part_size=1 * MiB)
    assert rule.fired >= 4
    assert digests(tmp_path) == truth


def test_slow_but_steady_is_not_killed(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path, truth: dict[str, str]
) -> None:
    """A body that trickles for far longer than the idle timeout, but never pauses that
    long, completes without a retry: the timeout bounds silence, not duration."""
    key = f"{rec.recording_hash}/eeg/eeg\\.zarr/data/c/0/1$"  # a 32,000-byte chunk
    faulty.add(Rule("slow", method="GET", key=key, chunk=2000, delay_s=0.2))
    policy = RetryPolicy(max_attempts=1, idle_timeout_s=1.0)
    started = time.monotonic()
    finish = download(data, rec, tmp_path, retry=policy)
    assert time.monotonic() - started > 1.5
    assert finish.retries == 0
    assert digests(tmp_path) == truth


# --- what a corrupted byte is caught by ----------------------------------------------


def mp4_object(profile: Profile, rec: Recording) -> str:
    row = next(r for r in rec.rows if r.modality == "camera")
    assert row.storage_uri is not None
    return locate(profile, row.storage_uri).key


def store_bytes(boto: Any, key: str) -> str:
    body = boto.get_object(Bucket="ursa-assets", Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


@pytest.fixture(scope="module")
def rec_md5(profile: Profile) -> Recording:
    """Uploaded as older SDKs did, without checksums: the MD5 ETag is the only check."""
    rows = [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=4 * MiB)]
    return build_recording(profile, rows, seed=32, checksums=False)


@pytest.mark.parametrize("whole", [True, False], ids=["one-stream", "in-parts"])
def test_an_md5_etag_alone_catches_a_flipped_byte(
    data: DataInterface,
    rec_md5: Recording,
    faulty: FaultProxy,
    tmp_path: Path,
    boto: Any,
    profile: Profile,
    whole: bool,
) -> None:
    key = mp4_object(profile, rec_md5)
    head = boto.head_object(Bucket="ursa-assets", Key=key, ChecksumMode="ENABLED")
    assert "ChecksumCRC32" not in head and len(head["ETag"].strip('"')) == 32
    rule = faulty.add(
        Rule("flip_byte", method="GET", key=mp4_key(rec_md5), after_bytes=12_345, times=1)
    )
    finish = download(data, rec_md5, tmp_path, part_size=16 * MiB if whole else 1 * MiB)
    assert rule.fired == 1 and finish.retries >= 1
    got = tmp_path / rec_md5.recording_hash / "camera" / "camera.mp4"
    assert hashlib.sha256(got.read_bytes()).hexdigest() == store_bytes(boto, key)


def test_verify_size_checks_the_size_only(
    data: DataInterface,
    rec_md5: Recording,
    faulty: FaultProxy,
    tmp_path: Path,
    boto: Any,
    profile: Profile,
) -> None:
    """verify="size" is what s5cmd and obstore do: a flipped byte of the right length goes
    through, with no retry and no HEAD; a short body is still refused."""
    key = mp4_object(profile, rec_md5)
    faulty.add(Rule("flip_byte", method="GET", key=mp4_key(rec_md5), after_bytes=99, times=1))
    finish = download(data, rec_md5, tmp_path / "a", part_size=1 * MiB, verify="size")
    got = (tmp_path / "a" / rec_md5.recording_hash / "camera" / "camera.mp4").read_bytes()
    assert finish.retries == 0 and hashlib.sha256(got).hexdigest() != store_bytes(boto, key)
    heads = [r for r in faulty.records() if r.method == "HEAD"]
    assert len(heads) == 1, "asked the store for a checksum (the planning HEAD is the one)"
    faulty.add(Rule("truncate", method="GET", key=mp4_key(rec_md5), after_bytes=99, times=1))
    finish = download(data, rec_md5, tmp_path / "b", verify="size")
    got = (tmp_path / "b" / rec_md5.recording_hash / "camera" / "camera.mp4").read_bytes()
    assert finish.retries == 1 and hashlib.sha256(got).hexdigest() == store_bytes(boto, key)
    with pytest.raises(ValueError, match="verify must be one of"):
        download(data, rec_md5, tmp_path / "c", verify="md5")
    assert not (tmp_path / "c").exists()


def _full_object_checksum(algorithm: str, body: bytes) -> str:
    from awscrt import checksums

    value, width = {
        "CRC32": (zlib.crc32(body), 4),
        "CRC32C": (checksums.crc32c(body), 4),
        "CRC64NVME": (checksums.crc64nvme(body), 8),
    }[algorithm]
    return base64.b64encode(value.to_bytes(width, "big")).decode()


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_a_multipart_upload_is_checked_by_its_full_object_crc(
    data: DataInterface,
    faulty: FaultProxy,
    tmp_path: Path,
    boto: Any,
    profile: Profile,
    algorithm: str,
) -> None:
    """An ETag of a multipart upload (`…-N`) is no MD5 of the bytes; the full-object CRC
    the uploader had the store keep (R2 keeps CRC64NVME) is what catches a flipped byte
    in a part."""
    rows = [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=12 * MiB)]
    rec = build_recording(profile, rows, seed=33)
    key = mp4_object(profile, rec)
    body = boto.get_object(Bucket="ursa-assets", Key=key)["Body"].read()
    upload = boto.create_multipart_upload(
        Bucket="ursa-assets", Key=key, ChecksumAlgorithm=algorithm, ChecksumType="FULL_OBJECT"
    )
    field = f"Checksum{algorithm}"
    parts = []
    for n, start in enumerate(range(0, len(body), 5 * MiB), start=1):
        part = boto.upload_part(
            Bucket="ursa-assets", Key=key, UploadId=upload["UploadId"], PartNumber=n,
            Body=body[start : start + 5 * MiB], ChecksumAlgorithm=algorithm,
        )  # fmt: skip
        parts.append({"PartNumber": n, "ETag": part["ETag"], field: part[field]})
    full = _full_object_checksum(algorithm, body)
    boto.complete_multipart_upload(
        Bucket="ursa-assets", Key=key, UploadId=upload["UploadId"],
        MultipartUpload={"Parts": parts}, ChecksumType="FULL_OBJECT", **{field: full},
    )  # fmt: skip
    head = boto.head_object(Bucket="ursa-assets", Key=key, ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3") and head[field] == full

    for whole, part_size in (("in-parts", 1 * MiB), ("one-stream", 16 * MiB)):
        rule = faulty.add(
            Rule("flip_byte", method="GET", key=mp4_key(rec), after_bytes=54_321, times=1)
        )
        finish = download(data, rec, tmp_path / whole, part_size=part_size)
        assert rule.fired == 1 and finish.retries >= 1, f"{whole}: the flipped byte went through"
        got = tmp_path / whole / rec.recording_hash / "camera" / "camera.mp4"
        assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(body).digest()


# --- permanent faults: ObjectStoreError, nothing partial ----------------------------


@pytest.mark.parametrize("status", [403, 404, 400])
def test_permanent_statuses_fail_at_once(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path, status: int
) -> None:
    chunk = f"{rec.recording_hash}/eeg/eeg\\.zarr/data/c/0/3$"
    rule = faulty.add(Rule("status", method="GET", key=chunk, status=status))
    with pytest.raises(ObjectStoreError) as info:
        download(data, rec, tmp_path)
    assert rule.fired == 1, "4xx is never retried"
    assert info.value.attempts == 1
    assert info.value.key is not None and info.value.key.endswith("eeg.zarr/data/c/0/3")
    assert not isinstance(info.value, ObjectStoreTransientError)
    expected = {403: AccessDeniedError, 404: ObjectNotFoundError, 400: ObjectStoreError}[status]
    assert type(info.value) is expected
    assert not leftovers(tmp_path)
    assert not (tmp_path / rec.recording_hash / "eeg" / "eeg.zarr").exists(), "half a Zarr store"


def test_exhaustion_is_chained_from_the_transient_fault(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path
) -> None:
    faulty.add(Rule("status", method="GET", key=mp4_key(rec), status=503))
    with pytest.raises(ObjectStoreError) as info:
        download(data, rec, tmp_path, retry=RetryPolicy(max_attempts=3, base_delay_s=0.01))
    err = info.value
    assert type(err) is ObjectStoreError and err.attempts == 3
    assert isinstance(err.__cause__, ObjectStoreTransientError)
    assert "503" in str(err.__cause__)
    assert not leftovers(tmp_path)
    assert not (tmp_path / rec.recording_hash / "camera" / "camera.mp4").exists()


def test_a_replaced_object_is_an_error_never_a_mixed_file(
    data: DataInterface,
    rec: Recording,
    faulty: FaultProxy,
    tmp_path: Path,
    boto: Any,
    profile: Profile,
) -> None:
    row = next(r for r in rec.rows if r.modality == "camera")
    assert row.storage_uri is not None
    loc = locate(profile, row.storage_uri)
    original = boto.get_object(Bucket="ursa-assets", Key=loc.key)["Body"].read()

    def replace() -> None:
        boto.put_object(Bucket="ursa-assets", Key=loc.key, Body=b"\0" * len(original))

    faulty.add(
        Rule("replace_object", method="GET", key=mp4_key(rec), occurrences={2}, action=replace)
    )
    try:
        with pytest.raises(ObjectChangedError, match="changed"):
            download(data, rec, tmp_path, part_size=1 * MiB, max_concurrency=1)
        assert not (tmp_path / rec.recording_hash / "camera" / "camera.mp4").exists()
        assert not leftovers(tmp_path)
    finally:
        boto.put_object(Bucket="ursa-assets", Key=loc.key, Body=original)


def test_refused_connections_exhaust_into_an_error(
    data: DataInterface, rec: Recording, faulty: FaultProxy, tmp_path: Path
) -> None:
    def refuse(e: DownloadProgress) -> None:
        if e.phase == "plan_done":
            faulty.refuse_connections(True)

    try:
        with pytest.raises(ObjectStoreError) as info:
            data.download(
                rows(data, rec), tmp_path, progress=refuse,
                retry=RetryPolicy(max_attempts=2, base_delay_s=0.01),
            )  # fmt: skip
        assert isinstance(info.value.__cause__, ObjectStoreTransientError)
    finally:
        faulty.refuse_connections(False)
    assert not leftovers(tmp_path)
