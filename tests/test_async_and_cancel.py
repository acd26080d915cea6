"""``download_async()`` and ``cancel=``: downloads slowed by the fault proxy so there is
time to watch the event loop and to cancel half-way; what is left on disk is checked
against the store (boto3)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import profile_for, temporaries
from faultproxy import FaultProxy, Rule
from ursa import DataInterface, DownloadCancelled, DownloadProgress, Profile, QueryResult
from ursa.testing import Recording, RowSpec, build_recording

MiB = 1 << 20
MP4 = 8 * MiB


@pytest.fixture(scope="module")
def rec(profile: Profile) -> Recording:
    rows = [
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=MP4),
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=6),
    ]
    return build_recording(profile, rows, seed=161)


@pytest.fixture
def slow(proxy: FaultProxy, rec: Recording) -> Iterator[DataInterface]:
    """Every object of ``rec`` trickles (16 KiB per 8 ms per request), so a download takes
    about a second: long enough to watch and to cancel mid-way."""
    proxy.clear()
    proxy.add(Rule("slow", method="GET", key=f"^/ursa-assets/{rec.recording_hash}/",
                   chunk=16 * 1024, delay_s=0.008))  # fmt: skip
    yield DataInterface(profile_for(proxy.endpoint))
    proxy.clear()


TUNING: dict[str, Any] = {"part_size": MiB, "max_concurrency": 4}


def shape(events: list[DownloadProgress], dest: Path) -> list[Any]:
    """The event stream as phases and keys, with each row's file_done events as a set
    (files within a row finish in network order)."""
    out: list[Any] = []
    for e in events:
        if e.phase == "progress":
            continue
        if e.phase == "file_done":
            assert e.path is not None
            entry = (e.key, e.path.relative_to(dest).as_posix(), e.size)
            if not out or not isinstance(out[-1], set):
                out.append(set())
            out[-1].add(entry)
        else:
            out.append((e.phase, e.recording_hash, e.modality, e.worker_id, e.key, e.bytes_total))
    return out


def check_against_store(boto: Any, events: list[DownloadProgress]) -> None:
    """Each file_done names a complete file: its path holds the object's bytes."""
    done = [e for e in events if e.phase == "file_done"]
    assert done
    for e in done:
        assert e.path is not None and e.key is not None
        body = boto.get_object(Bucket="ursa-assets", Key=e.key)["Body"].read()
        assert e.size == len(body) == e.path.stat().st_size
        if e.size == MP4:
            assert hashlib.sha256(e.path.read_bytes()).digest() == hashlib.sha256(body).digest()


def test_two_downloads_in_one_loop_never_stall_a_heartbeat(
    slow: DataInterface, rec: Recording, tmp_path: Path, boto: Any
) -> None:
    """Best of three runs: on a shared 2-core machine the engine's own start-up (building
    its HTTP clients, with the GIL held) can be descheduled; a loop that waits on the
    engine (e.g. a blocking next_events) stalls in every run."""
    rows = slow.query(recording_hash=rec.recording_hash)
    worsts: list[float] = []
    for attempt in range(3):
        worst = heartbeat_during_two_downloads(slow, rows, tmp_path / str(attempt), boto)
        worsts.append(worst)
        if worst < 0.05:
            break
    assert min(worsts) < 0.05, f"the event loop stalled: {[f'{w * 1000:.0f} ms' for w in worsts]}"


def heartbeat_during_two_downloads(
    data: DataInterface, rows: QueryResult, dest: Path, boto: Any
) -> float:
    """The worst lateness of a 10 ms heartbeat while two downloads run in its loop."""
    events: dict[str, list[DownloadProgress]] = {"a": [], "b": []}
    threads: set[int] = set()

    def recorder(name: str) -> Any:
        def on_progress(e: DownloadProgress) -> None:
            threads.add(threading.get_ident())
            events[name].append(e)

        return on_progress

    async def main() -> tuple[float, int, list[list[Path]]]:
        stop = asyncio.Event()
        worst, ticks = 0.0, 0

        async def heartbeat() -> None:
            nonlocal worst, ticks
            while not stop.is_set():
                t = time.monotonic()
                await asyncio.sleep(0.01)
                worst = max(worst, time.monotonic() - t - 0.01)
                ticks += 1

        beat = asyncio.create_task(heartbeat())
        results = await asyncio.gather(
            *(
                data.download_async(rows, dest / n, progress=recorder(n), **TUNING)
                for n in ("a", "b")
            )
        )
        stop.set()
        await beat
        return worst, ticks, list(results)

    started = time.monotonic()
    worst, ticks, (paths_a, paths_b) = asyncio.run(main())
    took = time.monotonic() - started
    assert took > 0.5, "the proxy did not slow the download; the heartbeat proves nothing"
    assert ticks > took / 0.02
    assert threads == {threading.get_ident()}, "callbacks ran off the loop's thread"
    for name, paths in (("a", paths_a), ("b", paths_b)):
        assert events[name][-1].phase == "finish"
        assert sorted(paths) == sorted(e.path for e in events[name] if e.phase == "file_done")
        check_against_store(boto, events[name])
    return worst


