"""download() against real SeaweedFS with recordings built by ursa.testing: the seed
page's contract, sentence by sentence (see the docstrings)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lance
import pytest
import zarr

from conftest import SECRET_KEY
from ursa import (
    AccessDeniedError,
    ConfigurationError,
    DataInterface,
    DownloadProgress,
    ModalityRow,
    ObjectNotFoundError,
    ObjectStoreError,
    Profile,
    QueryResult,
)
from ursa.stores import locate
from ursa.testing import Recording, RowSpec, build_recording


def store_bytes(boto: Any, profile: Profile, uri: str) -> bytes:
    loc = locate(profile, uri)
    bucket = urlsplit(uri).netloc
    return boto.get_object(Bucket=bucket, Key=loc.key)["Body"].read()  # type: ignore[no-any-return]


def listed(boto: Any, profile: Profile, prefix_uri: str) -> list[str]:
    loc = locate(profile, prefix_uri)
    pages = boto.get_paginator("list_objects_v2").paginate(
        Bucket=urlsplit(prefix_uri).netloc, Prefix=loc.key
    )
    return sorted((o["Key"] for p in pages for o in p.get("Contents", [])), key=str.encode)


def tree(root: Path) -> list[str]:
    """Every file under root but the download records in root/.ursa."""
    files = (p.relative_to(root) for p in root.rglob("*") if p.is_file())
    return sorted(p.as_posix() for p in files if p.parts[0] != ".ursa")


def no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*") if ".ursa-" in p.name]


@pytest.fixture
def data(profile: Profile) -> DataInterface:
    return DataInterface(profile)


# --- Minimal call -------------------------------------------------------------------


def test_minimal_call_writes_processed_assets(
    data: DataInterface, recording: Recording, tmp_path: Path, boto: Any, profile: Profile
) -> None:
    """query() defaults to status="ingested" and download() (source="auto") writes each
    row's processed asset; paths lists every file, and each is byte-for-byte the store's."""
    results = data.query(recording_hash=recording.recording_hash)
    paths = data.download(results, dest=tmp_path)
    h = recording.recording_hash
    assert {p.relative_to(tmp_path).parts[:3] for p in paths} == {
        (h, "camera", "left"),
        (h, "camera", "right"),
        (h, "eeg", "eeg.zarr"),
        (h, "events", "events.lance"),
        (h, "imu", "imu.parquet"),
    }
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == tree(tmp_path)
    for row in results:
        assert row.storage_uri is not None
        base = tmp_path / h / row.modality / row.worker_id
        name = row.storage_uri.rsplit("/", 1)[1]
        if row.asset_format in ("zarr", "lance"):
            keys = listed(boto, profile, row.storage_uri + "/")
            prefix = locate(profile, row.storage_uri + "/").key
            for key in keys:
                local = base / name / key[len(prefix) :]
                assert (
                    local.read_bytes()
                    == boto.get_object(Bucket="ursa-assets", Key=key)["Body"].read()
                )
        else:
            assert (base / name).read_bytes() == store_bytes(boto, profile, row.storage_uri)
    assert no_temporaries(tmp_path)


def test_assets_open_in_place(data: DataInterface, recording: Recording, tmp_path: Path) -> None:
    """Processed assets keep their basename, so the result opens without re-stitching:
    zarr.open, lance.dataset, and the MP4 plays with its frame index alongside."""
    import av

    data.download(data.query(recording_hash=recording.recording_hash), dest=tmp_path)
    base = tmp_path / recording.recording_hash
    z = zarr.open_group(str(base / "eeg" / "eeg.zarr"), mode="r")
    assert z["data"].shape[0] == 8 and z["data"][:].std() > 0
    assert lance.dataset(str(base / "events" / "events.lance")).count_rows() == 500
    mp4 = base / "camera" / "left" / "camera.mp4"
    with av.open(str(mp4)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    index = lance.dataset(str(mp4) + ".lance")
    assert frames == index.count_rows() == 30


def test_not_yet_ingested_session_with_status_raw(
    data: DataInterface, recording: Recording, tmp_path: Path, boto: Any, profile: Profile
) -> None:
    """For a session that hasn't been ingested yet, pass status="raw" to query()."""
    results = data.query(recording_hash=recording.recording_hash, status="raw")
    paths = data.download(results, dest=tmp_path)
    (row,) = results
    keys = listed(boto, profile, row.raw_storage_uri)
    assert [p.name for p in paths] == [k.rsplit("/", 1)[1] for k in keys]
    assert all(p.parent == tmp_path / row.recording_hash / "audio" for p in paths)
    for p, key in zip(paths, keys, strict=True):
        assert p.read_bytes() == boto.get_object(Bucket="ursa-raw", Key=key)["Body"].read()


