"""Secrets never leak; and a soak: many downloads with random transient faults, every
byte right, nothing left behind, memory flat."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import pickle
from pathlib import Path

import pytest

from conftest import ACCESS_KEY, SECRET_KEY, profile_for
from faultproxy import FaultProxy, Rule
from ursa import DataInterface, DownloadProgress, ObjectStoreError, Profile, RetryPolicy
from ursa.ranges import ByteRange, RangeReader
from ursa.stores import locate
from ursa.testing import Recording, RowSpec, build_recording
from ursa.testing.seaweed import SeaweedServer

MiB = 1 << 20


@pytest.fixture(scope="module")
def mixed(profile: Profile) -> Recording:
    rows = [
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=20),
        RowSpec("events", asset_format="lance", segments=1, segment_size=1),
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=3 * MiB),
        RowSpec("imu", asset_format="parquet", segments=1, segment_size=1),
        RowSpec("audio", status="raw", segments=40, segment_size=32 * 1024),
    ]
    return build_recording(profile, rows, seed=61)


def test_secrets_never_appear(
    s3: SeaweedServer,
    proxy: FaultProxy,
    mixed: Recording,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every log record (DEBUG, every logger), every message and repr, and the server's
    command line: the secret key is in none of them, including after errors."""
    caplog.set_level(logging.DEBUG)
    profile = profile_for(proxy.endpoint)
    data = DataInterface(profile)
    rows = data.query(recording_hash=mixed.recording_hash, status="all")
    seen: list[str] = [repr(data), repr(profile), str(profile), repr(rows)]
    ok_rows = data.query(recording_hash=mixed.recording_hash)
    plan = data.plan_download(ok_rows, tmp_path / "a")
    seen += [repr(plan), str(plan)]
    data.download(ok_rows, tmp_path / "a")
    proxy.clear()
    proxy.add(Rule("status", method="GET", key=mixed.recording_hash, status=503))
    errors: list[BaseException] = []
    for attempt in (
        lambda: data.download(
            ok_rows, tmp_path / "b", retry=RetryPolicy(max_attempts=2, base_delay_s=0)
        ),
        lambda: data.download(rows, tmp_path / "c"),  # ingesting rows: ValueError
        lambda: DataInterface(
            profile_for(s3.endpoint, secret_access_key="x" + SECRET_KEY)
        ).download(ok_rows, tmp_path / "d"),
    ):
        try:
            attempt()
        except Exception as exc:
            errors.append(exc)
    proxy.clear()
    assert len(errors) == 3 and isinstance(errors[0], ObjectStoreError)
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:
            seen += [str(chain), repr(chain)]
            chain = chain.__cause__ or chain.__context__
    seen += [r.getMessage() + repr(r.__dict__) for r in caplog.records]
    seen.append(Path(f"/proc/{s3.pid}/cmdline").read_bytes().decode(errors="replace"))
    assert len(caplog.records) > 20
    leaks = [s for s in seen if SECRET_KEY in s]
    assert not leaks, leaks[0][:300]


def test_no_secret_is_reachable_from_public_objects(
    profile: Profile, mixed: Recording, tmp_path: Path
) -> None:
    """Plans, planned files, events and locations: not through repr, str,
    dataclasses.asdict, vars, copy or pickle (a store handle refuses to be pickled)."""
    data = DataInterface(profile)
    rows = data.query(recording_hash=mixed.recording_hash)
    plan = data.plan_download(rows, tmp_path)
    events: list[DownloadProgress] = []
    data.download(rows, tmp_path, progress=events.append)
    loc = locate(profile, rows[0].storage_uri or "")
    seen: list[str] = []
    refused = 0
    for obj in (plan, *plan.files, *events, loc, *plan.stores):
        seen += [repr(obj), str(obj)]
        if dataclasses.is_dataclass(obj):
            seen += [repr(dataclasses.asdict(obj)), repr(vars(obj))]  # type: ignore[arg-type]
        seen.append(repr(copy.deepcopy(obj)))
        try:
            seen.append(pickle.dumps(obj).decode("latin-1"))
        except TypeError as exc:
            assert "cannot be pickled" in str(exc)
            refused += 1
    assert refused >= 3, "plan, location and store handles hold a store: never pickled"
    leaks = [text[:200] for text in seen if SECRET_KEY in text]
    assert not leaks, leaks[0]
    assert copy.deepcopy(plan).stores == plan.stores, "a handle copies as itself"


