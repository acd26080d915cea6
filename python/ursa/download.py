"""Running a planned download: hands the jobs to the engine, drains its events on the
calling thread, and emits the progress phases in contract order:
``start → plan_done → (modality_start → file_done* → modality_done)+ → finish``.

The engine finishes files in whatever order the network allows; rows are reported one at
a time, in plan order, with a later row's completions held until the rows before it are
done (jobs start in plan order, so little is ever held). Files a resumed download keeps
count as done (and their bytes as downloaded) from the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ursa import _core, records
from ursa.catalog import ModalityRow
from ursa.errors import raise_from_core
from ursa.events import Emitter
from ursa.plan import DownloadPlan
from ursa.retry import RetryPolicy

_POLL_S = 0.1  # how often the wait wakes to let Python see Ctrl+C


@dataclass(frozen=True)
class Tuning:
    max_concurrency: int
    part_size: int
    retry: RetryPolicy
    progress_interval: float | None


class _RowTracker:
    """Per-row completion, released in plan order. ``staged`` are the directory assets
    the engine publishes whole (a GroupDone each)."""

    def __init__(
        self,
        plan: DownloadPlan,
        emitter: Emitter,
        counters: Callable[[], tuple[int, int]],
        staged: list[int],
    ):
        self.plan = plan
        self.emitter = emitter
        self.counters = counters
        n = len(plan.rows)
        self.files_left = [0] * n
        self.dirs_left = [0] * n
        for f in plan.files:
            self.files_left[f.row] += 1
        self.dir_row = [0] * len(plan.directories)
        for f in plan.files:
            if f.directory is not None:
                self.dir_row[f.directory] = f.row
        for d in staged:
            self.dirs_left[self.dir_row[d]] += 1
        self.held: list[list[int]] = [[] for _ in range(n)]
        self.current = 0
        self.started = False

    def file_done(self, job: int) -> None:
        row = self.plan.files[job].row
        self.files_left[row] -= 1
        self.held[row].append(job)

    def dir_done(self, directory: int) -> None:
        self.dirs_left[self.dir_row[directory]] -= 1

    def release(self) -> None:
        rows = self.plan.rows
        while self.current < len(rows):
            row = rows[self.current]
            if not self.started:
                self._emit("modality_start", row)
                self.started = True
            held, self.held[self.current] = self.held[self.current], []
            if self.emitter.wants("file_done"):
                for job in held:
                    self._emit("file_done", row, key=self.plan.files[job].key)
            if self.files_left[self.current] or self.dirs_left[self.current]:
                return
            self._emit("modality_done", row)
            self.current += 1
            self.started = False

    def _emit(self, phase: str, row: ModalityRow, key: str | None = None) -> None:
        done, retries = self.counters()
        self.emitter.emit(
            phase,  # type: ignore[arg-type]
            bytes_done=done,
            retries=retries,
            recording_hash=row.recording_hash,
            modality=row.modality,
            worker_id=row.worker_id,
            key=key,
        )


def run(plan: DownloadPlan, emitter: Emitter, tuning: Tuning, overwrite: bool) -> int:
    """Download every planned file; returns the number of retries. Raises the documented
    errors; on any exception (Ctrl+C included) the engine is cancelled and its temporaries
    are gone before the exception propagates."""
    kept = set(plan.kept)
    fetched = [i for i, f in enumerate(plan.files) if f.action != "skip"]
    # Directory assets staged and published whole (continued stages too, even with
    # nothing left to fetch); files missing from a kept one are published into it.
    continued = dict(plan.stages)
    position = {d: i for i, d in enumerate(plan.directories)}
    staged = sorted(
        {
            d
            for i in fetched
            if (d := plan.files[i].directory) is not None and plan.directories[d] not in kept
        }
        | {position[d] for d in continued}
    )
    group = {d: n for n, d in enumerate(staged)}
    jobs = [
        (
            f.store,
            f.key,
            f.size,
            f.etag,
            str(f.path),
            None if f.directory is None else group.get(f.directory),
            _str(f.adopt),
        )
        for f in (plan.files[i] for i in fetched)
    ]
    handle = _core.start_download(
        list(plan.stores),
        jobs,
        [(str(plan.directories[d]), _str(continued.get(plan.directories[d]))) for d in staged],
        max_concurrency=tuning.max_concurrency,
        part_size=tuning.part_size,
        overwrite=overwrite,
        retry=tuning.retry.as_tuple(),
        records=(str(plan.dest), str(records.record_file(plan.dest))),
    )
    skipped = plan.bytes_skipped

    def counters() -> tuple[int, int]:
        return handle.bytes_done() + skipped, handle.retries()

    rows = _RowTracker(plan, emitter, counters, staged)
    for i, f in enumerate(plan.files):
        if f.action == "skip":
            rows.file_done(i)
    interval = tuning.progress_interval
    next_tick = time.monotonic() + interval if interval else float("inf")
    try:
        rows.release()
        while (
            batch := handle.next_events(_POLL_S if interval is None else min(_POLL_S, interval))
        ) is not None:
            for kind, index in batch:
                if kind == 0:
                    rows.file_done(fetched[index])
                else:
                    rows.dir_done(staged[index])
            rows.release()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + (interval or 0)
                _progress(emitter, plan, rows, counters)
        handle.outcome()
    except _core.CoreError as exc:
        raise_from_core(exc)
    except BaseException:
        handle.cancel()
        while handle.next_events(_POLL_S) is not None:
            pass
        raise
    return handle.retries()


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _progress(
    emitter: Emitter, plan: DownloadPlan, rows: _RowTracker, counters: Callable[[], tuple[int, int]]
) -> None:
    if rows.current >= len(plan.rows) or not emitter.wants("progress"):
        return
    row = plan.rows[rows.current]
    done, retries = counters()
    emitter.emit(
        "progress",
        bytes_done=done,
        retries=retries,
        recording_hash=row.recording_hash,
        modality=row.modality,
        worker_id=row.worker_id,
    )
