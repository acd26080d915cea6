"""``stream()``: a ``WindowStream`` of fixed windows over each recording, fetched ahead
of the consumer. Windows are laid out up front (so ``len()`` is known); each window's
byte ranges (Zarr chunks, Parquet row groups) are started through the engine ``prefetch``
windows ahead, an object shared by neighbouring windows is fetched once and dropped after
the last window that needs it, so memory stays bounded by the engine's
``max_inflight_bytes`` plus the windows held, whatever the recording's length.
``close()``, leaving a ``with`` block or ``break`` cancels what is in flight."""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import numpy as np

from ursa.catalog import QueryResult
from ursa.delivery.assets import Asset, ParquetAsset, Readers, ZarrAsset, open_asset
from ursa.delivery.extra import require_data_extra
from ursa.delivery.materialize import check_concurrency
from ursa.delivery.results import Window
from ursa.delivery.select import by_recording, select_rows
from ursa.delivery.timeaxis import Span, TimeLike, check_order, resolve
from ursa.profiles import Profile
from ursa.ranges import ByteRange, cancel_all
from ursa.retry import RetryPolicy

# Window edges are rounded to the nanosecond, so 0.1 * 3 is 0.3 and not 0.30000000000000004.
_EDGE_DIGITS = 9
_EPS = 1e-9


@dataclass
class _Planned:
    """One window: where it is and what it fetches."""

    recording: int
    index: int
    start: float
    stop: float
    fetch: list[tuple[Asset, object, ByteRange]] = field(default_factory=list)
    jobs: list[tuple[Any, list[tuple[Asset, object, ByteRange]]]] = field(default_factory=list)


