"""A read-only zarr v3 ``Store`` over the engine's ranged reads. The objects under the
asset prefix are listed once (key, size, ETag); a caller that knows which chunks a clip
needs fetches them in one batch (``ranges_for`` + ``fill``) so zarr's own reads are served
from memory, and anything else zarr asks for is one pinned ranged GET."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from zarr.abc.store import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    Store,
    SuffixByteRequest,
)
from zarr.core.buffer import Buffer, BufferPrototype

from ursa.ranges import ByteRange, RangeReader

ObjectInfo = tuple[int, str | None]  # (size, etag)


class RangeStore(Store):
    """The zarr store rooted at ``prefix_key`` (the asset's key, without the trailing
    ``/``). ``objects`` maps keys relative to it to their size and ETag."""

    supports_writes = False
    supports_deletes = False
    supports_listing = True

    def __init__(self, reader: RangeReader, prefix_key: str, objects: dict[str, ObjectInfo]):
        super().__init__(read_only=True)
        self._reader = reader
        self._prefix = prefix_key.rstrip("/") + "/"
        self._objects = objects
        self._held: dict[str, bytes] = {}

    @classmethod
    def listing(cls, reader: RangeReader, prefix_key: str) -> RangeStore:
        prefix = prefix_key.rstrip("/") + "/"
        objects = {key[len(prefix) :]: (size, etag) for key, size, etag in reader.list(prefix)}
        return cls(reader, prefix_key, objects)

    def __repr__(self) -> str:
        return f"RangeStore({self._prefix!r}, {len(self._objects)} objects)"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RangeStore)
            and other._reader is self._reader
            and other._prefix == self._prefix
        )

    def __hash__(self) -> int:
        return hash((id(self._reader), self._prefix))

    # Batches fetched ahead of zarr's reads.

    def ranges_for(self, keys: Iterable[str]) -> list[ByteRange]:
        """Whole-object ranges for those ``keys`` that exist and are not held yet (a chunk
        never written is zarr's fill value: nothing to fetch)."""
        out = []
        for key in keys:
            info = self._objects.get(key)
            if info is not None and key not in self._held:
                size, etag = info
                out.append(ByteRange(self._prefix + key, size, etag, 0, size))
        return out

    def range_of(self, key: str) -> ByteRange | None:
        """The whole-object range of ``key`` (None: no such object)."""
        info = self._objects.get(key)
        if info is None:
            return None
        return ByteRange(self._prefix + key, info[0], info[1], 0, info[0])

    def fill(self, ranges: Iterable[ByteRange], data: Iterable[bytes]) -> None:
        """Hold fetched objects until ``drop``."""
        for r, body in zip(ranges, data, strict=True):
            self._held[r.key[len(self._prefix) :]] = body

    def drop(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._held.pop(key, None)

    def size_of(self, key: str) -> int:
        info = self._objects.get(key)
        return 0 if info is None else info[0]

    @property
    def held_bytes(self) -> int:
        """Bytes held for chunks (the small metadata documents are kept and not counted)."""
        return sum(len(b) for k, b in self._held.items() if not k.endswith("zarr.json"))

    # The zarr Store interface.

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        info = self._objects.get(key)
        if info is None:
            return None
        size, etag = info
        start, stop = _bounds(byte_range, size)
        whole = self._held.get(key)
        if whole is None:
            r = ByteRange(self._prefix + key, size, etag, start, stop)
            (body,) = await asyncio.to_thread(self._reader.read, [r])
        else:
            body = whole[start:stop]
        buffer: Buffer = prototype.buffer.from_bytes(body)
        return buffer

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def exists(self, key: str) -> bool:
        return key in self._objects

    async def set(self, key: str, value: Buffer) -> None:
        raise PermissionError("this store is read-only")

    async def delete(self, key: str) -> None:
        raise PermissionError("this store is read-only")

    async def list(self) -> AsyncIterator[str]:
        for key in self._objects:
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        for key in self._objects:
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        base = prefix.rstrip("/") + "/" if prefix else ""
        seen: set[str] = set()
        for key in self._objects:
            if key.startswith(base):
                child = key[len(base) :].split("/", 1)[0]
                if child not in seen:
                    seen.add(child)
                    yield child


def _bounds(byte_range: ByteRequest | None, size: int) -> tuple[int, int]:
    if byte_range is None:
        return 0, size
    if isinstance(byte_range, RangeByteRequest):
        return min(byte_range.start, size), min(byte_range.end, size)
    if isinstance(byte_range, OffsetByteRequest):
        return min(byte_range.offset, size), size
    if isinstance(byte_range, SuffixByteRequest):
        return max(0, size - byte_range.suffix), size
    raise TypeError(f"unexpected byte range {byte_range!r}")
