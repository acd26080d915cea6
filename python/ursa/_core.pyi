"""Stubs for the Rust extension (see rust/src/python/)."""

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Literal, NoReturn, TypedDict, final

__all__ = [
    "DEFAULT_COALESCE_GAP",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_PART_SIZE",
    "DEFAULT_READ_PART_SIZE",
    "DEFAULT_RETRY",
    "CoreError",
    "DownloadHandle",
    "RangeReader",
    "ReadHandle",
    "Store",
    "clean_stale",
    "find_resumable",
    "find_stages",
    "host_name",
    "list_objects",
    "put_files",
    "start_download",
]

_Listed = tuple[str, str, int, str | None]

class _File(TypedDict):
    store: int
    key: str
    size: int
    etag: str | None
    dest: str
    asset: int | None
    adopt: str | None

class _Asset(TypedDict):
    dest: str
    adopt: str | None

DEFAULT_MAX_CONCURRENCY: int
DEFAULT_PART_SIZE: int
DEFAULT_READ_PART_SIZE: int
DEFAULT_RETRY: tuple[int, float, float, float]
DEFAULT_COALESCE_GAP: int

class CoreError(Exception):
    """args: (kind, message, key, attempts, cause); cause is (kind, message, key, attempts)."""

@final
class Store:
    def __new__(cls, spec: dict[str, object]) -> Store: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    def __copy__(self) -> Store: ...
    def __deepcopy__(self, memo: object, /) -> Store: ...
    def __reduce__(self) -> NoReturn: ...

def list_objects(
    handles: list[Store], requests: list[tuple[int, str, bool]]
) -> list[list[_Listed]]: ...
def put_files(
    store: Store,
    items: Sequence[tuple[str | PathLike[str], str]],
    concurrency: int,
    checksum: bool = True,
) -> None: ...
def clean_stale(dirs: list[str], keep: list[str] = ...) -> int: ...
def find_resumable(dirs: list[str]) -> list[tuple[Path, Path, str | None, int, int]]: ...
def find_stages(dirs: list[str]) -> list[tuple[Path, Path]]: ...
def host_name() -> str: ...
def start_download(
    handles: list[Store],
    files: Sequence[_File],
    assets: list[_Asset],
    *,
    max_concurrency: int,
    part_size: int,
    overwrite: bool,
    retry: tuple[int, float, float, float],
    verify: str = "auto",
    records: tuple[str, str] | None = None,
    durable: bool = False,
) -> DownloadHandle: ...

@final
class DownloadHandle:
    def next_events(
        self, timeout_s: float
    ) -> list[tuple[Literal["file", "directory"], int]] | None: ...
    def bytes_done(self) -> int: ...
    def retries(self) -> int: ...
    def cancel(self) -> None: ...
    def outcome(self) -> None: ...

@final
class RangeReader:
    def __new__(
        cls,
        store: Store,
        *,
        max_concurrency: int,
        part_size: int,
        coalesce_gap: int,
        max_inflight_bytes: int,
        retry: tuple[int, float, float, float],
    ) -> RangeReader: ...
    def start(self, requests: list[tuple[str, int, str | None, int, int]]) -> ReadHandle: ...
    def list(self, prefix: str) -> list[tuple[str, int, str | None]]: ...
    def head(self, key: str) -> tuple[int, str | None]: ...
    def bytes_fetched(self) -> int: ...
    def retries(self) -> int: ...

@final
class ReadHandle:
    def wait(self, timeout_s: float) -> list[bytes] | None: ...
    def done(self) -> bool: ...
    def cancel(self) -> None: ...
