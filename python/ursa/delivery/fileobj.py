"""A buffered, seekable, read-only file object over one object in the store, for PyAV and
pyarrow: each read that misses the buffer is one ranged GET (pinned to the object's ETag)
of at least the read-ahead, which doubles while reads are sequential and resets on a
jump, so a reader that wants a few ranges of a large object fetches little more."""

from __future__ import annotations

import io
from collections.abc import Iterable

from ursa.ranges import ByteRange, RangeReader

_MIN_READAHEAD = 16 << 10
_MAX_READAHEAD = 4 << 20
_RECENT = 4


class RangeFile(io.RawIOBase):
    """``read(n)`` returns bytes; ``seek``/``tell``; ``size()``. Segments handed over with
    ``prime`` (fetched ahead, e.g. by ``stream()``) are served without a request."""

    def __init__(self, reader: RangeReader, key: str, size: int, etag: str | None) -> None:
        super().__init__()
        self._reader = reader
        self.key = key
        self._size = size
        self._etag = etag
        self._pos = 0
        self._buf_start = 0
        self._buf = b""
        self._readahead = _MIN_READAHEAD
        self._primed: dict[int, bytes] = {}
        self.bytes_read = 0  # fetched from the store by this file object
        # The last few buffers: demuxers jump back (MP4: header at the end, samples at
        # the start) and should not fetch the same bytes twice.
        self._recent: list[tuple[int, bytes]] = []

    def __repr__(self) -> str:
        return f"RangeFile(key={self.key!r}, size={self._size})"

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence!r}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def prime(self, segments: Iterable[tuple[int, bytes]]) -> None:
        """Hold these ``(offset, bytes)`` segments; reads inside one are served from it."""
        for offset, data in sorted(segments, key=lambda s: s[0]):
            # Adjacent segments are joined: a reader may ask for bytes across two of them.
            before = next((o for o, d in self._primed.items() if o + len(d) == offset), None)
            if before is not None:
                self._primed[before] += data
            else:
                self._primed[offset] = data

    def unprime(self, offset: int | None = None) -> None:
        """Drop the segment at ``offset`` (every segment when None)."""
        if offset is None:
            self._primed.clear()
        else:
            self._primed.pop(offset, None)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        stop = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if stop <= self._pos:
            return b""
        data = self._slice(self._pos, stop)
        self._pos = stop
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def _slice(self, start: int, stop: int) -> bytes:
        buf_stop = self._buf_start + len(self._buf)
        if self._buf_start <= start and stop <= buf_stop:
            return self._buf[start - self._buf_start : stop - self._buf_start]
        for offset, data in [*self._primed.items(), *self._recent]:
            if offset <= start and stop <= offset + len(data):
                return data[start - offset : stop - offset]
        sequential = bool(self._buf) and start == buf_stop
        self._readahead = min(_MAX_READAHEAD, self._readahead * 2) if sequential else _MIN_READAHEAD
        fetch_stop = min(self._size, max(stop, start + self._readahead))
        if self._buf:
            self._recent = [(self._buf_start, self._buf), *self._recent][:_RECENT]
        (self._buf,) = self._reader.read(
            [ByteRange(self.key, self._size, self._etag, start, fetch_stop)]
        )
        self._buf_start = start
        self.bytes_read += len(self._buf)
        return self._buf[: stop - start]
