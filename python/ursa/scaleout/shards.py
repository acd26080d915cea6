"""A download split into shards that any task runner can carry out.

``plan_shards`` runs on the driver: it checks every argument, plans the whole download
once (listing the store: the driver needs read access too), and splits the rows into
shards by recording, balanced by bytes. A ``Shard`` is plain data — the profile's
**name**, catalog rows, ``dest`` and the download options — so it pickles without any
secret; the process that runs it resolves the profile and its credentials from its own
config file, environment or ``op://`` references.

``run_shard`` runs in a worker: ursa's normal ``download()`` of the shard's rows with
``resume=True``, so a shard run again after its process was lost keeps what the lost run
published, continues its large objects and fetches the rest. Its progress goes to
``report`` in batches (cumulative counters, completions since the last batch), never a
call per file.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ursa import download as _download
from ursa.catalog import ModalityRow, QueryResult
from ursa.download import CancelToken, Target
from ursa.errors import ConfigurationError
from ursa.events import DownloadProgress, ProgressCallback
from ursa.plan import DownloadPlan, check_space, make_plan
from ursa.profiles import Profile, load_profile

REPORT_INTERVAL_S = 0.25  # how often a running shard sends its counters

#: The ``download()`` options a shard carries, with download()'s defaults. ``progress``
#: and ``cancel`` stay with the caller; ``resume`` is always on inside a shard.
OPTIONS: Mapping[str, Any] = MappingProxyType(
    {
        "source": "auto",
        "layout": "by_recording",
        "overwrite": False,
        "progress_interval": None,
        "max_concurrency": None,
        "part_size": None,
        "retry": None,
        "verify": "auto",
        "durable": False,
    }
)


@dataclass(frozen=True)
class Shard:
    """Rows downloaded together by one task. ``rows`` keep the call's order;
    ``positions`` are their indices among the call's rows. Holds no secret."""

    index: int
    profile: str
    rows: tuple[ModalityRow, ...]
    positions: tuple[int, ...]
    dest: Path
    bytes_total: int
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardPlan:
    """The driver's view: the whole download's plan and its shards."""

    plan: DownloadPlan
    shards: tuple[Shard, ...]
    profile: Profile
    progress_interval: float | None


@dataclass(frozen=True)
class FileDone:
    position: int  # the row's index among the call's rows
    key: str
    path: Path
    size: int


@dataclass(frozen=True)
class Batch:
    """What a running shard reports: counters so far (cumulative for this run of the
    shard), files and rows completed since its previous batch."""

    bytes_done: int
    retries: int
    files: tuple[FileDone, ...] = ()
    rows_done: tuple[int, ...] = ()


@dataclass(frozen=True)
class ShardResult:
    """The files a shard wrote, per row (aligned with ``Shard.rows``), in stream order.
    ``node`` names where they are when each node writes to its own disk."""

    index: int
    paths: tuple[tuple[Path, ...], ...]
    node: str = ""


# --- the driver ---------------------------------------------------------------------------


def plan_shards(
    profile: str | Profile,
    target: Target,
    dest: str | os.PathLike[str],
    *,
    shards: int,
    resume: bool = True,
    local_disk: bool = False,
    progress: ProgressCallback | None = None,
    **options: Any,
) -> ShardPlan:
    """Check the call, plan it and split it into at most ``shards`` shards (by recording,
    balanced by bytes). With a shared ``dest`` the collisions and the free space are
    checked here, before any task starts; with ``local_disk`` each worker checks its own
    disk. ``progress`` is only checked here (and may carry ``progress_interval``).
    Raises what ``download()`` raises for the same arguments."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"download() got an unexpected keyword argument {unknown[0]!r}")
    if not isinstance(shards, int) or isinstance(shards, bool) or shards < 1:
        raise ValueError(f"shards must be a positive integer, got {shards!r}")
    name, loaded = _named_profile(profile)
    opts = {**OPTIONS, **options}
    req = _download.request(loaded, target, dest, progress=progress, resume=resume, **opts)
    if not req.rows:
        raise ValueError("the target has no rows: nothing to download")
    plan = make_plan(loaded, req.rows, req.dest, req.source, req.layout, resume and not local_disk)
    if not local_disk:
        if plan.collisions and not req.overwrite:
            raise FileExistsError(
                f"{plan.collisions[0]} already exists; pass overwrite=True to replace it"
            )
        check_space(plan)
    row_bytes = [0] * len(plan.rows)
    for f in plan.files:
        row_bytes[f.row] += f.size
    carried = {k: v for k, v in opts.items() if k != "progress_interval"}
    groups = _balance(_by_recording(plan.rows), row_bytes, shards)
    made = tuple(
        Shard(
            index=i,
            profile=name,
            rows=tuple(plan.rows[p] for p in group),
            positions=tuple(group),
            dest=req.dest,
            bytes_total=sum(row_bytes[p] for p in group),
            options=carried,
        )
        for i, group in enumerate(groups)
    )
    return ShardPlan(plan, made, loaded, req.tuning.progress_interval)


def _named_profile(profile: str | Profile) -> tuple[str, Profile]:
    """The profile's name and the profile a worker would load by that name. A profile
    built in code cannot be sent (that would send its secrets): a one-line ValueError."""
    if isinstance(profile, str):
        return profile, load_profile(profile)
    if not isinstance(profile, Profile):
        raise TypeError(
            f"profile must be a profile name or a Profile, got {type(profile).__name__}"
        )
    try:
        named: Profile | None = load_profile(profile.name)
    except ConfigurationError:
        named = None
    if named != load_profile(profile):
        raise ValueError(
            f"profile {profile.name!r} was built in code: scale-out sends workers a profile's "
            "name, never its secrets, so use a profile from the config file ($URSA_CONFIG) "
            "with credentials each worker can resolve, and pass its name"
        )
    return profile.name, profile


def _by_recording(rows: tuple[ModalityRow, ...]) -> list[list[int]]:
    """Row positions grouped by recording, in the order recordings first appear."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.recording_hash, []).append(i)
    return list(groups.values())


