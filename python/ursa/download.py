"""A download from first check to last event, shared by ``download()`` and
``download_async()``.

The phase sequence is written once, as a generator (``_sequence``): validate → emit
``start`` → plan → collisions → ``plan_done`` → clean stale temporaries → run the engine
(``modality_start → file_done* → modality_done``)+ → ``finish``. It never waits itself: it
yields a step (a blocking call, or a poll of the engine) and a driver carries the step out.
The sync driver waits on the engine with the GIL released, in short slices so Ctrl+C and
``cancel=`` are noticed; the async driver polls without waiting and sleeps on the event
loop, so no thread is held and callbacks run on the loop's thread. Either way an exception
reaches the sequence at the point it waits: the engine is cancelled and drained (its
temporaries removed) before the exception propagates.

The engine finishes files in whatever order the network allows; rows are reported one at
a time, in plan order, with a later row's completions held until the rows before it are
done (jobs start in plan order, so little is ever held). Files a resumed download keeps
count as done (and their bytes as downloaded) from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from array import array
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, overload

from ursa import _core, records
from ursa.catalog import ModalityRow, QueryResult
from ursa.errors import DownloadCancelled, raise_from_core
from ursa.events import Emitter, ProgressCallback
from ursa.layouts import Layout, check_layout
from ursa.plan import DownloadPlan, check_space, make_plan, path_str, unique_rows
from ursa.profiles import Profile
from ursa.retry import RetryPolicy
from ursa.sources import Source, check_source

_POLL_S = 0.1  # how often the sync wait wakes to let Python see Ctrl+C and cancel=
_ASYNC_MIN_S = 0.001  # the async driver's sleep between empty polls grows from this …
_ASYNC_MAX_S = 0.02  # … to this, and drops back when events flow

logger = logging.getLogger("ursa.download")

Target = QueryResult | Iterable[QueryResult]


class CancelToken(Protocol):
    """Anything with ``is_set()``, e.g. ``threading.Event``: set it to stop a download."""

    def is_set(self) -> bool: ...


Verify = Literal["auto", "size"]
VERIFY_MODES: tuple[Verify, ...] = ("auto", "size")


@dataclass(frozen=True)
class Tuning:
    max_concurrency: int
    part_size: int
    retry: RetryPolicy
    progress_interval: float | None
    verify: Verify = "auto"


@dataclass(frozen=True)
class Request:
    """A validated download call."""

    profile: Profile
    rows: tuple[ModalityRow, ...]
    dest: Path
    source: Source
    layout: Layout
    overwrite: bool
    tuning: Tuning
    progress: ProgressCallback | None
    resume: bool = False
    durable: bool = False


def request(
    profile: Profile,
    target: Target,
    dest: str | os.PathLike[str],
    *,
    source: str,
    layout: str,
    progress: ProgressCallback | None,
    overwrite: bool,
    progress_interval: float | None,
    max_concurrency: int | None,
    part_size: int | None,
    retry: RetryPolicy | None,
    verify: str = "auto",
    resume: bool = False,
    durable: bool = False,
) -> Request:
    """Every argument checked, before any event or byte: a ValueError or TypeError."""
    if progress is not None and not callable(progress):
        raise TypeError(
            "progress must be a callable taking a DownloadProgress (or None), "
            f"got {type(progress).__name__} {progress!r}"
        )
    if progress_interval is None:  # an adapter may carry its own refresh interval
        progress_interval = getattr(progress, "progress_interval", None)
    return Request(
        profile,
        unique_rows(target),
        check_dest(dest),
        check_source(source),
        check_layout(layout),
        bool(overwrite),
        _tuning(max_concurrency, part_size, retry, progress_interval, verify),
        progress,
        bool(resume),
        bool(durable),
    )


def download(req: Request, cancel: CancelToken | None = None) -> list[Path]:
    """Run ``req`` on the calling thread; see ``DataInterface.download``."""
    _check_cancel_token(cancel)
    try:
        return _drive(_sequence(req, Emitter(req.progress)), cancel)
    except BaseException as exc:
        _tell_adapter(req.progress, exc)
        raise


async def download_async(req: Request, cancel: CancelToken | None = None) -> list[Path]:
    """Run ``req`` on the running event loop; see ``DataInterface.download_async``."""
    _check_cancel_token(cancel)
    try:
        return await _drive_async(_sequence(req, Emitter(req.progress)), cancel)
    except BaseException as exc:
        _tell_adapter(req.progress, exc)
        raise


# --- the phase sequence ---------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """A step that may block (listing the store, touching the disk)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Poll:
    """Wait for engine events (up to ``timeout_s`` when waiting is allowed). ``draining``:
    the engine was cancelled and is cleaning up; cancel= is not checked again."""

    handle: _core.DownloadHandle
    timeout_s: float
    draining: bool = False


_Step = _Call | _Poll
_Sequence = Generator[_Step, Any, list[Path]]


