"""A processed asset opened for reading in place: one class per format behind one small
interface, so ``materialize`` and ``stream`` plan, fetch and decode every format alike.

``plan(span)`` names the byte ranges a clip needs (fetched in one batch by the caller,
ahead of decoding), ``take`` hands them over, ``clip(span)`` decodes, ``release`` drops
what was held."""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ursa import _core
from ursa.catalog import ModalityRow
from ursa.delivery.fileobj import RangeFile
from ursa.delivery.signals import SignalAsset
from ursa.delivery.tables import LanceTable, ParquetTable, open_lance
from ursa.delivery.timeaxis import Span
from ursa.delivery.video import FrameIndex, VideoClip
from ursa.profiles import Profile
from ursa.ranges import ByteRange, RangeReader
from ursa.retry import RetryPolicy
from ursa.stores import locate

FORMATS = ("zarr", "lance", "mp4", "parquet")


def entry_key(row: ModalityRow) -> str:
    """``"<modality>"`` or ``"<modality>/<worker_id>"``: the row's key in a result."""
    return f"{row.modality}/{row.worker_id}" if row.worker_id else row.modality


class Readers:
    """Engine readers per store, shared by every asset on it: one for the batches planned
    ahead (``batch=True``), one for reads on demand (metadata, a decoder's misses, video).
    Two, because a demand read made while decoding must never queue for byte budget
    behind batches that wait for that very decode to take them.

    Building a reader costs tens of milliseconds (its HTTP client), so readers are kept
    for the process and reused by later calls with the same store and options
    (``share_batch``: also the batch reader, for calls that take every batch before they
    return, as ``materialize`` does; a ``stream`` keeps its own, since its prefetched
    batches hold budget until its consumer takes them). Counts are this call's own."""

    def __init__(
        self,
        profile: Profile,
        max_concurrency: int | None,
        retry: RetryPolicy | None,
        max_inflight_bytes: int,
        *,
        share_batch: bool,
    ) -> None:
        self.profile = profile
        self._args = (max_concurrency, retry, max_inflight_bytes)
        self._share_batch = share_batch
        self._readers: dict[tuple[object, ...], tuple[RangeReader, int, int]] = {}

    def locate(self, uri: str, *, batch: bool = False) -> tuple[RangeReader, str]:
        loc = locate(self.profile, uri)
        slot = (loc.store, batch)
        held = self._readers.get(slot)
        if held is None:
            if batch and not self._share_batch:
                reader = _new_reader(loc.store, self._args)
            else:
                reader = _shared_reader(loc.store, batch, self._args)
            held = (reader, reader.bytes_fetched, reader.retries)
            self._readers[slot] = held
        return held[0], loc.key

    @property
    def bytes_fetched(self) -> int:
        return sum(r.bytes_fetched - base for r, base, _ in self._readers.values())

    @property
    def retries(self) -> int:
        return sum(r.retries - base for r, _, base in self._readers.values())


ReaderArgs = tuple[int | None, RetryPolicy | None, int]
_SHARED: OrderedDict[tuple[object, ...], RangeReader] = OrderedDict()
_SHARED_MAX = 8
_SHARED_LOCK = threading.Lock()


def _new_reader(store: _core.Store, args: ReaderArgs) -> RangeReader:
    concurrency, retry, budget = args
    return RangeReader(store, max_concurrency=concurrency, retry=retry, max_inflight_bytes=budget)


def _shared_reader(store: _core.Store, batch: bool, args: ReaderArgs) -> RangeReader:
    # The pid: a forked child (a DataLoader worker) must build its own, as the engine does.
    key = (os.getpid(), store, batch, args)
    with _SHARED_LOCK:
        reader = _SHARED.get(key)
        if reader is None:
            reader = _SHARED[key] = _new_reader(store, args)
            while len(_SHARED) > _SHARED_MAX:
                _SHARED.popitem(last=False)
        _SHARED.move_to_end(key)
        return reader