def _balance(groups: list[list[int]], row_bytes: list[int], n: int) -> list[list[int]]:
    """Largest recording first onto the lightest shard; each shard's rows in call order,
    shards in the order of their first row."""
    sized = sorted(groups, key=lambda g: (-sum(row_bytes[p] for p in g), g[0]))
    bins: list[tuple[int, int, list[int]]] = [(0, i, []) for i in range(min(n, len(groups)))]
    for group in sized:
        load, i, members = heapq.heappop(bins)
        members.extend(group)
        heapq.heappush(bins, (load + sum(row_bytes[p] for p in group), i, members))
    return sorted((sorted(members) for _, _, members in bins), key=lambda m: m[0])


# --- the worker ---------------------------------------------------------------------------


def run_shard(
    shard: Shard,
    report: Callable[[Batch], object] | None = None,
    *,
    interval: float = REPORT_INTERVAL_S,
    cancel: CancelToken | None = None,
) -> ShardResult:
    """Download the shard's rows with ``resume=True``, the profile resolved by name in
    this process. ``report`` gets a ``Batch`` at most every ``interval`` seconds and a
    last one before this returns."""
    reporter = _Reporter(shard, report, interval)
    req = _download.request(
        load_profile(shard.profile),
        [QueryResult([row]) for row in shard.rows],  # one result per row keeps their order
        shard.dest,
        progress=reporter,
        resume=True,
        **{**shard.options, "progress_interval": interval},
    )
    paths = _download.download(req, cancel)
    reporter.flush()
    return ShardResult(shard.index, _split(paths, reporter.files_per_row))


def _split(paths: list[Path], counts: Iterable[int]) -> tuple[tuple[Path, ...], ...]:
    """The flat stream-order list cut into rows (each row's files are contiguous)."""
    out, start = [], 0
    for n in counts:
        out.append(tuple(paths[start : start + n]))
        start += n
    return tuple(out)


class _Reporter:
    """The shard's progress callback: accumulates, and sends a batch when due."""

    def __init__(
        self, shard: Shard, send: Callable[[Batch], object] | None, interval: float
    ) -> None:
        self.send = send
        self.positions = shard.positions
        self.interval = interval
        self.files_per_row = [0] * len(shard.rows)
        self.row = -1
        self.bytes_done = 0
        self.retries = 0
        self.files: list[FileDone] = []
        self.rows_done: list[int] = []
        self.last = time.monotonic()

    def __call__(self, event: DownloadProgress) -> None:
        self.bytes_done, self.retries = event.bytes_done, event.retries
        if event.phase == "modality_start":
            self.row += 1
        elif event.phase == "file_done":
            assert event.key is not None and event.path is not None and event.size is not None
            self.files_per_row[self.row] += 1
            self.files.append(FileDone(self.positions[self.row], event.key, event.path, event.size))
        elif event.phase == "modality_done":
            self.rows_done.append(self.positions[self.row])
        if time.monotonic() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if self.send is None:
            return
        batch = Batch(self.bytes_done, self.retries, tuple(self.files), tuple(self.rows_done))
        self.files, self.rows_done = [], []
        self.send(batch)