def _sequence(req: Request, emitter: Emitter) -> _Sequence:
    rec, mod = _scope(req.rows)
    emitter.emit("start", bytes_done=0, retries=0, recording_hash=rec, modality=mod)
    plan: DownloadPlan = yield _Call(
        make_plan, (req.profile, req.rows, req.dest, req.source, req.layout, req.resume)
    )
    if plan.collisions and not req.overwrite:
        raise FileExistsError(
            f"{plan.collisions[0]} already exists; pass overwrite=True to replace it"
        )
    check_space(plan)
    emitter.bytes_total = plan.bytes_total
    emitter.emit("plan_done", bytes_done=0, retries=0, recording_hash=rec, modality=mod)
    yield _Call(_clean_stale, (plan,))
    retries = (
        (yield from _transfer(plan, emitter, req.tuning, req.overwrite, req.durable))
        if plan.rows
        else 0
    )
    emitter.emit(
        "finish", bytes_done=plan.bytes_total, retries=retries, recording_hash=rec, modality=mod
    )
    return plan.paths


def _clean_stale(plan: DownloadPlan) -> None:
    plan.dest.mkdir(parents=True, exist_ok=True)
    try:
        _core.clean_stale(sorted(str(d) for d in plan.target_dirs()), plan.adoptions())
    except _core.CoreError as exc:
        raise_from_core(exc)


def _transfer(
    plan: DownloadPlan, emitter: Emitter, tuning: Tuning, overwrite: bool, durable: bool
) -> Generator[_Step, Any, int]:
    """Download every planned file; returns the number of retries. On any exception
    (Ctrl+C, cancel, a callback's KeyboardInterrupt) the engine is cancelled and drained —
    its temporaries gone — before the exception propagates."""
    kept = set(plan.kept)
    fetched = array("q", (i for i, f in enumerate(plan.files) if f.action != "skip"))
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
    staged_index = {d: n for n, d in enumerate(staged)}  # position among the assets sent
    files = _EngineFiles(plan, fetched, staged_index)
    assets: list[_core._Asset] = [
        {"dest": str(plan.directories[d]), "adopt": _str(continued.get(plan.directories[d]))}
        for d in staged
    ]
    handle = _core.start_download(
        list(plan.stores),
        files,
        assets,
        max_concurrency=tuning.max_concurrency,
        part_size=tuning.part_size,
        overwrite=overwrite,
        retry=tuning.retry.as_tuple(),
        verify=tuning.verify,
        records=(str(plan.dest), str(records.record_file(plan.dest))),
        durable=durable,
    )
    skipped = plan.bytes_skipped

    def counters() -> tuple[int, int]:
        return handle.bytes_done() + skipped, handle.retries()

    rows = _RowTracker(plan, emitter, counters, staged)
    for i, f in enumerate(plan.files):
        if f.action == "skip":
            rows.file_done(i)
    interval = tuning.progress_interval
    wait = _POLL_S if interval is None else min(_POLL_S, interval)
    next_tick = time.monotonic() + interval if interval else float("inf")
    try:
        rows.release()
        while (batch := (yield _Poll(handle, wait))) is not None:
            for kind, index in batch:
                if kind == "file":
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
    except GeneratorExit:  # abandoned by its driver: cancel, nothing more can be awaited
        handle.cancel()
        raise
    except BaseException:
        handle.cancel()
        while (yield _Poll(handle, _POLL_S, draining=True)) is not None:
            pass
        raise
    return handle.retries()


# --- drivers --------------------------------------------------------------------------


