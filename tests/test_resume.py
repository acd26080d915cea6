"""Heavy sessions: re-runs with resume=True keep what is already there and identical,
continue a killed run's large object from the bytes it holds, and fail before writing when
the disk is too small. Real SeaweedFS behind the fault proxy, which counts the requests;
boto3 is the oracle for bytes."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import profile_for, subprocess_env
from faultproxy import FaultProxy, RequestRecord, Rule
from ursa import DataInterface, DownloadProgress, Profile, QueryResult, _core
from ursa.testing import Recording, RowSpec, build_recording

MiB = 1 << 20
BUCKETS = ("ursa-assets", "ursa-raw")


@pytest.fixture(scope="module")
def rec(profile: Profile) -> Recording:
    rows = [
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=6 * MiB),
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=6),
        RowSpec("imu", asset_format="parquet", segments=1, segment_size=1),
        RowSpec("audio", status="raw", segments=3),
    ]
    return build_recording(profile, rows, seed=1201)  # a seed no other test module uses


@pytest.fixture
def data(faulty: FaultProxy) -> DataInterface:
    return DataInterface(profile_for(faulty.endpoint))


def rows(data: DataInterface, rec: Recording) -> list[QueryResult]:
    """Every row of the recording, raw ones included."""
    h = rec.recording_hash
    return [data.query(recording_hash=h), data.query(recording_hash=h, status="raw")]


def object_gets(proxy: FaultProxy, rec: Recording) -> list[RequestRecord]:
    """GETs of the recording's objects (not listings, not the catalog)."""
    prefixes = tuple(f"/{b}/{rec.recording_hash}/" for b in BUCKETS)
    return [r for r in proxy.records() if r.method == "GET" and r.path.startswith(prefixes)]


def store_bytes(boto: Any, path: Path, dest: Path, rec: Recording) -> bytes:
    """The store's bytes for a downloaded file, read with boto3 (by_recording layout)."""
    rel = path.relative_to(dest / rec.recording_hash).as_posix()
    modality, _, rest = rel.partition("/")
    if modality == "audio":
        bucket, key = "ursa-raw", f"{rec.recording_hash}/audio/{rest}"
    else:
        bucket, key = "ursa-assets", f"{rec.recording_hash}/{modality}/{rest}"
    return bytes(boto.get_object(Bucket=bucket, Key=key)["Body"].read())


def assert_exact(boto: Any, paths: list[Path], dest: Path, rec: Recording) -> None:
    for path in paths:
        assert path.read_bytes() == store_bytes(boto, path, dest, rec), path


