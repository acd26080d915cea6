"""Planning a download: rows → parts → listed objects → local paths, with every check
that must pass before the first byte moves (source rules, hostile keys, flat-layout
clashes, collisions with what is already on disk)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ursa import _core
from ursa.catalog import ModalityRow, QueryResult
from ursa.errors import ObjectNotFoundError, raise_from_core
from ursa.layouts import Layout, row_dir
from ursa.profiles import Profile
from ursa.sources import Part, Source, parts_for
from ursa.stores import Location, StoreSpec, locate


@dataclass(frozen=True)
class PlannedFile:
    """One object and where it lands. ``directory`` indexes ``DownloadPlan.directories``
    when the file belongs to a directory asset (published whole)."""

    path: Path
    key: str
    size: int
    row: int
    etag: str | None = field(default=None, repr=False)
    store: int = field(default=0, repr=False)
    directory: int | None = None


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
    stores: tuple[StoreSpec, ...] = field(default=(), repr=False, compare=False)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    def target_dirs(self) -> set[Path]:
        """The directories this download writes entries into (for stale-temp cleaning)."""
        dirs = {f.path.parent for f in self.files if f.directory is None}
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
    listing = iter(listings)
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
            for key, rel, size, etag in objects:
                files.append(
                    PlannedFile(parent / rel, key, size, row_index, etag, store_index, directory)
                )
    _check_unique(files, directories)
    return DownloadPlan(
        dest=dest,
        rows=rows,
        files=tuple(files),
        directories=tuple(directories),
        collisions=_collisions(files, directories),
        bytes_total=sum(f.size for f in files),
        stores=tuple(stores),
    )


def _requests(
    located: list[list[tuple[Part, Location]]],
) -> tuple[list[StoreSpec], list[tuple[int, str, bool]]]:
    """One store spec per distinct store, and the listing requests against them."""
    index: dict[tuple[object, ...], int] = {}
    stores: list[StoreSpec] = []
    requests: list[tuple[int, str, bool]] = []
    for parts in located:
        for part, loc in parts:
            if loc.store_id not in index:
                index[loc.store_id] = len(stores)
                stores.append(loc.spec)
            requests.append((index[loc.store_id], loc.key, part.is_prefix))
    return stores, requests


def _check_unique(files: list[PlannedFile], directories: list[Path]) -> None:
    """Two planned entries on one path (possible in the flat layout), or a file where
    another needs a directory, is a ValueError now rather than a clash mid-download."""
    taken: dict[Path, str] = {}
    entries = [(f.path, f.key) for f in files if f.directory is None]
    entries += [(d, f"directory asset {d.name}") for d in directories]
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
    candidates = [f.path for f in files if f.directory is None] + list(directories)
    seen: dict[Path, None] = {}
    for path in candidates:
        if os.path.lexists(path):
            seen[path] = None
    order = {
        f.path if f.directory is None else directories[f.directory]: i
        for i, f in enumerate(reversed(files))
    }
    return tuple(sorted(seen, key=lambda p: -order.get(p, -1)))