class Asset:
    """The interface; formats override what applies to them."""

    reader: RangeReader | None = None  # fetches what plan() names (None: nothing)

    def __init__(self, row: ModalityRow) -> None:
        self.row = row
        self.key = entry_key(row)
        self.label = f"{row.recording_hash[:12]}/{self.key}"

    def bounds(self) -> tuple[float, float] | None:
        """``[first, end)`` of the asset's own times (None: it holds nothing)."""
        raise NotImplementedError

    def plan(self, span: Span) -> list[ByteRange]:
        return []

    def plan_bytes(self, span: Span) -> int:
        return sum(r.stop - r.start for r in self.plan(span))

    def take(self, ranges: Sequence[ByteRange], data: Sequence[bytes]) -> None:
        """Receive the bytes ``plan`` named."""

    def clip(self, span: Span) -> Any:
        raise NotImplementedError

    def release(self) -> None:
        """Drop the bytes held for a clip."""


class ZarrAsset(Asset):
    def __init__(self, row: ModalityRow, readers: Readers) -> None:
        super().__init__(row)
        assert row.storage_uri is not None
        self.reader, key = readers.locate(row.storage_uri, batch=True)
        self.signal = SignalAsset(readers.locate(row.storage_uri)[0], key, self.label)
        self._held: list[str] = []

    def bounds(self) -> tuple[float, float] | None:
        return (0.0, self.signal.end_s) if self.signal.count else None

    def plan(self, span: Span) -> list[ByteRange]:
        return self.signal.store.ranges_for(self.signal.chunk_keys(*self.signal.index_range(span)))

    def take(self, ranges: Sequence[ByteRange], data: Sequence[bytes]) -> None:
        self.signal.store.fill(ranges, data)
        prefix = len(self.signal.store._prefix)
        self._held += [r.key[prefix:] for r in ranges]

    def clip(self, span: Span) -> Any:
        i0, i1 = self.signal.index_range(span)
        return self.signal.dataset(i0, self.signal.values(i0, i1))

    def window(self, start: float, samples: int) -> tuple[Any, np.ndarray]:
        """Exactly ``samples`` samples from the first at or after ``start``, padded past
        the signal's end (zeros; ``is_pad`` True there)."""
        i0, _ = self.signal.index_range(Span(start, None))
        i1 = min(self.signal.count, i0 + samples)
        values = self.signal.values(i0, i1)
        pad = samples - values.shape[1]
        is_pad = np.zeros(samples, dtype=bool)
        if pad:
            values = np.concatenate(
                [values, np.zeros((values.shape[0], pad), dtype=values.dtype)], axis=1
            )
            is_pad[samples - pad :] = True
        return self.signal.dataset(i0, values), is_pad

    def window_needs(self, start: float, samples: int) -> dict[object, ByteRange]:
        """The chunk objects a ``window`` of ``samples`` from ``start`` reads."""
        i0, _ = self.signal.index_range(Span(start, None))
        i1 = min(self.signal.count, i0 + samples)
        out: dict[object, ByteRange] = {}
        for key in self.signal.chunk_keys(i0, i1):
            r = self.signal.store.range_of(key)
            if r is not None:
                out[key] = r
        return out

    def hold(self, part: object, r: ByteRange, data: bytes) -> None:
        self.signal.store.fill([r], [data])

    def drop(self, part: object) -> None:
        self.signal.store.drop([str(part)])

    def release(self) -> None:
        self.signal.store.drop(self._held)
        self._held = []