def test_no_credentials_in_any_request_line(proxy: FaultProxy, tmp_path: Path) -> None:
    """Uploads, listings, HEADs, whole and ranged GETs all go signed in headers: no
    request line a proxy or an access log records holds a signature or the key id."""
    proxy.clear()
    profile = profile_for(proxy.endpoint)
    rows = [RowSpec("camera", asset_format="mp4", segments=2, mp4_size=3 * MiB)]
    rec = build_recording(profile, rows, seed=62)  # PUTs through the proxy
    data = DataInterface(profile)
    paths = data.download(data.query(recording_hash=rec.recording_hash), tmp_path, part_size=MiB)
    mp4 = next(p for p in paths if p.name == "camera.mp4")
    loc = locate(profile, rec.rows[0].storage_uri or "")
    size, etag = RangeReader(loc.store).head(loc.key)
    assert RangeReader(loc.store).read([ByteRange(loc.key, size, etag, 5, 500)]) == [
        mp4.read_bytes()[5:500]
    ]
    records = proxy.records()
    proxy.clear()
    assert {"PUT", "GET", "HEAD"} <= {r.method for r in records}
    assert any(r.range for r in records), "no ranged GET was seen"
    for needle in ("X-Amz-Signature", "X-Amz-Credential", ACCESS_KEY):
        leaks = [f"{r.method} {r.target}" for r in records if needle.lower() in r.target.lower()]
        assert not leaks, leaks[0]


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.soak
def test_soak_with_random_transient_faults(
    profile: Profile, proxy: FaultProxy, mixed: Recording, tmp_path: Path
) -> None:
    direct = DataInterface(profile)
    truth_paths = direct.download(
        direct.query(recording_hash=mixed.recording_hash), tmp_path / "truth"
    )
    rows = [
        direct.query(recording_hash=mixed.recording_hash),
        direct.query(recording_hash=mixed.recording_hash, status="raw"),
    ]
    truth_paths += direct.download(rows[1], tmp_path / "truth")
    truth = {
        p.relative_to(tmp_path / "truth"): hashlib.sha256(p.read_bytes()).digest()
        for p in truth_paths
    }
    data = DataInterface(profile_for(proxy.endpoint))
    proxy.clear()
    key = mixed.recording_hash
    rules = [
        proxy.add(
            Rule("reset_mid_body", method="GET", key=key, after_bytes=1000, probability=0.01)
        ),
        proxy.add(Rule("truncate", method="GET", key=key, after_bytes=5000, probability=0.01)),
        proxy.add(Rule("status", method="GET", key=key, status=503, probability=0.01)),
        proxy.add(Rule("reset_before", method="GET", key=key, probability=0.01)),
        proxy.add(Rule("flip_byte", method="GET", key=key, after_bytes=10, probability=0.01)),
    ]
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.01, max_delay_s=0.1)
    rss: list[int] = []
    retries = verified = 0
    for run in range(30):
        dest = tmp_path / f"run{run}"
        finish: list[DownloadProgress] = []
        paths = data.download(rows, dest, retry=policy, progress=finish.append)
        retries += finish[-1].retries
        for p in paths:
            assert hashlib.sha256(p.read_bytes()).digest() == truth[p.relative_to(dest)], p
            verified += p.stat().st_size
        assert len(paths) == len(truth)
        assert not [p for p in dest.rglob("*") if ".ursa-" in p.name]
        rss.append(rss_kib())
    fired = sum(r.fired for r in rules)
    proxy.clear()
    print(
        f"\nsoak: 30 runs, {fired} faults injected, {retries} retries, "
        f"{verified:,} bytes verified, RSS first {rss[0] // 1024} MiB last {rss[-1] // 1024} MiB"
    )
    assert fired >= 10, "too few faults to mean anything"
    # A cut past a small object's end changes nothing; a 503 or a reset before the
    # answer always costs a retry.
    assert retries >= rules[2].fired + rules[3].fired > 0
    assert rss[-1] - rss[4] < 32 * 1024, f"RSS grew from {rss[4]} KiB to {rss[-1]} KiB"
