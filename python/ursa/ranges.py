"""Reading byte ranges of objects in place, through the engine (``read.rs``): what the
delivery verbs decode from. Every GET is pinned to the ETag the caller listed, nearby
ranges of one object share a GET, faults are retried by the engine's one retry owner, and
a whole object is checked against the store's checksum as a download would be.

``RangeReader.start`` runs a read ahead while the caller works; ``max_inflight_bytes``
bounds the bytes fetched but not yet taken, across every read of one reader.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass

from ursa import _core
from ursa.errors import raise_from_core
from ursa.retry import RetryPolicy

_POLL_S = 0.1  # how often a blocking wait wakes to let Python see Ctrl+C


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, stop)`` of object ``key``, listed with ``size`` bytes and ``etag``
    (which pins the GET: an object changed since it was listed is an error, never mixed
    bytes)."""

    key: str
    size: int
    etag: str | None
    start: int
    stop: int

    @classmethod
    def whole(cls, key: str, size: int, etag: str | None) -> ByteRange:
        return cls(key, size, etag, 0, size)


class PendingRead:
    """A read on its way: ``result()`` waits for it (Ctrl+C cancels it), ``cancel()``
    stops its requests."""

    def __init__(self, handle: _core.ReadHandle) -> None:
        self._handle = handle

    def done(self) -> bool:
        return self._handle.done()

    def cancel(self) -> None:
        self._handle.cancel()

    def result(self) -> list[bytes]:
        """Each range's bytes, in request order. Can be taken once; after ``cancel()``
        it raises ``concurrent.futures.CancelledError``."""
        try:
            while (out := self._handle.wait(_POLL_S)) is None:
                pass
        except _core.CoreError as exc:
            if exc.args[0] == "cancelled":
                raise CancelledError("the read was cancelled") from None
            raise_from_core(exc)
        except BaseException:
            self._handle.cancel()
            raise
        return out


def cancel_all(reads: Iterable[PendingRead | None]) -> None:
    """Cancel ``reads`` (given in the order they were started), the latest first: a
    cancelled read's request slots go to reads still waiting for them, mostly later ones,
    which should be cancelled already rather than send requests before their turn."""
    for read in reversed(list(reads)):
        if read is not None:
            read.cancel()


class RangeReader:
    """Ranged reads of one store (``ursa.stores.locate(...).store``), sharing one HTTP
    connection pool, one limit on requests in flight and one byte budget."""

    def __init__(
        self,
        store: _core.Store,
        *,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
        max_inflight_bytes: int = 256 << 20,
        part_size: int | None = None,
        coalesce_gap: int | None = None,
    ) -> None:
        concurrency = _core.DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency
        for name, value in (
            ("max_concurrency", concurrency),
            ("max_inflight_bytes", max_inflight_bytes),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._reader = _core.RangeReader(
            store,
            max_concurrency=concurrency,
            part_size=_core.DEFAULT_READ_PART_SIZE if part_size is None else part_size,
            coalesce_gap=_core.DEFAULT_COALESCE_GAP if coalesce_gap is None else coalesce_gap,
            max_inflight_bytes=max_inflight_bytes,
            retry=(retry or RetryPolicy()).as_tuple(),
        )

    def __repr__(self) -> str:
        return f"RangeReader(bytes_fetched={self.bytes_fetched})"

    def start(self, ranges: Sequence[ByteRange]) -> PendingRead:
        """Start fetching ``ranges`` and return at once. A range outside its object is a
        ``ValueError`` here, before any byte moves."""
        requests = [(r.key, r.size, r.etag, r.start, r.stop) for r in ranges]
        try:
            return PendingRead(self._reader.start(requests))
        except _core.CoreError as exc:
            raise_from_core(exc)

    def read(self, ranges: Sequence[ByteRange]) -> list[bytes]:
        """Each range's bytes, in order (blocking; Ctrl+C cancels)."""
        return self.start(ranges).result()

    def list(self, prefix: str) -> list[tuple[str, int, str | None]]:
        """``(key, size, etag)`` of every object under a ``/``-terminated key prefix, in
        key byte order."""
        try:
            return self._reader.list(prefix)
        except _core.CoreError as exc:
            raise_from_core(exc)

    def head(self, key: str) -> tuple[int, str | None]:
        """``(size, etag)`` of one object."""
        try:
            return self._reader.head(key)
        except _core.CoreError as exc:
            raise_from_core(exc)

    @property
    def bytes_fetched(self) -> int:
        """Bytes received from the store so far (retried bytes count again)."""
        return self._reader.bytes_fetched()

    @property
    def retries(self) -> int:
        return self._reader.retries()
