"""Planning a download: rows → parts → listed objects → local paths, with every check
that must pass before the first byte moves (source rules, hostile keys, flat-layout
clashes, collisions with what is already on disk, free space). With ``resume=True`` the
plan also says which files are kept (identical to the store's, by ``ursa.records``),
which are continued from a killed run's temporary, and which are fetched."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Literal, TypeVar

from ursa import _core, records
from ursa.catalog import ModalityRow, QueryResult
from ursa.errors import ObjectNotFoundError, raise_from_core
from ursa.layouts import Layout, row_dir
from ursa.profiles import Profile
from ursa.sources import Part, Source, parts_for
from ursa.stores import Location, locate

Action = Literal["fetch", "skip", "resume"]
T = TypeVar("T")


@dataclass(frozen=True)
class PlannedFile:
    """One object and where it lands. ``directory`` indexes ``DownloadPlan.directories``
    when the file belongs to a directory asset (published whole). ``action`` is what the
    download does with it: ``fetch``; ``skip`` (resume: the file there is identical);
    ``resume`` (continue a killed run's temporary, which holds ``held`` bytes)."""

    path: Path
    key: str
    size: int
    row: int
    etag: str | None = field(default=None, repr=False)
    store: int = field(default=0, repr=False)
    directory: int | None = None
    action: Action = "fetch"
    held: int = 0
    adopt: Path | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DownloadPlan:
    """What a download would do: every file in stream order, the directory assets, the
    paths already taken under ``dest``, and the byte total. Nothing is written to plan."""

    dest: Path
    rows: tuple[ModalityRow, ...]
    files: tuple[PlannedFile, ...]
    directories: tuple[Path, ...]
    collisions: tuple[Path, ...]
    bytes_total: int
    stores: tuple[_core.Store, ...] = field(default=(), repr=False, compare=False)
    #: Directory assets already in place and kept (resume); their missing files are
    #: published one by one into them.
    kept: tuple[Path, ...] = ()
    #: Free bytes on dest's filesystem (its nearest existing ancestor's) at plan time.
    bytes_free: int | None = None
    #: Directory assets continued from a killed run's stage (resume): (asset, stage). The
    #: stage's complete files are kept (``action="skip"``), the rest fetched into it.
    stages: tuple[tuple[Path, Path], ...] = ()

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    @property
    def files_skipped(self) -> int:
        """Files already there and identical (resume): kept, not fetched."""
        return sum(f.action == "skip" for f in self.files)

    @property
    def bytes_skipped(self) -> int:
        return sum(f.size for f in self.files if f.action == "skip")

    @property
    def files_resumed(self) -> int:
        """Files continued from a killed run's temporary (resume)."""
        return sum(f.action == "resume" for f in self.files)

    @property
    def bytes_resumed(self) -> int:
        """Bytes those temporaries already hold (read back and checked, not fetched)."""
        return sum(f.held for f in self.files if f.action == "resume")

    @property
    def files_to_fetch(self) -> int:
        """Files that need bytes from the store (fetched or resumed)."""
        return sum(f.action != "skip" for f in self.files)

    @property
    def bytes_to_fetch(self) -> int:
        """Bytes still to come from the store."""
        return sum(f.size - f.held for f in self.files if f.action != "skip")

    def adoptions(self) -> list[str]:
        """The killed runs' temporaries this download will continue (kept from cleaning)."""
        stages = [str(stage) for _, stage in self.stages]
        return sorted([str(f.adopt) for f in self.files if f.adopt is not None] + stages)

    def target_dirs(self) -> set[Path]:
        """The directories this download writes entries into (for stale-temp cleaning):
        files' own directories, those of files fetched into a kept directory asset, and
        the directory assets' parents (their stages)."""
        kept = set(self.kept)
        dirs = {
            f.path.parent
            for f in self.files
            if f.directory is None or self.directories[f.directory] in kept
        }
        return dirs | {d.parent for d in self.directories}


def unique_rows(target: QueryResult | Iterable[QueryResult]) -> tuple[ModalityRow, ...]:
    """The target's rows in the order given, each once."""
    results = [target] if isinstance(target, QueryResult) else list(target)
    rows: dict[ModalityRow, None] = {}
    for result in results:
        if not isinstance(result, QueryResult):
            raise TypeError(
                f"download() takes QueryResults (from query()), got {type(result).__name__}"
            )
        rows.update(dict.fromkeys(result))
    return tuple(rows)


def make_plan(
    profile: Profile,
    rows: tuple[ModalityRow, ...],
    dest: Path,
    source: Source,
    layout: Layout,
    resume: bool = False,
) -> DownloadPlan:
    row_parts = [parts_for(row, source) for row in rows]
    if profile.assets_bucket is None and any(p.processed for ps in row_parts for p in ps):
        raise ValueError(
            f"profile {profile.name!r} has no assets store, so processed assets cannot be "
            "downloaded: use profile='r2' or 'r2-test', or source='raw' for the raw segments"
        )
    located = [[(part, locate(profile, part.uri)) for part in parts] for parts in row_parts]
    stores, requests = _requests(located)
    try:
        listings = _core.list_objects(list(stores), requests) if requests else []
    except _core.CoreError as exc:
        raise_from_core(exc)
    files: list[PlannedFile] = []
    directories: list[Path] = []
    listing = _consume(listings)
    request = iter(requests)
    for row_index, (row, parts) in enumerate(zip(rows, located, strict=True)):
        base = row_dir(dest, row, layout)
        for part, _ in parts:
            objects = next(listing)
            store_index = next(request)[0]
            if part.processed and not objects:
                raise ObjectNotFoundError(f"the asset {part.uri} has no objects", key=part.uri)
            directory = None
            parent = base
            if part.name is not None:
                directories.append(base / part.name)
                directory = len(directories) - 1
                parent = directories[-1]
            for key, rel, size, etag in _consume(objects):
                files.append(
                    PlannedFile(parent / rel, key, size, row_index, etag, store_index, directory)
                )
    _check_unique(files, directories)
    _check_not_reserved(dest, files, directories)
    kept: tuple[Path, ...] = ()
    stages: tuple[tuple[Path, Path], ...] = ()
    if resume:
        files, collisions, kept, stages = _resume(dest, files, directories)
        files = _adoptions(files, kept, directories)
    else:
        collisions = _collisions(files, directories)
    return DownloadPlan(
        dest=dest,
        rows=rows,
        files=tuple(files),
        directories=tuple(directories),
        collisions=collisions,
        bytes_total=sum(f.size for f in files),
        stores=tuple(stores),
        kept=kept,
        bytes_free=free_bytes(dest),
        stages=stages,
    )


def _consume(items: list[T]) -> Iterator[T]:
    """``items`` in order, each dropped from the list once yielded: a listing of many
    objects is released as its planned files are made, not held beside them."""
    items.reverse()
    while items:
        yield items.pop()


def path_str(path: Path) -> str:
    """``str(path)``, without pathlib keeping the string on ``path`` (as ``str()`` and
    ``os.fspath()`` do): ~150 bytes per planned file for as long as the plan lives."""
    return os.path.join(path.parent, path.name)


def check_space(plan: DownloadPlan) -> None:
    """Fail before any byte moves when the bytes still to fetch cannot fit on dest's
    filesystem (an OSError with errno ENOSPC naming both sizes)."""
    need, free = plan.bytes_to_fetch, plan.bytes_free
    if free is not None and need > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough free space: this download needs {need:,} bytes ({_human(need)}) "
            f"but the filesystem of {plan.dest} has {free:,} bytes ({_human(free)}) free",
        )


