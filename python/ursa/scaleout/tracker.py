"""The driver's side of a sharded download: the shards' batches in, one call's
``DownloadProgress`` events out, with ``download()``'s phase grammar.

A shard may run more than once (its process lost, the task retried): counters are kept
per (shard, run) and a shard counts as the most any of its runs reached — a retried run
starts by counting what the lost one published (resume keeps it), so the sum never goes
down. A file or row reported by two runs is reported once. Rows are released in call
order, a later row's completions held until the rows before it are done, as in
``download()``.
"""

from __future__ import annotations

import time

from ursa.catalog import ModalityRow
from ursa.events import Emitter
from ursa.scaleout.shards import Batch, FileDone


class ShardTracker:
    """Aggregates batches and emits events on the calling thread (via ``emitter``)."""

    def __init__(
        self, rows: tuple[ModalityRow, ...], emitter: Emitter, progress_interval: float | None
    ) -> None:
        self.rows = rows
        self.emitter = emitter
        self.runs: dict[tuple[int, int], Batch] = {}  # (shard, run) → its latest counters
        self.held: list[list[FileDone]] = [[] for _ in rows]
        self.seen: set[tuple[int, str]] = set()
        self.done = [False] * len(rows)
        self.current = 0
        self.started = False
        self.interval = progress_interval
        self.next_tick = time.monotonic() + (progress_interval or 0)

    # --- counters -------------------------------------------------------------------------

    def bytes_done(self) -> int:
        best: dict[int, int] = {}
        for (shard, _), batch in self.runs.items():
            best[shard] = max(best.get(shard, 0), batch.bytes_done)
        return sum(best.values())

    def retries(self) -> int:
        return sum(batch.retries for batch in self.runs.values())

    # --- input ----------------------------------------------------------------------------

    def add(self, shard: int, run: int, batch: Batch) -> None:
        self.runs[(shard, run)] = batch
        for f in batch.files:
            if (f.position, f.key) not in self.seen:
                self.seen.add((f.position, f.key))
                self.held[f.position].append(f)
        for position in batch.rows_done:
            self.done[position] = True

    @property
    def finished(self) -> bool:
        return self.current == len(self.rows)

    # --- output ---------------------------------------------------------------------------

    def release(self) -> None:
        """Emit what is ready, in call order; then a ``progress`` event when one is due."""
        while self.current < len(self.rows):
            row = self.rows[self.current]
            if not self.started:
                self._emit("modality_start", row)
                self.started = True
            held, self.held[self.current] = self.held[self.current], []
            if self.emitter.wants("file_done"):
                for f in held:
                    self._emit("file_done", row, f)
            if not self.done[self.current]:
                break
            self._emit("modality_done", row)
            self.current += 1
            self.started = False
        if self.interval and time.monotonic() >= self.next_tick:
            self.next_tick = time.monotonic() + self.interval
            if not self.finished and self.emitter.wants("progress"):
                self._emit("progress", self.rows[self.current])

    def _emit(self, phase: str, row: ModalityRow, f: FileDone | None = None) -> None:
        self.emitter.emit(
            phase,  # type: ignore[arg-type]
            bytes_done=self.bytes_done(),
            retries=self.retries(),
            recording_hash=row.recording_hash,
            modality=row.modality,
            worker_id=row.worker_id,
            key=None if f is None else f.key,
            path=None if f is None else f.path,
            size=None if f is None else f.size,
        )
