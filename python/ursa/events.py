"""Download progress events: the ``DownloadProgress`` record, and the emitter that hands
each event to the progress callback and the ``ursa.download`` logger.

Logger contract: INFO for every phase but ``file_done`` and ``progress`` (DEBUG); every
record carries every ``DownloadProgress`` field as an ``extra=`` key. A callback that
raises is logged once per occurrence at WARNING, the exception's type and text in the
message itself and in ``extra={"callback_error": ...}``; KeyboardInterrupt and SystemExit
propagate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger("ursa.download")

Phase = Literal[
    "start", "plan_done", "modality_start", "file_done", "progress", "modality_done", "finish"
]
_PER_FILE: frozenset[str] = frozenset({"file_done", "progress"})


@dataclass(frozen=True)
class DownloadProgress:
    """One progress event. ``bytes_done`` is cumulative over the call and never decreases;
    ``bytes_total`` is None before ``plan_done``. ``worker_id`` is None only on call-scoped
    phases (start, plan_done, finish); ``""`` is the single-worker sentinel. ``key`` is the
    object's key on ``file_done``. ``retries`` counts requests retried so far in the call.
    ``path`` (the file's local path, under its final name) and ``size`` (its bytes) are set
    on ``file_done`` only. Fields are only ever appended, so positional use stays valid."""

    phase: Phase
    recording_hash: str | None
    modality: str | None
    worker_id: str | None
    key: str | None
    bytes_done: int
    bytes_total: int | None
    elapsed_s: float
    retries: int = 0
    path: Path | None = None
    size: int | None = None


ProgressCallback = Callable[[DownloadProgress], object]


class Emitter:
    """Builds events and delivers them on the calling thread. Per-file events cost
    nothing when neither a callback nor DEBUG logging wants them."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._started = time.monotonic()
        self.bytes_done = 0
        self.bytes_total: int | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def wants(self, phase: Phase) -> bool:
        level = logging.DEBUG if phase in _PER_FILE else logging.INFO
        return self._callback is not None or logger.isEnabledFor(level)

    def emit(
        self,
        phase: Phase,
        *,
        bytes_done: int,
        retries: int,
        recording_hash: str | None = None,
        modality: str | None = None,
        worker_id: str | None = None,
        key: str | None = None,
        path: Path | None = None,
        size: int | None = None,
    ) -> None:
        # Monotonic and within the total, whatever the engine's running counter says
        # (a restarted object can count some bytes twice).
        total = self.bytes_total
        capped = bytes_done if total is None else min(bytes_done, total)
        self.bytes_done = max(self.bytes_done, capped)
        if not self.wants(phase):
            return
        event = DownloadProgress(
            phase,
            recording_hash,
            modality,
            worker_id,
            key,
            self.bytes_done,
            total,
            self.elapsed(),
            retries,
            path,
            size,
        )
        level = logging.DEBUG if phase in _PER_FILE else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(level, _message(event), extra=asdict(event))
        if self._callback is not None:
            try:
                self._callback(event)
            except Exception as exc:  # KeyboardInterrupt/SystemExit tear the download down
                error = f"{type(exc).__name__}: {exc}"
                extra = asdict(event) | {"callback_error": error}
                logger.warning("progress callback raised on %s: %s", phase, error, extra=extra)


def _message(e: DownloadProgress) -> str:
    where = "/".join(
        x for x in (e.recording_hash and e.recording_hash[:12], e.modality, e.worker_id) if x
    )
    total = "?" if e.bytes_total is None else f"{e.bytes_total:,}"
    subject = e.key or where
    return f"{e.phase} {subject} {e.bytes_done:,}/{total} bytes {e.elapsed_s:.2f}s".replace(
        "  ", " "
    )
