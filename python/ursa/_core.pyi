"""Stubs for the Rust extension (see rust/src/python.rs)."""

from collections.abc import Sequence
from os import PathLike

StoreSpec = dict[str, object]
Listed = tuple[str, str, int, str | None]

DEFAULT_MAX_CONCURRENCY: int
DEFAULT_PART_SIZE: int

class CoreError(Exception):
    """args: (kind, message, key, attempts, cause); cause is (kind, message, key, attempts)."""

def list_objects(
    specs: list[StoreSpec], requests: list[tuple[int, str, bool]]
) -> list[list[Listed]]: ...
def put_files(
    spec: StoreSpec, items: Sequence[tuple[str | PathLike[str], str]], concurrency: int
) -> None: ...
def clean_stale(dirs: list[str]) -> int: ...
def start_download(
    specs: list[StoreSpec],
    jobs: list[tuple[int, str, int, str | None, str, int | None]],
    groups: list[str],
    *,
    max_concurrency: int,
    part_size: int,
    overwrite: bool,
    retry: tuple[int, float, float, float],
) -> DownloadHandle: ...

class DownloadHandle:
    def next_events(self, timeout_s: float) -> list[tuple[int, int]] | None: ...
    def bytes_done(self) -> int: ...
    def retries(self) -> int: ...
    def cancel(self) -> None: ...
    def outcome(self) -> None: ...
