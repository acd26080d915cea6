"""The catalog: one Lance table, one row per (recording_hash, modality, worker_id).

``ModalityRow`` is a row; ``QueryResult`` an immutable, ordered sequence of them.
``worker_id == ""`` is the single-worker sentinel: a modality recorded by one worker.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any, Literal, overload

import pyarrow as pa

STATUSES = ("raw", "ingesting", "ingested", "failed")
ASSET_FORMATS = ("zarr", "lance", "mp4", "parquet")
_HASH = re.compile(r"[0-9a-f]{64}")
_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")

SCHEMA = pa.schema(
    [
        pa.field("recording_hash", pa.string(), nullable=False),
        pa.field("modality", pa.string(), nullable=False),
        pa.field("worker_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("raw_storage_uri", pa.string(), nullable=False),
        pa.field("storage_uri", pa.string()),
        pa.field("asset_format", pa.string()),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("duration_s", pa.float64()),
    ]
)


def check_recording_hash(value: object) -> str:
    if not isinstance(value, str) or not _HASH.fullmatch(value):
        raise ValueError(f"recording_hash must be 64 lowercase hex characters, got {value!r}")
    return value


def check_token(what: str, value: str, *, allow_empty: bool = False) -> str:
    """A modality or worker id: it becomes a directory name, so it must be a plain token."""
    if value == "" and allow_empty:
        return value
    if not _TOKEN.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{what} must match [A-Za-z0-9_.-]+ (and not be '.' or '..'), got {value!r}"
        )
    return value


@dataclass(frozen=True)
class ModalityRow:
    """One catalog row (columns as in the catalog schema, in order)."""

    recording_hash: str
    modality: str
    worker_id: str
    status: str
    raw_storage_uri: str
    storage_uri: str | None = None
    asset_format: str | None = None
    started_at: dt.datetime | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        check_recording_hash(self.recording_hash)
        check_token("modality", self.modality)
        check_token("worker_id", self.worker_id, allow_empty=True)
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if not self.raw_storage_uri.endswith("/"):
            raise ValueError(f"raw_storage_uri must end in '/', got {self.raw_storage_uri!r}")
        ingested = self.status == "ingested"
        if ingested != (self.storage_uri is not None) or ingested != (
            self.asset_format is not None
        ):
            raise ValueError(
                "storage_uri and asset_format are set exactly when status is 'ingested'"
            )
        if self.asset_format is not None and self.asset_format not in ASSET_FORMATS:
            raise ValueError(
                f"asset_format must be one of {ASSET_FORMATS}, got {self.asset_format!r}"
            )

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.recording_hash, self.modality, self.worker_id)


_COLUMNS = [f.name for f in fields(ModalityRow)]


def rows_to_arrow(rows: Iterable[ModalityRow]) -> pa.Table:
    columns = list(zip(*(astuple(r) for r in rows), strict=True)) or [()] * len(_COLUMNS)
    return pa.table(
        {
            name: pa.array(col, type=SCHEMA.field(name).type)
            for name, col in zip(_COLUMNS, columns, strict=True)
        },
        schema=SCHEMA,
    )


def rows_from_arrow(table: pa.Table) -> list[ModalityRow]:
    records = table.select(_COLUMNS).to_pylist()
    return [ModalityRow(**record) for record in records]


class QueryResult(Sequence[ModalityRow]):
    """Catalog rows in (recording_hash, modality, worker_id) order. Immutable."""

    __slots__ = ("_rows",)

    def __init__(self, rows: Iterable[ModalityRow] = ()) -> None:
        ordered = tuple(sorted(rows, key=lambda r: r.sort_key))
        object.__setattr__(self, "_rows", ordered)

    _rows: tuple[ModalityRow, ...]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("QueryResult is immutable")

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[ModalityRow]:
        return iter(self._rows)

    @overload
    def __getitem__(self, index: int) -> ModalityRow: ...
    @overload
    def __getitem__(self, index: slice) -> QueryResult: ...
    def __getitem__(self, index: int | slice) -> ModalityRow | QueryResult:
        if isinstance(index, slice):
            return QueryResult(self._rows[index])
        return self._rows[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueryResult) and self._rows == other._rows

    def __hash__(self) -> int:
        return hash(self._rows)

    @property
    def recording_hashes(self) -> tuple[str, ...]:
        """The distinct recordings, in order."""
        return tuple(dict.fromkeys(r.recording_hash for r in self._rows))

    def to_arrow(self) -> pa.Table:
        return rows_to_arrow(self._rows)

    def __repr__(self) -> str:
        if not self._rows:
            return "QueryResult([])"
        lines = [
            f"  {r.recording_hash[:12]}… {r.modality}/{r.worker_id or '-'} {r.status}"
            + (f" {r.asset_format}" if r.asset_format else "")
            for r in self._rows[:20]
        ]
        more = [f"  … {len(self._rows) - 20} more"] if len(self._rows) > 20 else []
        n = len(self._rows)
        return f"QueryResult({n} row{'s' * (n != 1)}:\n" + "\n".join(lines + more) + "\n)"


StatusFilter = Literal["ingested", "raw", "ingesting", "failed", "all"]


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _in(column: str, values: str | Sequence[str]) -> str:
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        return "false"
    return f"{column} IN ({', '.join(_sql_str(v) for v in items)})"


def build_filter(
    recording_hash: str | Sequence[str] | None,
    modality: str | Sequence[str] | None,
    worker_id: str | None,
    status: str,
    where: str | None,
) -> str | None:
    """The Lance SQL filter for a query; every value is validated or quoted."""
    if status not in (*STATUSES, "all"):
        raise ValueError(f"status must be one of {(*STATUSES, 'all')}, got {status!r}")
    clauses = []
    if recording_hash is not None:
        if isinstance(recording_hash, str) or not isinstance(recording_hash, Iterable):
            hashes = [recording_hash]
        else:
            hashes = list(recording_hash)
        for h in hashes:
            check_recording_hash(h)
        clauses.append(_in("recording_hash", hashes))
    if modality is not None:
        clauses.append(_in("modality", modality))
    if worker_id is not None:
        clauses.append(f"worker_id = {_sql_str(worker_id)}")
    if status != "all":
        clauses.append(f"status = {_sql_str(status)}")
    if where:
        clauses.append(f"({where})")
    return " AND ".join(clauses) or None


def query_dataset(dataset: Any, filter_sql: str | None) -> QueryResult:
    try:
        table = dataset.to_table(columns=_COLUMNS, filter=filter_sql)
    except ValueError as exc:  # a bad where= (a filter ursa builds itself is always valid)
        message = f"the catalog refused the filter {filter_sql!r}: {lance_reason(exc)}"
        raise ValueError(message) from None
    return QueryResult(rows_from_arrow(table))


# Lance ends its messages with the Rust source line that raised them.
_SOURCE_LINE = re.compile(r",\s*/\S+\.rs:\d+:\d+")
_UNREACHABLE = ("error sending request", "connection refused", "dns error", "tcp connect")


def lance_reason(exc: BaseException) -> str:
    """A Lance error as one line for users: no library-internal source path, no
    ``LanceError(IO):`` wrapper, and a store that cannot be reached said plainly."""
    text = " ".join(str(exc).split())
    text = _SOURCE_LINE.sub("", text)
    text = re.sub(r"^LanceError\(\w+\):\s*", "", text)
    text = re.sub(r"^Invalid user input:\s*", "", text)
    if any(sign in text.lower() for sign in _UNREACHABLE):
        return f"the store cannot be reached (check the endpoint and the network): {text}"
    return text