def test_source_raw_on_ingested_rows_gives_raw_segments(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """To pull the original raw segments of an already-ingested session, keep the default
    query and pass source="raw" (raw_storage_uri is kept after ingestion)."""
    results = data.query(recording_hash=recording.recording_hash, modality="eeg")
    paths = data.download(results, dest=tmp_path, source="raw")
    assert [p.name for p in paths] == [f"seg-{i:06d}.bin" for i in range(4)]
    assert all(p.stat().st_size == 64 * 1024 for p in paths)


# --- Source rules -------------------------------------------------------------------


def _rows(data: DataInterface, recording: Recording, status: str) -> QueryResult:
    return data.query(recording_hash=recording.recording_hash, status=status)


@pytest.mark.parametrize(
    ("status", "source", "expect"),
    [
        ("raw", "auto", "raw"),
        ("raw", "raw", "raw"),
        ("raw", "processed", ValueError),
        ("ingested", "auto", "asset"),
        ("ingested", "raw", "raw"),
        ("ingested", "processed", "asset"),
        ("ingesting", "auto", ValueError),
        ("ingesting", "raw", ValueError),
        ("ingesting", "processed", ValueError),
        ("failed", "auto", ValueError),
        ("failed", "raw", ValueError),
        ("failed", "processed", ValueError),
    ],
)
def test_source_matrix(
    data: DataInterface,
    recording: Recording,
    tmp_path: Path,
    status: str,
    source: str,
    expect: object,
) -> None:
    rows = _rows(data, recording, status)
    dest = tmp_path / "dest"
    if expect is ValueError:
        with pytest.raises(ValueError, match=r"not ingested|only raw and ingested"):
            data.download(rows, dest=dest, source=source)
        assert not dest.exists(), "validation must come before any byte is written"
        return
    paths = data.download(rows, dest=dest, source=source)
    names = {p.name for p in paths}
    if expect == "raw":
        assert names == {f"seg-{i:06d}.bin" for i in range(4)}
    else:
        assert "camera.mp4" in names and "imu.parquet" in names and "zarr.json" in names


def test_status_all_with_markers_fails_before_any_byte(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """ingesting / failed rows (only reachable via status="all") raise ValueError under
    every source, even mixed with deliverable rows, and nothing is written."""
    rows = _rows(data, recording, "all")
    for source in ("auto", "raw", "processed"):
        with pytest.raises(ValueError):
            data.download(rows, dest=tmp_path / source, source=source)
        assert not (tmp_path / source).exists()


def test_local_profile_has_no_assets_store(tmp_path: Path) -> None:
    """profile="local" has no assets store: a processed download is a ValueError that
    says so, before any byte moves."""
    root = tmp_path / "local-root"
    local = Profile(name="local", root=str(root))
    scratch = Profile(name="scratch", root=str(root), assets_bucket=f"file://{root}/assets/")
    rec = build_recording(scratch, [RowSpec("eeg", asset_format="zarr")], seed=5)
    data = DataInterface(local)
    rows = data.query(recording_hash=rec.recording_hash)
    with pytest.raises(ValueError, match="no assets store"):
        data.download(rows, dest=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # Raw segments still come from the local profile's file:// raw store.
    paths = data.download(rows, dest=tmp_path / "out", source="raw")
    assert len(paths) == 4


def test_unknown_source_or_layout(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    rows = _rows(data, recording, "raw")
    with pytest.raises(ValueError, match="source"):
        data.download(rows, dest=tmp_path / "a", source="both")
    with pytest.raises(ValueError, match="layout"):
        data.download(rows, dest=tmp_path / "a", layout="tree")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("interval", [float("inf"), float("nan"), 0.0, -1.0])
def test_a_progress_interval_that_is_not_a_finite_positive_number(
    data: DataInterface, recording: Recording, tmp_path: Path, interval: float
) -> None:
    rows = _rows(data, recording, "raw")
    with pytest.raises(ValueError, match="progress_interval must be a finite number"):
        data.download(rows, dest=tmp_path / "a", progress_interval=interval)
    assert not (tmp_path / "a").exists()


# --- Layouts and return order ---------------------------------------------------------


def expected_rel(row: ModalityRow, layout: str, rel: str) -> str:
    w = f"{row.worker_id}/" if row.worker_id else ""
    if layout == "by_recording":
        return f"{row.recording_hash}/{row.modality}/{w}{rel}"
    if layout == "by_modality":
        return f"{row.modality}/{row.recording_hash}/{w}{rel}"
    return rel


@pytest.mark.parametrize("layout", ["by_recording", "by_modality"])
def test_layout_trees(
    data: DataInterface,
    recording: Recording,
    tmp_path: Path,
    layout: str,
    boto: Any,
    profile: Profile,
) -> None:
    """by_recording (default) and by_modality place files at exactly the documented paths,
    and the return value is in stream order: rows in QueryResult order, the asset object
    first, then its companions, each in key byte order."""
    rows = data.query(recording_hash=recording.recording_hash)
    paths = data.download(rows, dest=tmp_path, layout=layout)
    expected: list[str] = []
    for row in rows:
        assert row.storage_uri is not None
        name = row.storage_uri.rsplit("/", 1)[1]
        if row.asset_format in ("zarr", "lance"):
            prefix = locate(profile, row.storage_uri + "/").key
            keys = listed(boto, profile, row.storage_uri + "/")
            expected += [expected_rel(row, layout, f"{name}/{k[len(prefix) :]}") for k in keys]
        elif row.asset_format == "mp4":
            expected.append(expected_rel(row, layout, name))
            prefix = locate(profile, row.storage_uri + ".lance/").key
            keys = listed(boto, profile, row.storage_uri + ".lance/")
            expected += [
                expected_rel(row, layout, f"{name}.lance/{k[len(prefix) :]}") for k in keys
            ]
        else:
            expected.append(expected_rel(row, layout, name))
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == expected
    assert tree(tmp_path) == sorted(expected)


def test_flat_layout_and_its_clashes(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """flat puts files at dest/<rel>; two planned files on one path is a ValueError at
    plan time, with nothing written."""
    eeg = data.query(recording_hash=recording.recording_hash, modality="eeg")
    paths = data.download(eeg, dest=tmp_path / "one", layout="flat")
    assert paths[0].relative_to(tmp_path / "one").parts[0] == "eeg.zarr"
    cams = data.query(recording_hash=recording.recording_hash, modality="camera")
    with pytest.raises(ValueError, match="two planned files"):
        data.download(cams, dest=tmp_path / "two", layout="flat")
    assert not (tmp_path / "two").exists()


def test_several_results_joined_in_order_and_deduplicated(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """target may be an iterable of QueryResults, joined in the order given; a row that
    appears twice is delivered once."""
    imu = data.query(recording_hash=recording.recording_hash, modality="imu")
    eeg = data.query(recording_hash=recording.recording_hash, modality="eeg")
    paths = data.download([imu, eeg, imu], dest=tmp_path)
    assert paths[0].name == "imu.parquet"
    assert sum(p.name == "imu.parquet" for p in paths) == 1
    assert all("eeg.zarr" in p.parts for p in paths[1:])


def test_dest_is_created_with_parents(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    dest = tmp_path / "a" / "b" / "c"
    data.download(_rows(data, recording, "raw"), dest=str(dest))
    assert len(tree(dest)) == 4


def test_plan_download_is_a_dry_run(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    rows = data.query(recording_hash=recording.recording_hash)
    plan = data.plan_download(rows, tmp_path / "dry")
    assert not (tmp_path / "dry").exists()
    assert plan.bytes_total == sum(f.size for f in plan.files) > 0
    assert plan.collisions == ()
    paths = data.download(rows, dest=tmp_path / "dry")
    assert paths == plan.paths
    assert sum(p.stat().st_size for p in paths) == plan.bytes_total
    again = data.plan_download(rows, tmp_path / "dry")
    assert again.collisions[0] == plan.paths[0]  # camera.mp4 (a file) comes first
    assert (tmp_path / "dry" / recording.recording_hash / "eeg" / "eeg.zarr") in again.collisions


# --- Collisions and overwrite ---------------------------------------------------------


def test_collision_raises_and_writes_nothing(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """FileExistsError on a destination collision, naming it; nothing is written."""
    rows = data.query(recording_hash=recording.recording_hash)
    target = tmp_path / recording.recording_hash / "imu" / "imu.parquet"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"mine")
    with pytest.raises(FileExistsError, match=r"imu\.parquet"):
        data.download(rows, dest=tmp_path)
    assert tree(tmp_path) == [target.relative_to(tmp_path).as_posix()]
    assert target.read_bytes() == b"mine"


def test_overwrite_replaces_files_and_whole_directories(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """overwrite=True replaces; a directory asset is replaced whole, never merged."""
    rows = data.query(recording_hash=recording.recording_hash)
    data.download(rows, dest=tmp_path)
    base = tmp_path / recording.recording_hash
    (base / "imu" / "imu.parquet").write_bytes(b"stale")
    stray = base / "eeg" / "eeg.zarr" / "stray-chunk"
    stray.write_bytes(b"from an older version")
    data.download(rows, dest=tmp_path, overwrite=True)
    assert (base / "imu" / "imu.parquet").read_bytes()[:4] == b"PAR1"
    assert not stray.exists()
    assert no_temporaries(tmp_path)


def test_collision_with_a_dangling_symlink(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    rows = data.query(recording_hash=recording.recording_hash, modality="imu")
    link = tmp_path / recording.recording_hash / "imu" / "imu.parquet"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileExistsError):
        data.download(rows, dest=tmp_path)
    data.download(rows, dest=tmp_path, overwrite=True)
    assert not link.is_symlink() and not (tmp_path / "elsewhere").exists()


# --- Errors ---------------------------------------------------------------------------


def test_missing_object_is_object_store_error_naming_the_key(
    profile: Profile, tmp_path: Path, boto: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ursa.download")
    rec = build_recording(profile, [RowSpec("imu", asset_format="parquet")], seed=11)
    (row,) = rec.rows
    assert row.storage_uri is not None
    key = locate(profile, row.storage_uri).key
    boto.delete_object(Bucket="ursa-assets", Key=key)
    data = DataInterface(profile)
    events: list[DownloadProgress] = []
    with pytest.raises(ObjectNotFoundError) as info:
        data.download(
            data.query(recording_hash=rec.recording_hash), dest=tmp_path, progress=events.append
        )
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ObjectStoreError)
    assert info.value.key == key and key in str(info.value)
    assert "finish" not in [e.phase for e in events], "errors do not route through the callback"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "nor the logger"


def test_processed_downloads_need_assets_credentials(
    s3: Any, recording: Recording, tmp_path: Path
) -> None:
    """Credentials are resolved when a role is first used: catalog and raw keys are enough
    for queries and raw segments; a processed download without assets keys is a
    ConfigurationError naming the role, before any byte is written."""
    from conftest import ACCESS_KEY, profile_for

    keys = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    no_assets = profile_for(
        s3.endpoint,
        access_key_id=None,
        secret_access_key=None,
        credentials={"catalog": keys, "raw": keys},
    )
    data = DataInterface(no_assets)
    rows = data.query(recording_hash=recording.recording_hash, modality="imu")
    assert len(data.download(rows, tmp_path / "raw", source="raw")) == 4
    with pytest.raises(ConfigurationError, match="'assets'") as info:
        data.download(rows, tmp_path / "processed")
    assert "URSA_R2_TEST_ASSETS_ACCESS_KEY_ID" in str(info.value)
    assert not (tmp_path / "processed").exists()


def test_wrong_credentials_say_so_and_never_leak(
    s3: Any, recording: Recording, tmp_path: Path
) -> None:
    from conftest import profile_for

    good = DataInterface(profile_for(s3.endpoint))
    rows = good.query(recording_hash=recording.recording_hash, modality="imu")
    bad = DataInterface(profile_for(s3.endpoint, secret_access_key="wrong-" + SECRET_KEY))
    with pytest.raises(AccessDeniedError, match="credentials") as info:
        bad.download(rows, dest=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, PermissionError) and isinstance(info.value, ObjectStoreError)
    assert "profile 'r2-test' (role 'assets'" in message, message
    assert "\n" not in message and "<" not in message, "one line, no raw XML"
    assert SECRET_KEY not in str(info.value) and SECRET_KEY not in repr(info.value)
    assert info.value.attempts == 1
    assert not tree(tmp_path)


# --- Progress events --------------------------------------------------------------------


def test_phase_order_and_fields(data: DataInterface, recording: Recording, tmp_path: Path) -> None:
    """start → plan_done → (modality_start → file_done* → modality_done)+ → finish, one
    pair per row; bytes_done is cumulative and monotonic, bytes_total set from plan_done;
    worker_id is None only on call-scoped phases and "" is the single-worker sentinel."""
    rows = data.query(recording_hash=recording.recording_hash)
    events: list[DownloadProgress] = []
    paths = data.download(rows, dest=tmp_path, progress=events.append)
    phases = [e.phase for e in events]
    assert phases[:2] == ["start", "plan_done"] and phases[-1] == "finish"
    body = phases[2:-1]
    per_row: list[list[str]] = []
    for phase in body:
        if phase == "modality_start":
            per_row.append([])
        per_row[-1].append(phase)
    assert len(per_row) == len(rows)
    for seq in per_row:
        assert seq[0] == "modality_start" and seq[-1] == "modality_done"
        assert set(seq[1:-1]) <= {"file_done"}
    starts = [e for e in events if e.phase == "modality_start"]
    assert [(e.modality, e.worker_id) for e in starts] == [(r.modality, r.worker_id) for r in rows]
    assert sum(p == "file_done" for p in phases) == len(paths)
    assert events[0].bytes_total is None
    total = sum(p.stat().st_size for p in paths)
    assert all(e.bytes_total == total for e in events[1:])
    done = [e.bytes_done for e in events]
    assert done == sorted(done) and done[-1] == total
    for e in events:
        call_scoped = e.phase in ("start", "plan_done", "finish")
        assert (e.worker_id is None) == call_scoped
        assert (e.key is not None) == (e.phase == "file_done")
        assert e.recording_hash == recording.recording_hash  # one recording in this call
    assert events[0].modality is None  # several modalities: call-scoped modality is None
    assert {e.worker_id for e in events if e.modality == "eeg"} == {""}
    assert events[-1].elapsed_s >= events[1].elapsed_s >= 0


def test_empty_target(data: DataInterface, recording: Recording, tmp_path: Path) -> None:
    events: list[DownloadProgress] = []
    paths = data.download(
        data.query(recording_hash="f" * 64), dest=tmp_path, progress=events.append
    )
    assert paths == []
    assert [e.phase for e in events] == ["start", "plan_done", "finish"]
    assert events[-1].bytes_total == 0


def test_a_row_with_no_objects_still_has_its_pair_of_events(
    profile: Profile, tmp_path: Path
) -> None:
    """One modality_start/modality_done pair per catalog row, even an empty raw prefix."""
    rec = build_recording(profile, [RowSpec("notes", status="raw", segments=0)], seed=13)
    data = DataInterface(profile)
    events: list[DownloadProgress] = []
    rows = data.query(recording_hash=rec.recording_hash, status="raw")
    assert data.download(rows, dest=tmp_path, progress=events.append) == []
    assert [(e.phase, e.modality) for e in events] == [
        ("start", "notes"),
        ("plan_done", "notes"),
        ("modality_start", "notes"),
        ("modality_done", "notes"),
        ("finish", "notes"),
    ]


def test_callback_runs_on_the_calling_thread(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """Callbacks are invoked synchronously on the thread that called download()."""
    seen: set[int] = set()
    data.download(
        data.query(recording_hash=recording.recording_hash),
        dest=tmp_path,
        progress=lambda e: seen.add(threading.get_ident()),
    )
    assert seen == {threading.get_ident()}


def test_callback_errors_are_logged_once_each_and_streaming_continues(
    data: DataInterface, recording: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Callback exceptions are caught and logged to ursa.download at WARNING with
    extra={"callback_error": ...}; no dedupe: N WARNINGs for N files."""

    def explode(e: DownloadProgress) -> None:
        if e.phase == "file_done":
            raise RuntimeError("widget gone")

    caplog.set_level(logging.WARNING, logger="ursa.download")
    paths = data.download(
        data.query(recording_hash=recording.recording_hash), dest=tmp_path, progress=explode
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(paths)
    assert all(r.name == "ursa.download" for r in warnings)
    assert all("widget gone" in r.callback_error for r in warnings)  # type: ignore[attr-defined]
    assert all(p.exists() for p in paths)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_interrupts_from_the_callback_tear_down(
    data: DataInterface, recording: Recording, tmp_path: Path, exc: type[BaseException]
) -> None:
    def stop(e: DownloadProgress) -> None:
        if e.phase == "file_done":
            raise exc()

    with pytest.raises(exc):
        data.download(
            data.query(recording_hash=recording.recording_hash), dest=tmp_path, progress=stop
        )
    assert no_temporaries(tmp_path)
    # Directory assets appear whole or not at all.
    zarr_dir = tmp_path / recording.recording_hash / "eeg" / "eeg.zarr"
    if zarr_dir.exists():
        assert len(tree(zarr_dir)) == 10


def test_logger_contract(
    data: DataInterface, recording: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """INFO at recording/modality boundaries, DEBUG per file, every record with the
    contract's extra= keys."""
    caplog.set_level(logging.DEBUG, logger="ursa.download")
    paths = data.download(data.query(recording_hash=recording.recording_hash), dest=tmp_path)
    records = [r for r in caplog.records if r.name == "ursa.download"]
    info = [r.phase for r in records if r.levelno == logging.INFO]  # type: ignore[attr-defined]
    debug = [r.phase for r in records if r.levelno == logging.DEBUG]  # type: ignore[attr-defined]
    assert set(info) == {"start", "plan_done", "modality_start", "modality_done", "finish"}
    assert debug == ["file_done"] * len(paths)
    keys = (
        "phase",
        "recording_hash",
        "modality",
        "worker_id",
        "key",
        "bytes_done",
        "bytes_total",
        "elapsed_s",
    )
    for r in records:
        for k in keys:
            assert hasattr(r, k), (r.phase, k)  # type: ignore[attr-defined]


def test_info_level_skips_per_file_records(
    data: DataInterface, recording: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ursa.download")
    data.download(data.query(recording_hash=recording.recording_hash), dest=tmp_path)
    assert not [r for r in caplog.records if r.levelno < logging.INFO]


def test_progress_interval_adds_throttled_progress_events(profile: Profile, tmp_path: Path) -> None:
    rec = build_recording(
        profile, [RowSpec("raw", status="raw", segments=400, segment_size=16 * 1024)], seed=12
    )
    data = DataInterface(profile)
    events: list[DownloadProgress] = []
    data.download(
        data.query(recording_hash=rec.recording_hash, status="raw"),
        dest=tmp_path,
        progress=events.append,
        progress_interval=0.001,
        max_concurrency=2,
    )
    progress = [e for e in events if e.phase == "progress"]
    assert progress, "no progress events"
    assert all(e.modality == "raw" and e.worker_id == "" for e in progress)
    done = [e.bytes_done for e in events]
    assert done == sorted(done)


# --- Concurrency and the local store ---------------------------------------------------


def test_downloads_from_several_threads_at_once(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    rows = data.query(recording_hash=recording.recording_hash)
    results: dict[int, list[Path]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = data.download(rows, dest=tmp_path / str(i))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    trees = {i: tree(tmp_path / str(i)) for i in range(4)}
    assert all(t == trees[0] and t for t in trees.values())
    for i in range(1, 4):
        for a, b in zip(results[0], results[i], strict=True):
            assert a.read_bytes() == b.read_bytes()


def test_works_inside_a_running_event_loop(
    data: DataInterface, recording: Recording, tmp_path: Path
) -> None:
    """Notebooks run cells inside an asyncio loop: download() must not need one of its own."""
    import asyncio

    async def cell() -> list[Path]:
        rows = data.query(recording_hash=recording.recording_hash, modality="imu")
        return data.download(rows, dest=tmp_path)

    (path,) = asyncio.run(cell())
    assert path.name == "imu.parquet" and path.stat().st_size > 0


def test_file_store_end_to_end(local_profile: Profile, tmp_path: Path) -> None:
    rec = build_recording(local_profile, seed=4)
    data = DataInterface(local_profile)
    rows = data.query(recording_hash=rec.recording_hash)
    paths = data.download(rows, dest=tmp_path / "out")
    for row in rows:
        if row.asset_format == "parquet":
            assert row.storage_uri is not None
            src = Path(row.storage_uri.removeprefix("file://"))
            (dst,) = [p for p in paths if p.name == src.name]
            assert dst.read_bytes() == src.read_bytes()
    z = zarr.open_group(str(tmp_path / "out" / rec.recording_hash / "eeg" / "eeg.zarr"), mode="r")
    assert z["data"].shape == (8, 8000)