def test_a_second_run_with_resume_sends_no_get(
    data: DataInterface, faulty: FaultProxy, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    target = rows(data, rec)
    first = data.download(target, tmp_path)
    assert object_gets(faulty, rec), "the first run fetched nothing?"
    plan = data.plan_download(target, tmp_path, resume=True)
    assert (plan.files_skipped, plan.bytes_skipped) == (len(first), plan.bytes_total)
    assert (plan.files_to_fetch, plan.bytes_to_fetch, plan.collisions) == (0, 0, ())
    faulty.clear()
    events: list[DownloadProgress] = []
    again = data.download(target, tmp_path, resume=True, progress=events.append)
    assert object_gets(faulty, rec) == []
    assert again == first
    done = [e.key for e in events if e.phase == "file_done"]
    assert len(done) == len(first)
    # Kept bytes count at once: the bar starts full.
    assert next(e for e in events if e.phase == "modality_start").bytes_done == plan.bytes_total
    assert_exact(boto, again, tmp_path, rec)


def test_without_resume_an_identical_file_is_still_a_collision(
    data: DataInterface, rec: Recording, tmp_path: Path
) -> None:
    target = data.query(recording_hash=rec.recording_hash, modality="imu")
    data.download(target, tmp_path)
    with pytest.raises(FileExistsError, match=r"imu\.parquet already exists"):
        data.download(target, tmp_path)


def test_one_deleted_file_is_fetched_alone(
    data: DataInterface, faulty: FaultProxy, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    target = rows(data, rec)
    paths = data.download(target, tmp_path)
    lost = next(p for p in paths if p.name == "seg-000001.bin")
    lost.unlink()
    faulty.clear()
    assert data.download(target, tmp_path, resume=True) == paths
    assert [r.path for r in object_gets(faulty, rec)] == [
        f"/ursa-raw/{rec.recording_hash}/audio/seg-000001.bin"
    ]
    assert_exact(boto, paths, tmp_path, rec)


def test_one_deleted_zarr_chunk_is_fetched_alone_and_the_asset_is_complete(
    data: DataInterface, faulty: FaultProxy, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    target = data.query(recording_hash=rec.recording_hash, modality="eeg")
    paths = data.download(target, tmp_path)
    chunks = [p for p in paths if "/c/" in p.as_posix()]
    lost = chunks[len(chunks) // 2]
    lost.unlink()
    # A killed earlier resume's temporary beside it: neither foreign content nor kept.
    stale = lost.with_name(f".{lost.name}.ursa-{_core.host_name()}-99999999-0123456789abcdef.part")
    stale.write_bytes(b"cut short")
    faulty.clear()
    plan = data.plan_download(target, tmp_path, resume=True)
    assert (plan.files_to_fetch, plan.files_skipped) == (1, len(paths) - 1)
    assert data.download(target, tmp_path, resume=True) == paths
    (got,) = object_gets(faulty, rec)
    assert got.path.endswith(lost.relative_to(tmp_path / rec.recording_hash).as_posix())
    assert_exact(boto, paths, tmp_path, rec)
    asset = tmp_path / rec.recording_hash / "eeg" / "eeg.zarr"
    on_disk = sorted(p for p in asset.rglob("*") if p.is_file())
    assert on_disk == sorted(p for p in paths if asset in p.parents)
    assert not [p for p in tmp_path.rglob("*") if ".ursa-" in p.name]


def test_an_edited_file_is_a_collision_even_with_its_size_and_mtime(
    data: DataInterface, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    """Same size, other bytes, mtime set back: not identical (its ctime moved)."""
    target = data.query(recording_hash=rec.recording_hash, modality="imu")
    (path,) = data.download(target, tmp_path)
    before = path.stat()
    body = bytearray(path.read_bytes())
    body[100] ^= 0xFF
    with open(path, "r+b") as f:
        f.write(body)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size
    with pytest.raises(FileExistsError, match=r"imu\.parquet"):
        data.download(target, tmp_path, resume=True)
    assert path.read_bytes() == bytes(body), "the edited file was touched"
    assert data.download(target, tmp_path, resume=True, overwrite=True) == [path]
    assert_exact(boto, [path], tmp_path, rec)


def test_a_directory_asset_holding_a_foreign_file_is_a_collision(
    data: DataInterface, rec: Recording, tmp_path: Path
) -> None:
    target = data.query(recording_hash=rec.recording_hash, modality="eeg")
    data.download(target, tmp_path)
    asset = tmp_path / rec.recording_hash / "eeg" / "eeg.zarr"
    (asset / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"eeg\.zarr"):
        data.download(target, tmp_path, resume=True)
    assert (asset / "notes.txt").read_text() == "mine"


def test_another_hosts_temporaries_are_never_touched(
    data: DataInterface, rec: Recording, tmp_path: Path
) -> None:
    """Two machines sharing a filesystem: a temporary named for another host (its pid
    means nothing here) survives, while this host's dead process's is cleaned."""
    target = data.query(recording_hash=rec.recording_hash, modality="imu")
    where = tmp_path / rec.recording_hash / "imu"
    where.mkdir(parents=True)
    dead = 99_999_999  # above Linux's pid_max: no such process
    theirs = where / f".imu.parquet.ursa-otherhost-{dead}-0123456789abcdef.part"
    theirs.write_bytes(b"their live work")
    ours = where / f".imu.parquet.ursa-{_core.host_name()}-{dead}-0123456789abcdef.part"
    ours.write_bytes(b"our dead run's")
    data.download(target, tmp_path)
    assert theirs.read_bytes() == b"their live work"
    assert not ours.exists()


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root, which the CI and dev containers have)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_too_small_disk_fails_before_writing(
    data: DataInterface, faulty: FaultProxy, rec: Recording, small_fs: Path
) -> None:
    target = rows(data, rec)  # 6 MiB of MP4 alone, more than the tmpfs's 4 MiB
    plan = data.plan_download(target, small_fs / "dest")
    assert plan.bytes_to_fetch > 4 * MiB >= (plan.bytes_free or 0) > 0
    events: list[DownloadProgress] = []
    with pytest.raises(OSError, match=r"needs [\d,]+ bytes .* has [\d,]+ bytes .* free") as err:
        data.download(target, small_fs / "dest", progress=events.append)
    assert err.value.errno == errno.ENOSPC
    assert f"{plan.bytes_to_fetch:,}" in str(err.value)
    assert object_gets(faulty, rec) == []
    assert list(small_fs.iterdir()) == [], "something was written"
    assert "plan_done" not in [e.phase for e in events]
    # What fits still downloads there.
    small = data.query(recording_hash=rec.recording_hash, modality="imu")
    assert data.download(small, small_fs / "dest")


CHILD = """
import sys
from ursa import DataInterface, RetryPolicy
data = DataInterface("r2-test")
rows = data.query(recording_hash=sys.argv[1], modality="camera")
data.download(rows, sys.argv[2], part_size=int(sys.argv[3]),
              retry=RetryPolicy(idle_timeout_s=120))
print("finished", flush=True)
"""


def journal_held(dest: Path) -> int:
    """Bytes the running download's journal says are on disk (0 before it exists)."""
    total = 0
    for journal in dest.rglob("*.journal"):
        held: dict[str, int] = {}
        for line in journal.read_text().splitlines()[1:]:
            part, _, written = line.partition(" ")
            if written.isdigit():
                held[part] = max(held.get(part, 0), int(written))
        total += sum(held.values())
    return total


def range_bytes(records: list[RequestRecord], size: int) -> int:
    """Bytes asked for: each Range's length, a whole-object GET's ``size``."""
    total = 0
    for r in records:
        found = re.fullmatch(r"bytes=(\d+)-(\d+)", r.range or "")
        total += size if found is None else int(found[2]) - int(found[1]) + 1
    return total


@pytest.mark.parametrize("corrupt", [False, True], ids=["intact", "held-byte-flipped"])
def test_a_killed_large_object_is_continued_from_the_bytes_it_holds(
    data: DataInterface,
    faulty: FaultProxy,
    rec: Recording,
    tmp_path: Path,
    boto: Any,
    corrupt: bool,
) -> None:
    """SIGKILL a child mid-object, then resume: only the missing ranges are fetched and the
    file is byte-exact. Held bytes are re-read and checked, never trusted: with one of them
    flipped on disk, the object is fetched again and still ends byte-exact."""
    size = 6 * MiB
    key = f"{rec.recording_hash}/camera/camera\\.mp4$"
    faulty.add(Rule("slow", method="GET", key=key, chunk=32 * 1024, delay_s=0.02))
    dest = tmp_path / "dest"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, rec.recording_hash, str(dest), str(2 * MiB)],
        env=subprocess_env(faulty.endpoint, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while journal_held(dest) < size // 2:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never got half way"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        child.kill()
    held = journal_held(dest)
    assert size // 2 <= held < size * 9 // 10, held
    (part,) = [p for p in dest.rglob("*.part")]
    if corrupt:
        with open(part, "r+b") as f:
            f.seek(10)
            byte = f.read(1)
            f.seek(10)
            f.write(bytes([byte[0] ^ 1]))
    faulty.clear()
    target = data.query(recording_hash=rec.recording_hash, modality="camera")
    plan = data.plan_download(target, dest, resume=True)
    (planned,) = [f for f in plan.files if f.key.endswith("camera.mp4")]
    assert (planned.action, planned.held) == ("resume", held)
    assert (plan.files_resumed, plan.bytes_resumed) == (1, held)
    events: list[DownloadProgress] = []
    paths = data.download(target, dest, resume=True, progress=events.append)
    assert_exact(boto, paths, dest, rec)
    mp4 = [r for r in object_gets(faulty, rec) if r.path.endswith("camera.mp4")]
    fetched = range_bytes(mp4, size)
    if corrupt:
        assert events[-1].retries >= 1 and fetched >= size
    else:
        assert fetched == size - held < size
    assert not [p for p in dest.rglob("*") if ".ursa-" in p.name]


ZARR_CHILD = """
import sys
from ursa import DataInterface
data = DataInterface("r2-test")
rows = data.query(recording_hash=sys.argv[1], modality="eeg")
data.download(rows, sys.argv[2], max_concurrency=1)
"""


def recorded(dest: Path, part: str) -> set[str]:
    """Paths (relative to dest) the download records say were written, containing part."""
    paths: set[str] = set()
    for log in (dest / ".ursa" / "records").glob("*.jsonl"):
        for line in log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                path = json.loads(line)["path"]
                if part in path:
                    paths.add(path)
    return paths


def test_a_killed_directory_assets_stage_keeps_its_complete_files(
    data: DataInterface, faulty: FaultProxy, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    """SIGKILL a child half-way through a Zarr store (one file at a time, slowed): the
    re-run continues its stage, fetches only the files not yet complete, and publishes the
    asset whole and byte-exact."""
    key = f"{rec.recording_hash}/eeg/eeg\\.zarr/"
    faulty.add(Rule("slow", method="GET", key=key, chunk=4096, delay_s=0.04))
    dest = tmp_path / "dest"
    target = data.query(recording_hash=rec.recording_hash, modality="eeg")
    total = len(data.plan_download(target, dest).files)
    child = subprocess.Popen(
        [sys.executable, "-c", ZARR_CHILD, rec.recording_hash, str(dest)],
        env=subprocess_env(faulty.endpoint, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while len(recorded(dest, "eeg.zarr")) < total // 2:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never got half way"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    finally:
        child.kill()
    done = recorded(dest, "eeg.zarr")
    assert total // 2 <= len(done) < total
    assert not (dest / rec.recording_hash / "eeg" / "eeg.zarr").exists(), "published early"
    faulty.clear()
    plan = data.plan_download(target, dest, resume=True)
    assert plan.files_skipped == len(done) and len(plan.stages) == 1
    paths = data.download(target, dest, resume=True)
    gets = object_gets(faulty, rec)
    assert len(gets) == total - len(done)
    assert not {g.path.split(f"/{rec.recording_hash}/", 1)[1] for g in gets} & {
        p.split(f"{rec.recording_hash}/", 1)[1] for p in done
    }
    assert_exact(boto, paths, dest, rec)
    asset = dest / rec.recording_hash / "eeg" / "eeg.zarr"
    assert sorted(p for p in asset.rglob("*") if p.is_file()) == sorted(paths)
    assert not [p for p in dest.rglob("*") if ".ursa-" in p.name]


def test_a_journal_for_another_etag_is_discarded(
    data: DataInterface, faulty: FaultProxy, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    """A dead run's temporary of another version of the object is never continued."""
    target = data.query(recording_hash=rec.recording_hash, modality="camera")
    (planned,) = [f for f in data.plan_download(target, tmp_path).files if f.size == 6 * MiB]
    where = planned.path.parent
    where.mkdir(parents=True)
    stem = f".camera.mp4.ursa-{_core.host_name()}-99999999-0123456789abcdef"
    (where / f"{stem}.part").write_bytes(b"\x00" * planned.size)
    (where / f"{stem}.journal").write_text(
        f'ursa-journal 1 {planned.size} {2 * MiB} ="not-this-object"\n0 {2 * MiB}\n'
    )
    plan = data.plan_download(target, tmp_path, resume=True)
    assert plan.files_resumed == 0 and plan.bytes_to_fetch == plan.bytes_total
    paths = data.download(target, tmp_path, resume=True)
    assert_exact(boto, paths, tmp_path, rec)
    assert not [p for p in tmp_path.rglob("*") if ".ursa-" in p.name]


def test_cli_resume(faulty: FaultProxy, rec: Recording, tmp_path: Path) -> None:
    """`ursa download --resume` passes resume=True through: the re-run fetches nothing."""
    env = subprocess_env(faulty.endpoint, tmp_path)
    dest = tmp_path / "out"
    args = [sys.executable, "-m", "ursa.cli", "download", rec.recording_hash]
    args += ["--dest", str(dest), "--profile", "r2-test", "--json"]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args + list(extra), env=env, capture_output=True, text=True, timeout=120, check=False
        )

    assert run().returncode == 0
    assert run().returncode == 3, "without --resume an existing file is a collision"
    dry = run("--resume", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["files_skipped"] == plan["files"] > 0 and plan["files_to_fetch"] == 0
    assert plan["bytes_to_fetch"] == 0 and not plan["would_fail"]
    faulty.clear()
    again = run("--resume")
    assert again.returncode == 0, again.stderr
    assert object_gets(faulty, rec) == []
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert events[-1]["phase"] == "finish"
    assert events[-1]["bytes_done"] == events[-1]["bytes_total"] > 0


def test_no_object_may_land_in_the_records_directory(
    profile: Profile, tmp_path: Path, boto: Any
) -> None:
    """dest/.ursa holds the records; a key that the flat layout would put there is refused
    at plan time, before anything is written."""
    raw = build_recording(profile, [RowSpec("audio", status="raw", segments=1)], seed=1202)
    boto.put_object(
        Bucket="ursa-raw", Key=f"{raw.recording_hash}/audio/.ursa/records/x.jsonl", Body=b"{}"
    )
    data = DataInterface(profile)
    rows = data.query(recording_hash=raw.recording_hash, status="raw")
    with pytest.raises(ValueError, match="keeps its records in"):
        data.download(rows, tmp_path / "d", layout="flat")
    assert not (tmp_path / "d").exists()
    # Nor may something else stand where the records go.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".ursa").write_text("mine")
    with pytest.raises(FileExistsError, match="download records"):
        data.download(rows, tmp_path / "d")
    assert [p.name for p in (tmp_path / "d").iterdir()] == [".ursa"]