class ParquetAsset(Asset):
    def __init__(self, row: ModalityRow, readers: Readers) -> None:
        super().__init__(row)
        assert row.storage_uri is not None
        self.reader, key = readers.locate(row.storage_uri, batch=True)
        demand, _ = readers.locate(row.storage_uri)
        size, etag = demand.head(key)
        self.file = RangeFile(demand, key, size, etag)
        self.table = ParquetTable(self.file, self.label)

    def bounds(self) -> tuple[float, float] | None:
        b = self.table.bounds()
        return None if b is None else (b[0], math.nextafter(b[1], math.inf))

    def plan(self, span: Span) -> list[ByteRange]:
        f = self.file
        return [
            ByteRange(f.key, f.size(), f._etag, *self.table.group_extent(i))
            for i in self.table.groups_for(span)
        ]

    def needs(self, span: Span) -> dict[object, ByteRange]:
        """The row groups (by byte offset) a clip reads."""
        return {r.start: r for r in self.plan(span)}

    def hold(self, part: object, r: ByteRange, data: bytes) -> None:
        self.file.prime([(r.start, data)])

    def drop(self, part: object) -> None:
        self.file.unprime(int(part))  # type: ignore[call-overload]

    def take(self, ranges: Sequence[ByteRange], data: Sequence[bytes]) -> None:
        self.file.prime((r.start, d) for r, d in zip(ranges, data, strict=True))

    def clip(self, span: Span) -> Any:
        return self.table.read(span)

    def release(self) -> None:
        self.file.unprime()


class LanceAsset(Asset):
    def __init__(self, row: ModalityRow, readers: Readers) -> None:
        super().__init__(row)
        assert row.storage_uri is not None
        self.table = LanceTable(readers.profile, row.storage_uri, self.label)
        reader, key = readers.locate(row.storage_uri)
        self._data_bytes = sum(size for _, size, _ in reader.list(key + "/data/"))
        self._bounds: tuple[float, float] | bool | None = False

    def bounds(self) -> tuple[float, float] | None:
        if self._bounds is False:
            b = self.table.bounds()
            self._bounds = None if b is None else (b[0], math.nextafter(b[1], math.inf))
        assert self._bounds is not True
        return self._bounds

    def plan_bytes(self, span: Span) -> int:
        # pylance reads the data files; their total is the most a clip can cost.
        return self._data_bytes

    def clip(self, span: Span) -> Any:
        return self.table.read(span)


class Mp4Asset(Asset):
    def __init__(self, row: ModalityRow, readers: Readers) -> None:
        super().__init__(row)
        assert row.storage_uri is not None
        self._demand, key = readers.locate(row.storage_uri)
        size, etag = self._demand.head(key)
        self._file_args = (key, size, etag)
        index_uri = row.storage_uri + ".lance"
        dataset = open_lance(readers.profile, index_uri, f"{self.label}: the frame index")
        self.index = FrameIndex(dataset.to_table(), self.label)

    def _open_file(self) -> RangeFile:
        return RangeFile(self._demand, *self._file_args)

    def bounds(self) -> tuple[float, float] | None:
        return (float(self.index.time_s[0]), self.index.end_s) if len(self.index) else None

    def plan_bytes(self, span: Span) -> int:
        # An estimate: the file's share of frames from the keyframe before the clip on.
        positions = self.index.positions(span)
        if not len(positions) or not len(self.index):
            return 0
        keys = np.flatnonzero(self.index.keyframe[: int(positions[0]) + 1])
        first = int(keys[-1]) if len(keys) else 0
        share = (int(positions[-1]) + 1 - first) / len(self.index)
        return math.ceil(self._file_args[1] * share)

    def clip(self, span: Span) -> VideoClip:
        return VideoClip(self._open_file, self.index, self.index.positions(span), self.label)


def open_asset(row: ModalityRow, readers: Readers) -> Asset:
    """Open an ingested row's asset (metadata only: no clip's bytes yet)."""
    fmt = row.asset_format
    if fmt == "zarr":
        return ZarrAsset(row, readers)
    if fmt == "parquet":
        return ParquetAsset(row, readers)
    if fmt == "lance":
        return LanceAsset(row, readers)
    if fmt == "mp4":
        return Mp4Asset(row, readers)
    raise ValueError(f"{row.recording_hash[:12]}/{entry_key(row)}: unknown asset_format {fmt!r}")