def test_async_events_are_the_sync_events(profile: Profile, rec: Recording, tmp_path: Path) -> None:
    data = DataInterface(profile)
    rows = data.query(recording_hash=rec.recording_hash, status="all")
    sync: list[DownloadProgress] = []
    asyn: list[DownloadProgress] = []
    paths = data.download(rows, tmp_path / "sync", progress=sync.append)
    apaths = asyncio.run(data.download_async(rows, tmp_path / "async", progress=asyn.append))
    assert [p.relative_to(tmp_path / "sync") for p in paths] == [
        p.relative_to(tmp_path / "async") for p in apaths
    ]
    assert shape(sync, tmp_path / "sync") == shape(asyn, tmp_path / "async")
    assert [e.phase for e in asyn][:2] == ["start", "plan_done"]


def assert_nothing_partial(dest: Path, rec: Recording) -> None:
    assert not temporaries(dest), "temporaries survived the cancellation"
    assert not (dest / rec.recording_hash / "camera" / "camera.mp4").exists()
    for path in (p for p in dest.rglob("*") if p.is_file()):
        # Whatever did land is complete: the zarr chunks are whole, the index too.
        assert path.stat().st_size > 0


def test_cancelling_the_task_half_way_cleans_up(
    slow: DataInterface, rec: Recording, tmp_path: Path
) -> None:
    rows = slow.query(recording_hash=rec.recording_hash)
    dest = tmp_path / "dest"
    seen: dict[str, Any] = {}

    async def main() -> None:
        task: asyncio.Task[list[Path]]

        def on_progress(e: DownloadProgress) -> None:
            if "at" not in seen and e.bytes_total and e.bytes_done >= e.bytes_total // 2:
                seen["at"] = time.monotonic()
                seen["fraction"] = e.bytes_done / e.bytes_total
                seen["temporaries"] = len(temporaries(dest))
                task.cancel()

        task = asyncio.create_task(
            slow.download_async(rows, dest, progress=on_progress, progress_interval=0.02, **TUNING)
        )
        with pytest.raises(asyncio.CancelledError):
            await task
        seen["raised"] = time.monotonic()

    asyncio.run(main())
    assert 0.5 <= seen["fraction"] < 0.9
    assert seen["temporaries"] > 0, "nothing was in flight when cancelled"
    assert seen["raised"] - seen["at"] < 2.0
    assert_nothing_partial(dest, rec)


def test_cancel_from_another_thread(slow: DataInterface, rec: Recording, tmp_path: Path) -> None:
    rows = slow.query(recording_hash=rec.recording_hash)
    dest = tmp_path / "dest"
    half, cancel = threading.Event(), threading.Event()
    in_flight: list[int] = []

    def on_progress(e: DownloadProgress) -> None:
        if not half.is_set() and e.bytes_total and e.bytes_done >= e.bytes_total // 2:
            in_flight.append(len(temporaries(dest)))
            half.set()

    def canceller() -> None:
        half.wait(30)
        cancel.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    try:
        with pytest.raises(DownloadCancelled, match="cancelled"):
            slow.download(
                rows, dest, progress=on_progress, progress_interval=0.02, cancel=cancel, **TUNING
            )
    finally:
        half.set()
        thread.join()
    assert in_flight and in_flight[0] > 0
    assert_nothing_partial(dest, rec)


def test_cancel_must_have_is_set(profile: Profile, rec: Recording, tmp_path: Path) -> None:
    data = DataInterface(profile)
    rows = data.query(recording_hash=rec.recording_hash)
    with pytest.raises(TypeError, match="is_set"):
        data.download(rows, tmp_path / "d", cancel=True)  # type: ignore[arg-type]
    assert not (tmp_path / "d").exists()