class WindowStream:
    """Windows of ``window`` seconds every ``stride`` (default ``window``) over each
    recording of the target, in target order; iterate it once."""

    def __init__(
        self,
        profile: Profile,
        target: QueryResult | Iterable[QueryResult],
        *,
        window: float,
        stride: float | None = None,
        start: TimeLike | None = None,
        stop: TimeLike | None = None,
        modalities: str | Sequence[str] | None = None,
        drop_last: bool = True,
        prefetch: int = 2,
        max_inflight_bytes: int = 256 << 20,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        require_data_extra()
        self.window = _positive_seconds(window, "window")
        self.stride = self.window if stride is None else _positive_seconds(stride, "stride")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
            raise ValueError(f"prefetch must be a whole number of windows >= 0, got {prefetch!r}")
        if (
            isinstance(max_inflight_bytes, bool)
            or not isinstance(max_inflight_bytes, int)
            or max_inflight_bytes < 1
        ):
            raise ValueError(
                f"max_inflight_bytes must be a positive number of bytes, got {max_inflight_bytes!r}"
            )
        check_concurrency(max_concurrency)
        check_order(start, stop)
        rows = select_rows(target, modalities)
        groups = by_recording(rows)
        spans = {h: resolve(start, stop, g[0].started_at) for h, g in groups.items()}
        self.prefetch = prefetch
        self._readers = Readers(
            profile, max_concurrency, retry, max_inflight_bytes, share_batch=False
        )
        self._recordings: list[tuple[str, list[Asset]]] = []
        self._windows: list[_Planned] = []
        for rhash, group in groups.items():
            assets = [open_asset(row, self._readers) for row in group]
            self._recordings.append((rhash, assets))
            lo, hi = _extent(spans[rhash], assets)
            for k, (s, e) in enumerate(_layout(lo, hi, self.window, self.stride, drop_last)):
                self._windows.append(_Planned(len(self._recordings) - 1, k, s, e))
        self._planned = 0  # windows whose fetch is planned
        self._queue: deque[_Planned] = deque()
        self._claimed: dict[tuple[int, object], int] = {}  # (asset id, part) -> last window
        self._position = 0
        self._closed = False
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._windows)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"at {self._position}"
        return f"WindowStream({len(self)} windows of {self.window:g} s, {state})"

    @property
    def bytes_fetched(self) -> int:
        """Bytes received from the store so far (engine reads)."""
        return self._readers.bytes_fetched

    @property
    def retries(self) -> int:
        return self._readers.retries

    def __iter__(self) -> Iterator[Window]:
        if os.getpid() != self._pid:
            # Its engine readers live in the process that made it (a forked child has
            # none of their threads): say so rather than hang.
            raise RuntimeError(
                "a WindowStream belongs to the process that made it; call stream() in "
                "each worker process (e.g. in IterableDataset.__iter__)"
            )
        try:
            while not self._closed and self._position < len(self._windows):
                yield self._next_window()
        finally:
            self.close()

    def __enter__(self) -> WindowStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel in-flight fetches and drop every held byte. Idempotent."""
        if self._closed:
            return
        self._closed = True
        cancel_all(job for planned in self._queue for job, _ in planned.jobs)
        self._queue.clear()
        for _, assets in self._recordings:
            for asset in assets:
                asset.release()
                for _, part in [k for k in self._claimed if k[0] == id(asset)]:
                    _drop(asset, part)
        self._claimed.clear()

    def _top_up(self) -> None:
        """Start fetching windows until ``prefetch`` are ahead of the one consumed next."""
        while (
            self._planned < len(self._windows) and self._planned <= self._position + self.prefetch
        ):
            planned = self._windows[self._planned]
            self._plan(planned, self._planned)
            by_reader: dict[int, tuple[Any, list[tuple[Asset, object, ByteRange]]]] = {}
            for item in planned.fetch:
                reader = item[0].reader
                assert reader is not None
                by_reader.setdefault(id(reader), (reader, []))[1].append(item)
            planned.jobs = [
                (reader.start([r for _, _, r in items]), items)
                for reader, items in by_reader.values()
            ]
            self._queue.append(planned)
            self._planned += 1

    def _plan(self, planned: _Planned, number: int) -> None:
        _, assets = self._recordings[planned.recording]
        for asset in assets:
            if isinstance(asset, ZarrAsset):
                samples = round(self.window * asset.signal.rate)
                needs = asset.window_needs(planned.start, samples)
            elif isinstance(asset, ParquetAsset):
                needs = asset.needs(Span(planned.start, planned.stop))
            else:
                continue
            for part, r in needs.items():
                key = (id(asset), part)
                if key not in self._claimed:
                    planned.fetch.append((asset, part, r))
                self._claimed[key] = number

    def _next_window(self) -> Window:
        self._top_up()
        planned = self._queue.popleft()
        number = self._position
        for job, items in planned.jobs:
            for (asset, part, r), data in zip(items, job.result(), strict=True):
                asset.hold(part, r, data)  # type: ignore[attr-defined]
        rhash, assets = self._recordings[planned.recording]
        entries: dict[str, Any] = {}
        is_pad: dict[str, np.ndarray] = {}
        span = Span(planned.start, planned.stop)
        for asset in assets:
            if isinstance(asset, ZarrAsset):
                samples = round(self.window * asset.signal.rate)
                entries[asset.key], is_pad[asset.key] = asset.window(planned.start, samples)
            else:
                entries[asset.key] = asset.clip(span)
                is_pad[asset.key] = np.zeros(_length(entries[asset.key]), dtype=bool)
        for key in [k for k, last in self._claimed.items() if last <= number]:
            asset = next(a for a in assets if id(a) == key[0])
            _drop(asset, key[1])
            del self._claimed[key]
        self._position += 1
        self._top_up()  # keep fetching while the caller works on this window
        return Window(rhash, planned.index, planned.start, planned.stop, entries, is_pad)


def _drop(asset: Asset, part: object) -> None:
    drop = getattr(asset, "drop", None)
    if drop is not None:
        drop(part)


def _length(entry: Any) -> int:
    return int(entry.num_rows) if hasattr(entry, "num_rows") else len(entry)


def _positive_seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
    return float(value)


def _extent(span: Span, assets: list[Asset]) -> tuple[float, float]:
    """Where a recording's windows run: the clip, its open sides taken from the assets'
    own spans (never from ``duration_s``)."""
    bounds = [b for a in assets if (b := a.bounds()) is not None]
    lo = span.start if span.start is not None else min((b[0] for b in bounds), default=0.0)
    hi = span.stop if span.stop is not None else max((b[1] for b in bounds), default=lo)
    return lo, hi


def _layout(
    lo: float, hi: float, window: float, stride: float, drop_last: bool
) -> list[tuple[float, float]]:
    """Window edges: full windows from ``lo`` while they fit before ``hi``; with
    ``drop_last=False`` one more, partial window when the full ones leave data uncovered."""
    fits = hi - lo >= window - _EPS
    full = math.floor((hi - lo - window) / stride + _EPS) + 1 if fits else 0
    count = full
    covered = lo + (full - 1) * stride + window if full else lo
    if not drop_last and covered < hi - _EPS:
        count += 1
    edges = []
    for k in range(count):
        s = round(lo + k * stride, _EDGE_DIGITS)
        edges.append((s, round(s + window, _EDGE_DIGITS)))
    return edges
