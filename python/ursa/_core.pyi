"""Stubs for the Rust extension (see rust/src/python.rs)."""

from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import final

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
    "clean_stale",
    "find_resumable",
    "find_stages",
    "host_name",
    "list_objects",
    "put_files",
    "start_download",
]

_StoreSpec = dict[str, object]
_Listed = tuple[str, str, int, str | None]

DEFAULT_MAX_CONCURRENCY: int
DEFAULT_PART_SIZE: int
DEFAULT_READ_PART_SIZE: int
DEFAULT_RETRY: tuple[int, float, float, float]
DEFAULT_COALESCE_GAP: int

class CoreError(Exception):
    """args: (kind, message, key, attempts, cause); cause is (kind, message, key, attempts)."""

def list_objects(
    specs: list[_StoreSpec], requests: list[tuple[int, str, bool]]
) -> list[list[_Listed]]: ...
def put_files(
    spec: _StoreSpec,
    items: Sequence[tuple[str | PathLike[str], str]],
    concurrency: int,
    checksum: bool = True,
) -> None: ...
def clean_stale(dirs: list[str], keep: list[str] = ...) -> int: ...
def find_resumable(dirs: list[str]) -> list[tuple[Path, Path, str | None, int, int]]: ...
def find_stages(dirs: list[str]) -> list[tuple[Path, Path]]: ...
def host_name() -> str: ...
def start_download(
    specs: list[_StoreSpec],
    jobs: list[tuple[int, str, int, str | None, str, int | None, str | None]],
    groups: list[tuple[str, str | None]],
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
    def next_events(self, timeout_s: float) -> list[tuple[int, int]] | None: ...
    def bytes_done(self) -> int: ...
    def retries(self) -> int: ...
    def cancel(self) -> None: ...
    def outcome(self) -> None: ...

@final
class RangeReader:
    def __new__(
        cls,
        spec: _StoreSpec,
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