def _drive(steps: _Sequence, cancel: CancelToken | None) -> list[Path]:
    """Carry the steps out on this thread: blocking calls inline, engine waits with the
    GIL released in slices of at most ``_POLL_S``."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            result: list[Path] = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(step, _Call):
                _raise_if_cancelled(cancel)
                value = step.fn(*step.args)
            else:
                if not step.draining:
                    _raise_if_cancelled(cancel)
                value = step.handle.next_events(step.timeout_s)
        except BaseException as exc:  # Ctrl+C included: handed to the sequence to clean up
            error = exc


async def _drive_async(steps: _Sequence, cancel: CancelToken | None) -> list[Path]:
    """Carry the steps out on the event loop: blocking calls in a worker thread (planning
    lists the store), engine polls that never wait, with short sleeps on the loop between
    empty polls. Task cancellation reaches the sequence like Ctrl+C does."""
    value: Any = None
    error: BaseException | None = None
    pause = _ASYNC_MIN_S
    while True:
        try:
            step = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as stop:
            result: list[Path] = stop.value
            return result
        value, error = None, None
        try:
            if isinstance(step, _Call):
                _raise_if_cancelled(cancel)
                value = await asyncio.to_thread(step.fn, *step.args)
                # What follows a call (callbacks, starting the engine) runs on the loop:
                # let due timers and other tasks go first (a 0 s sleep would not: the
                # ready queue runs before timers that fell due meanwhile).
                await asyncio.sleep(_ASYNC_MIN_S)
            elif step.draining:
                value = await _drain_poll(step.handle)
            else:
                _raise_if_cancelled(cancel)
                value = step.handle.next_events(0.0)
                if value == []:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, _ASYNC_MAX_S, step.timeout_s)
                else:
                    pause = _ASYNC_MIN_S
        except BaseException as exc:  # CancelledError included
            error = exc


async def _drain_poll(
    handle: _core.DownloadHandle,
) -> list[tuple[Literal["file", "directory"], int]] | None:
    """One poll of a cancelled engine. A second cancellation of the task does not cut
    the clean-up short (the first one is already on its way up)."""
    batch = handle.next_events(0.0)
    if batch == []:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(_ASYNC_MAX_S)
    return batch


def _raise_if_cancelled(cancel: CancelToken | None) -> None:
    if cancel is not None and cancel.is_set():
        raise DownloadCancelled("the download was cancelled (cancel= was set)")


def _check_cancel_token(cancel: object) -> None:
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(
            "cancel must have an is_set() method (e.g. a threading.Event), "
            f"got {type(cancel).__name__}"
        )


def _tell_adapter(progress: ProgressCallback | None, exc: BaseException) -> None:
    """An adapter with an ``on_error(exc)`` hook hears that the download failed, so it can
    close its bar; the download's own exception then propagates unchanged."""
    hook = getattr(progress, "on_error", None)
    if not callable(hook):
        return
    try:
        hook(exc)
    except Exception as hook_exc:
        logger.warning("progress on_error hook raised: %s: %s", type(hook_exc).__name__, hook_exc)


# --- arguments --------------------------------------------------------------------------


def check_dest(dest: str | os.PathLike[str]) -> Path:
    path = Path(os.fspath(dest)).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"dest {path} exists and is not a directory")
    return path


def _scope(rows: tuple[ModalityRow, ...]) -> tuple[str | None, str | None]:
    """Call-scoped events name the recording/modality only when the call has one."""
    hashes = {r.recording_hash for r in rows}
    modalities = {r.modality for r in rows}
    return (
        next(iter(hashes)) if len(hashes) == 1 else None,
        next(iter(modalities)) if len(modalities) == 1 else None,
    )


def _tuning(
    max_concurrency: int | None,
    part_size: int | None,
    retry: RetryPolicy | None,
    progress_interval: float | None,
    verify: str = "auto",
) -> Tuning:
    concurrency = _core.DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency
    part = _core.DEFAULT_PART_SIZE if part_size is None else part_size
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
    if not isinstance(part, int) or part < 1:
        raise ValueError(f"part_size must be a positive number of bytes, got {part_size!r}")
    if progress_interval is not None and not 0 < progress_interval < math.inf:
        raise ValueError(
            f"progress_interval must be a finite number of seconds > 0, got {progress_interval!r}"
        )
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    return Tuning(concurrency, part, retry or RetryPolicy(), progress_interval, verify)


# --- events -----------------------------------------------------------------------------


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
                    planned = self.plan.files[job]
                    self._emit("file_done", row, planned.key, planned.path, planned.size)
            if self.files_left[self.current] or self.dirs_left[self.current]:
                return
            self._emit("modality_done", row)
            self.current += 1
            self.started = False

    def _emit(
        self,
        phase: str,
        row: ModalityRow,
        key: str | None = None,
        path: Path | None = None,
        size: int | None = None,
    ) -> None:
        done, retries = self.counters()
        self.emitter.emit(
            phase,  # type: ignore[arg-type]
            bytes_done=done,
            retries=retries,
            recording_hash=row.recording_hash,
            modality=row.modality,
            worker_id=row.worker_id,
            key=key,
            path=path,
            size=size,
        )


class _EngineFiles(Sequence["_core._File"]):
    """The files the engine fetches (``fetched``, plan positions), in the form
    ``_core.start_download`` reads them: each one built as the engine takes it, so a
    plan of many files is never held twice."""

    def __init__(self, plan: DownloadPlan, fetched: array[int], asset: dict[int, int]):
        self.plan = plan
        self.fetched = fetched
        self.asset = asset  # directory index → position among the assets sent

    def __len__(self) -> int:
        return len(self.fetched)

    @overload
    def __getitem__(self, index: int) -> _core._File: ...
    @overload
    def __getitem__(self, index: slice) -> list[_core._File]: ...
    def __getitem__(self, index: int | slice) -> _core._File | list[_core._File]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        f = self.plan.files[self.fetched[index]]
        return {
            "store": f.store,
            "key": f.key,
            "size": f.size,
            "etag": f.etag,
            "dest": path_str(f.path),
            "asset": None if f.directory is None else self.asset.get(f.directory),
            "adopt": _str(f.adopt),
        }


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