def _human(n: int) -> str:
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def free_bytes(dest: Path) -> int | None:
    """Bytes an unprivileged user may still write on the filesystem that holds (or will
    hold) ``dest``; ``None`` where the filesystem reports no size at all (ramfs, some
    FUSE and network filesystems say 0 blocks of 0), so nothing can be checked."""
    existing = dest
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    st = os.statvfs(existing)
    if st.f_blocks == 0:
        return None
    return st.f_bavail * st.f_frsize


def _check_not_reserved(dest: Path, files: list[PlannedFile], directories: list[Path]) -> None:
    """``dest/.ursa`` holds the download records: no object may land there (possible only
    with the flat layout and a key starting with ``.ursa/``)."""
    reserved = dest / records.RECORDS_DIR.parts[0]
    if os.path.lexists(reserved) and (reserved.is_symlink() or not reserved.is_dir()):
        raise FileExistsError(
            f"{reserved} exists and is not a directory; ursa keeps its download records there"
        )
    inside = path_str(reserved) + os.sep  # a string test: `path.parents` costs ~17 µs a file
    for path in chain((f.path for f in files), directories):
        if (path_str(path) + os.sep).startswith(inside):
            raise ValueError(f"{path} would land in {reserved}, which ursa keeps its records in")


def _resume(
    dest: Path, files: list[PlannedFile], directories: list[Path]
) -> tuple[list[PlannedFile], tuple[Path, ...], tuple[Path, ...], tuple[tuple[Path, Path], ...]]:
    """Which planned files are already there and identical (kept), which directory assets
    are kept (everything they hold is identical; missing files are fetched into them) or
    continued from a killed run's stage, and what else is in the way (collisions, in
    stream order)."""
    known = records.load(dest)

    def same(f: PlannedFile, at: Path | None = None) -> bool:
        return records.identical(known, dest, f.path, f.key, f.etag, f.size, at)

    members: dict[int, list[PlannedFile]] = {}
    for f in files:
        if f.directory is not None:
            members.setdefault(f.directory, []).append(f)
    kept: set[int] = set()
    blocked: set[Path] = set()
    for index, directory in enumerate(directories):
        if not os.path.lexists(directory):
            continue
        planned = {f.path for f in members.get(index, [])}
        whole = directory.is_dir() and not directory.is_symlink()
        if (
            whole
            and all(p in planned for p in _entries(directory))
            and all(same(f) for f in members.get(index, []) if os.path.lexists(f.path))
        ):
            kept.add(index)
        else:
            blocked.add(directory)
    absent = [i for i, d in enumerate(directories) if not os.path.lexists(d)]
    staged = _stages(absent, directories, members, same)
    in_stage = {f.path for _, complete in staged.values() for f in complete}
    out: list[PlannedFile] = []
    for f in files:
        action: Action = "fetch"
        if f.directory is None:
            if os.path.lexists(f.path):
                if same(f):
                    action = "skip"
                else:
                    blocked.add(f.path)
        elif (f.directory in kept and os.path.lexists(f.path)) or f.path in in_stage:
            action = "skip"
        out.append(replace(f, action=action) if action != f.action else f)
    collisions = _in_stream_order(blocked, files, directories)
    stages = tuple((directories[i], stage) for i, (stage, _) in sorted(staged.items()))
    return out, collisions, tuple(directories[i] for i in sorted(kept)), stages


