"""What earlier downloads published into a ``dest``, read back to decide which files a
``resume=True`` run may keep.

The engine appends one JSON line per published file to ``<dest>/.ursa/records/
<host>-<pid>.jsonl`` (one file per process, so concurrent downloads never share a write
position): the object (key, ETag, size) and the file's identity right after publishing
(inode, size, mtime and ctime in ns). A file is *identical* to a planned object only if a
record names that object and still matches the file's identity: any write since then
changes its ctime, which no user call can set back, so a file edited after download (same
size, other bytes) is never kept. A copied or restored file has a new inode and ctime and is
not kept either. A missing or garbled record just means "not identical".
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ursa import _core

RECORDS_DIR = Path(".ursa") / "records"


@dataclass(frozen=True)
class Record:
    key: str
    etag: str | None
    size: int
    ino: int
    mtime_ns: int
    ctime_ns: int


Records = dict[str, list[Record]]  # by path relative to dest (POSIX separators)


def record_file(dest: Path) -> Path:
    """This process's record file under ``dest``."""
    return dest / RECORDS_DIR / f"{_core.host_name()}-{os.getpid()}.jsonl"


def load(dest: Path) -> Records:
    """Every record under ``dest`` (none if it has no ``.ursa/``). Unreadable lines are
    skipped: they can only make a file count as not identical."""
    records: Records = {}
    directory = dest / RECORDS_DIR
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return records
    for name in names:
        if not name.endswith(".jsonl"):
            continue
        try:
            with open(directory / name, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    _add(records, line)
        except (FileNotFoundError, IsADirectoryError):
            continue
    return records


def _add(records: Records, line: str) -> None:
    try:
        raw = json.loads(line)
        record = Record(
            key=str(raw["key"]),
            etag=None if raw["etag"] is None else str(raw["etag"]),
            size=int(raw["size"]),
            ino=int(raw["ino"]),
            mtime_ns=int(raw["mtime_ns"]),
            ctime_ns=int(raw["ctime_ns"]),
        )
        path = str(raw["path"])
    except (ValueError, KeyError, TypeError):
        return
    records.setdefault(path, []).append(record)


def identical(
    records: Records,
    dest: Path,
    path: Path,
    key: str,
    etag: str | None,
    size: int,
    at: Path | None = None,
) -> bool:
    """Whether the file at ``path`` (or, still in a killed run's stage, at ``at``) is
    exactly the object (key, etag, size) that a download wrote for ``path``."""
    try:
        st = os.lstat(path if at is None else at)
        rel = path.relative_to(dest).as_posix()
    except (OSError, ValueError):
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    return any(
        r.key == key
        and r.etag == etag
        and r.size == size
        and r.ino == st.st_ino
        and r.mtime_ns == st.st_mtime_ns
        and r.ctime_ns == st.st_ctime_ns
        for r in records.get(rel, ())
    )
