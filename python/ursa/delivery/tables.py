"""Tables (SPEC §9): rows with ``start <= timestamp_s < stop``. Lance datasets are read
by pylance with the profile's storage options and the filter pushed down; a Parquet file
is read through a ``RangeFile``, only the row groups whose ``timestamp_s`` statistics
overlap the clip, then filtered exactly."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from ursa.delivery.fileobj import RangeFile
from ursa.delivery.timeaxis import Span
from ursa.profiles import Profile
from ursa.stores import lance_options

TIME = "timestamp_s"


def time_filter(span: Span) -> str | None:
    """The Lance SQL filter of a span (floats are finite: checked earlier)."""
    parts = []
    if span.start is not None:
        parts.append(f"{TIME} >= {float(span.start)!r}")
    if span.stop is not None:
        parts.append(f"{TIME} < {float(span.stop)!r}")
    return " AND ".join(parts) or None


def exact(table: Any, span: Span) -> Any:
    """Rows of ``table`` whose own time is in ``span``."""
    import pyarrow.compute as pc

    mask = None
    column = table.column(TIME)
    if span.start is not None:
        mask = pc.greater_equal(column, span.start)
    if span.stop is not None:
        below = pc.less(column, span.stop)
        mask = below if mask is None else pc.and_(mask, below)
    return table if mask is None else table.filter(mask)


def open_lance(profile: Profile, uri: str, label: str) -> Any:
    """The Lance dataset at ``uri`` (``s3://`` with the credentials of its bucket's role,
    or ``file://``), opened by pylance."""
    import lance

    role = "assets"
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        role = profile.bucket_role(parts.netloc) or role
        path = uri
    else:
        path = unquote(parts.path) if parts.scheme == "file" else uri
    try:
        return lance.dataset(path, storage_options=lance_options(profile, uri, role))
    except (ValueError, OSError) as exc:
        reason = str(exc).split(",")[0]
        raise ValueError(f"{label}: cannot open the Lance dataset at {uri}: {reason}") from None


class LanceTable:
    """A Lance dataset in the assets store, opened once."""

    def __init__(self, profile: Profile, uri: str, label: str) -> None:
        self.label = label
        self.dataset = open_lance(profile, uri, label)
        if TIME not in self.dataset.schema.names:
            raise ValueError(f"{label}: the Lance dataset has no {TIME!r} column")

    def bounds(self) -> tuple[float, float] | None:
        """The first and last ``timestamp_s`` (None when the table is empty)."""
        times = self.dataset.to_table(columns=[TIME]).column(TIME)
        if len(times) == 0:
            return None
        import pyarrow.compute as pc

        lo, hi = pc.min_max(times).values()
        return float(lo.as_py()), float(hi.as_py())

    def read(self, span: Span) -> Any:
        return self.dataset.to_table(filter=time_filter(span))


_FOOTER_GUESS = 16 << 10


def _footer(file: RangeFile, label: str) -> Any:
    """The file's metadata, read with one small ranged GET of its tail (two when the
    footer is larger than the guess) rather than pyarrow's 64 KiB."""
    import struct

    import pyarrow as pa
    import pyarrow.parquet as pq

    size = file.size()
    tail_len = min(size, _FOOTER_GUESS)
    file.seek(size - tail_len)
    tail = file.read(tail_len)
    if len(tail) < 12 or tail[-4:] != b"PAR1":
        raise ValueError(f"{label}: not a Parquet file")
    (meta_len,) = struct.unpack("<I", tail[-8:-4])
    if meta_len + 8 > len(tail):
        if meta_len + 12 > size:
            raise ValueError(f"{label}: the Parquet footer is corrupt")
        file.seek(size - meta_len - 8)
        tail = file.read(meta_len + 8)
    footer = tail[-(meta_len + 8) :]
    file.seek(0)
    return pq.read_metadata(pa.BufferReader(b"PAR1" + footer))


class ParquetTable:
    """A Parquet file in the store, its footer read once through a ``RangeFile``."""

    def __init__(self, file: RangeFile, label: str) -> None:
        import pyarrow.parquet as pq

        self.label = label
        self.file = file
        self.parquet = pq.ParquetFile(file, metadata=_footer(file, label))
        names = self.parquet.schema_arrow.names
        if TIME not in names:
            raise ValueError(f"{label}: the Parquet file has no {TIME!r} column")
        self._time_column = names.index(TIME)

    @property
    def num_row_groups(self) -> int:
        return int(self.parquet.metadata.num_row_groups)

    def group_bounds(self, i: int) -> tuple[float, float] | None:
        """``timestamp_s`` min and max of row group ``i`` (None: no statistics)."""
        stats = self.parquet.metadata.row_group(i).column(self._time_column).statistics
        if stats is None or not stats.has_min_max:
            return None
        return float(stats.min), float(stats.max)

    def groups_for(self, span: Span) -> list[int]:
        """Row groups that may hold rows in ``span``."""
        out = []
        for i in range(self.num_row_groups):
            if self.parquet.metadata.row_group(i).num_rows == 0:
                continue
            b = self.group_bounds(i)
            if b is None or span.overlaps(*b):
                out.append(i)
        return out

    def group_extent(self, i: int) -> tuple[int, int]:
        """The byte range ``[start, stop)`` holding row group ``i``'s column chunks."""
        group = self.parquet.metadata.row_group(i)
        starts, stops = [], []
        for c in range(group.num_columns):
            col = group.column(c)
            first = col.data_page_offset
            if col.has_dictionary_page and col.dictionary_page_offset is not None:
                first = min(first, col.dictionary_page_offset)
            starts.append(first)
            stops.append(first + col.total_compressed_size)
        return min(starts), max(stops)

    def bytes_for(self, span: Span) -> int:
        return sum(b - a for a, b in (self.group_extent(i) for i in self.groups_for(span)))

    def bounds(self) -> tuple[float, float] | None:
        found = [b for i in range(self.num_row_groups) if (b := self.group_bounds(i))]
        if not found:
            return None
        return min(b[0] for b in found), max(b[1] for b in found)

    def read(self, span: Span) -> Any:
        groups = self.groups_for(span)
        if not groups:
            return self.parquet.schema_arrow.empty_table()
        return exact(self.parquet.read_row_groups(groups), span)