def _stages(
    absent: list[int],
    directories: list[Path],
    members: dict[int, list[PlannedFile]],
    same: Callable[[PlannedFile, Path | None], bool],
) -> dict[int, tuple[Path, list[PlannedFile]]]:
    """For directory assets not in place: a stage a killed run of this machine left, that
    holds nothing unplanned, and the planned files it already holds complete (recorded as
    written and unchanged since). The fullest stage is continued; the rest are cleaned."""
    if not absent:
        return {}
    try:
        found = _core.find_stages(sorted({str(directories[i].parent) for i in absent}))
    except _core.CoreError as exc:
        raise_from_core(exc)
    by_dir: dict[Path, list[Path]] = {}
    for final, stage_name in found:
        by_dir.setdefault(Path(final), []).append(Path(stage_name))
    chosen: dict[int, tuple[Path, list[PlannedFile]]] = {}
    for i in absent:
        directory = directories[i]
        for stage in by_dir.get(directory, []):
            inside = {stage / f.path.relative_to(directory): f for f in members.get(i, [])}
            if stage.is_symlink() or not all(p in inside for p in _entries(stage)):
                continue
            complete = [f for p, f in inside.items() if same(f, p)]
            if complete and len(complete) > len(chosen.get(i, (stage, []))[1]):
                chosen[i] = (stage, complete)
    return chosen


# tempname.rs's pattern: `.<name>.ursa-<host>-<pid>-<16 hex>.<tag>`.
_TEMPORARY = re.compile(r"\..+\.ursa-[A-Za-z0-9_-]+-\d+-[0-9a-f]{16}\.(part|journal|stage|trash)")


