"""Zarr signals (SPEC §9): one 2-D array ``data`` (channel, sample) at
``sampling_rate_hz``, sample ``i`` at ``i / fs`` seconds. A clip is read through zarr
over a ``RangeStore`` after the chunks it overlaps were fetched in one batch, and comes
back as an ``xarray.Dataset`` (variable ``data``, dims ``(channel, time)``, coord
``time`` in float64 seconds, the asset's attributes kept)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ursa.delivery.timeaxis import Span, sample_range
from ursa.delivery.zarrstore import RangeStore
from ursa.ranges import RangeReader

_METADATA = ("zarr.json", "data/zarr.json")


class SignalAsset:
    """An opened Zarr signal: its shape, rate and chunking, and where its chunks are."""

    def __init__(self, reader: RangeReader, asset_key: str, label: str) -> None:
        import zarr

        self.label = label
        self.store = RangeStore.listing(reader, asset_key)
        if not self.store.size_of("zarr.json"):
            raise ValueError(f"{label}: no Zarr v3 store at {asset_key!r}")
        meta = self.store.ranges_for(_METADATA)
        self.store.fill(meta, reader.read(meta))
        group = zarr.open_group(store=self.store, mode="r", zarr_format=3)
        array = group.get("data")
        if not isinstance(array, zarr.Array) or array.ndim != 2:
            raise ValueError(f"{label}: the Zarr store has no 2-D array 'data'")
        self.array = array
        self.attrs: dict[str, Any] = dict(group.attrs) | dict(array.attrs)
        rate = self.attrs.get("sampling_rate_hz")
        if not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{label}: the Zarr store has no positive sampling_rate_hz")
        self.rate = float(rate)
        self.channels, self.count = (int(n) for n in array.shape)
        self._chunks = tuple(int(n) for n in array.chunks)

    @property
    def end_s(self) -> float:
        """Where the signal's span ends: one sample period after its last sample."""
        return self.count / self.rate

    def index_range(self, span: Span) -> tuple[int, int]:
        return sample_range(span, self.rate, self.count)

    def chunk_keys(self, i0: int, i1: int) -> list[str]:
        """The chunk objects that samples ``[i0, i1)`` live in, every channel."""
        if i1 <= i0:
            return []
        channel_chunks = -(-self.channels // self._chunks[0])
        first, last = i0 // self._chunks[1], (i1 - 1) // self._chunks[1]
        return [
            "data/" + self.array.metadata.encode_chunk_key((c, t))
            for t in range(first, last + 1)
            for c in range(channel_chunks)
        ]

    def bytes_for(self, i0: int, i1: int) -> int:
        return sum(self.store.size_of(k) for k in self.chunk_keys(i0, i1))

    def values(self, i0: int, i1: int) -> np.ndarray:
        """Samples ``[i0, i1)`` of every channel (through zarr; held chunks first)."""
        if i1 <= i0:
            return np.empty((self.channels, 0), dtype=self.array.dtype)
        return np.asarray(self.array[:, i0:i1])

    def dataset(self, i0: int, values: np.ndarray) -> Any:
        """The ``xarray.Dataset`` of ``values``, whose first sample is sample ``i0``."""
        import xarray as xr

        times = np.arange(i0, i0 + values.shape[1], dtype=np.int64) / self.rate
        return xr.Dataset(
            {"data": (("channel", "time"), values)},
            coords={"time": ("time", times.astype(np.float64))},
            attrs=dict(self.attrs) | {"sampling_rate_hz": self.rate},
        )