def _entries(directory: Path) -> Iterator[Path]:
    """Everything under ``directory`` that is not a directory (files, symlinks, ...) nor
    an ursa temporary (a killed run's, cleaned or continued), without following symlinks."""
    for root, dirs, names in os.walk(directory):
        base = Path(root)
        for name in names:
            if not _TEMPORARY.fullmatch(name):
                yield base / name
        for name in dirs:
            if (base / name).is_symlink():
                yield base / name


def _adoptions(
    files: list[PlannedFile], kept: tuple[Path, ...], directories: list[Path]
) -> list[PlannedFile]:
    """Files to fetch outside a stage that a killed run of this machine left a temporary
    for, with a journal naming the same object: continue those (the fullest one)."""
    kept_set = set(kept)
    candidates = [
        i
        for i, f in enumerate(files)
        if f.action == "fetch" and (f.directory is None or directories[f.directory] in kept_set)
    ]
    dirs = sorted({str(files[i].path.parent) for i in candidates})
    if not dirs:
        return files
    try:
        found = _core.find_resumable(dirs)
    except _core.CoreError as exc:
        raise_from_core(exc)
    best: dict[tuple[Path, str | None, int], tuple[int, Path]] = {}
    for final, temp, etag, size, held in found:
        slot = (Path(final), etag, size)
        if held > best.get(slot, (0, Path()))[0]:
            best[slot] = (held, Path(temp))
    out = list(files)
    for i in candidates:
        f = files[i]
        hit = best.get((f.path, f.etag, f.size))
        if hit is not None:
            out[i] = replace(f, action="resume", held=hit[0], adopt=hit[1])
    return out


def _in_stream_order(
    paths: set[Path], files: list[PlannedFile], directories: list[Path]
) -> tuple[Path, ...]:
    """``paths`` (planned files and directory assets) sorted by where each first occurs
    in the stream; the order is worked out only when there is something to sort."""
    if not paths:
        return ()
    order: dict[Path, int] = {}
    for i, f in enumerate(files):
        order.setdefault(f.path, i)
        if f.directory is not None:
            order.setdefault(directories[f.directory], i)
    return tuple(sorted(paths, key=lambda p: order.get(p, len(order))))


def _requests(
    located: list[list[tuple[Part, Location]]],
) -> tuple[list[_core.Store], list[tuple[int, str, bool]]]:
    """Each distinct store once, and the listing requests against them."""
    index: dict[_core.Store, int] = {}
    requests: list[tuple[int, str, bool]] = []
    for parts in located:
        for part, loc in parts:
            requests.append((index.setdefault(loc.store, len(index)), loc.key, part.is_prefix))
    return list(index), requests


def _check_unique(files: list[PlannedFile], directories: list[Path]) -> None:
    """Two planned entries on one path (possible in the flat layout), or a file where
    another needs a directory, is a ValueError now rather than a clash mid-download."""
    taken: dict[Path, str] = {}
    entries = chain(
        ((f.path, f.key) for f in files if f.directory is None),
        ((d, f"directory asset {d.name}") for d in directories),
    )
    for path, what in entries:
        if path in taken:
            raise ValueError(f"two planned files map to {path}: {taken[path]!r} and {what!r}")
        taken[path] = what
    # Files share few parent directories: check those (and their ancestors) once each.
    needed: dict[Path, str] = {}
    for f in files:
        parent = f.path.parent
        if parent not in needed:
            for ancestor in (parent, *parent.parents):
                needed.setdefault(ancestor, f.key)
    for directory, key in needed.items():
        occupant = taken.get(directory)
        if occupant is not None and not occupant.startswith("directory asset"):
            raise ValueError(
                f"{key!r} needs {directory} to be a directory, but {occupant!r} lands there"
            )


def _collisions(files: list[PlannedFile], directories: list[Path]) -> tuple[Path, ...]:
    """Existing entries (files, directories, symlinks, even dangling) at planned places,
    in stream order."""
    candidates = chain((f.path for f in files if f.directory is None), directories)
    taken = {p for p in candidates if os.path.lexists(path_str(p))}
    return _in_stream_order(taken, files, directories)
