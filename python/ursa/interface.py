"""``DataInterface``: the one object users hold. ``query()`` resolves catalog rows;
``download()`` / ``download_async()`` copy their bytes to local disk with live progress.
The methods here are the documented signatures; the work is in ``catalog``, ``plan`` and
``download``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ursa import download as _download
from ursa.catalog import QueryResult, StatusFilter, build_filter, query_dataset
from ursa.download import CancelToken, Target, Verify, check_dest
from ursa.events import ProgressCallback
from ursa.layouts import Layout, check_layout
from ursa.live_catalog import LiveCatalog
from ursa.plan import DownloadPlan, make_plan, unique_rows
from ursa.profiles import Profile, load_profile
from ursa.retry import RetryPolicy
from ursa.sources import Source, check_source

if TYPE_CHECKING:
    from ursa.delivery.results import RecordingData
    from ursa.delivery.stream import WindowStream


class DataInterface:
    """Catalog queries and downloads for one profile.

    ``profile``: ``"r2"`` (default), ``"r2-test"``, ``"local"``, a profile named in the
    config file (``$URSA_CONFIG`` or ``~/.config/ursa/config.toml``), or a ``Profile``.
    Raises ``ConfigurationError`` for an unknown profile or a malformed config file.
    A ``DataInterface`` may be held for hours: every ``query()`` sees the catalog as it is.
    """

    def __init__(self, profile: str | Profile = "r2") -> None:
        self.profile = load_profile(profile)
        self._catalog = LiveCatalog(self.profile)

    def __repr__(self) -> str:
        return f"DataInterface(profile={self.profile.name!r})"

    def _dataset(self) -> Any:
        return self._catalog.latest()

    def query(
        self,
        recording_hash: str | Sequence[str] | None = None,
        modality: str | Sequence[str] | None = None,
        worker_id: str | None = None,
        status: StatusFilter = "ingested",
        where: str | None = None,
    ) -> QueryResult:
        """Catalog rows matching every given filter, ordered by (recording_hash, modality,
        worker_id). Filters combine with AND and are pushed down to Lance; no match is an
        empty result, not an error. Each call reads the catalog's latest version.

        Args:
            recording_hash: one 64-hex hash or a list of them (default None: any).
            modality: one modality or a list (default None: any).
            worker_id: one worker id; ``""`` is the single-worker rows (default None: any).
            status: ``"ingested"`` (default), ``"raw"``, ``"ingesting"``, ``"failed"`` or
                ``"all"``.
            where: an extra Lance SQL filter, ANDed with the others (default None).

        Raises:
            ValueError: a malformed recording_hash or an unknown status.
            ConfigurationError: the profile's catalog cannot be opened.
        """
        sql = build_filter(recording_hash, modality, worker_id, status, where)
        return query_dataset(self._dataset(), sql)

    def plan_download(
        self,
        target: Target,
        dest: str | os.PathLike[str],
        *,
        source: Source = "auto",
        layout: Layout = "by_recording",
        resume: bool = False,
    ) -> DownloadPlan:
        """The download as it would run — every path and size, the collisions with what
        is already under ``dest``, the byte total, the free space, and with
        ``resume=True`` what would be skipped, resumed and fetched (``files_skipped``,
        ``files_resumed``, ``bytes_to_fetch``, …) — with nothing written (a dry run).
        Parameters and errors as in ``download()``; collisions are reported in the plan,
        not raised."""
        return make_plan(
            self.profile,
            unique_rows(target),
            check_dest(dest),
            check_source(source),
            check_layout(layout),
            resume=bool(resume),
        )

    def download(
        self,
        target: Target,
        dest: str | os.PathLike[str],
        *,
        source: Source = "auto",
        layout: Layout = "by_recording",
        progress: ProgressCallback | None = None,
        overwrite: bool = False,
        progress_interval: float | None = None,
        max_concurrency: int | None = None,
        part_size: int | None = None,
        retry: RetryPolicy | None = None,
        cancel: CancelToken | None = None,
        verify: Verify = "auto",
        resume: bool = False,
        durable: bool = False,
    ) -> list[Path]:
        """Copy the target rows' bytes verbatim under ``dest``; returns every file written,
        in stream order (rows in target order; within a row the asset first, then its
        companions, each in key order). Every check runs before the first byte moves.
        Each file is written to a temporary beside its final name and renamed into place
        when complete and verified; on any failure or cancellation the temporaries are
        removed before the exception propagates.

        Args:
            target: a ``QueryResult`` or an iterable of them (a row given twice is
                downloaded once).
            dest: the destination directory, created with its parents if missing.
            source: ``"auto"`` (default: the processed asset of ingested rows, the raw
                segments of raw rows), ``"raw"`` or ``"processed"``.
            layout: ``"by_recording"`` (default: ``dest/<hash>/<modality>/[<worker>/]``),
                ``"by_modality"`` (``dest/<modality>/<hash>/[<worker>/]``) or ``"flat"``.
            progress: a callable taking a ``DownloadProgress``, run on the calling thread
                (default None). Its exceptions are logged at WARNING and the download goes
                on. An adapter may carry ``progress_interval`` (used when the argument is
                None) and ``on_error(exc)`` (called when the download fails).
            overwrite: replace existing files and directory assets (default False: an
                existing path is a ``FileExistsError``).
            progress_interval: seconds between ``"progress"`` events inside files
                (default None: only at file boundaries).
            max_concurrency: concurrent requests (default: the engine's, chosen by
                benchmark).
            part_size: the most bytes per ranged request of a large object (default: the
                engine's, 16 MiB); an object with fewer parts than ``max_concurrency`` is
                cut into smaller ones (down to 1 MiB) so it alone keeps every connection
                busy.
            retry: the retry budget per object or part and the stall timeout (default
                ``RetryPolicy()``).
            cancel: anything with ``is_set()``, e.g. a ``threading.Event`` set from another
                thread (default None).
            verify: ``"auto"`` (default: the size and the strongest check the store gives —
                its full-object CRC32, CRC32C or CRC64NVME, else a single-part upload's MD5
                ETag) or ``"size"`` (the size only, as s5cmd and obstore check).
            resume: continue an earlier download into ``dest`` (default False). Files and
                directory assets already there and identical to the store's objects (by
                the records every download keeps in ``dest/.ursa/``) are kept and not
                fetched, but still returned and reported; a large object or a directory
                asset that a killed run of this machine left unfinished is continued;
                anything else in the way is still a collision.
            durable: fsync each file before it is renamed into place and each directory
                after the renames into it, so a published file survives a power loss
                (default False: the OS writes back when it chooses; see
                docs/benchmarks-durable.md for the cost).

        Raises:
            ValueError: an unknown source or layout, a row the source cannot deliver
                (``ingesting``/``failed`` rows; a raw row under ``"processed"``), a hostile
                key, two files on one path, a bad tuning or ``verify`` value.
            TypeError: a target that is not QueryResults, a non-callable ``progress``, a
                ``cancel`` without ``is_set()``.
            NotADirectoryError: ``dest`` exists and is not a directory.
            FileExistsError: a planned path exists and ``overwrite`` is False (with
                ``resume``: exists and is not identical to the store's object).
            ObjectStoreError: a store failure (after retries); ``.key`` names the object.
            DownloadCancelled: ``cancel`` was set.
            OSError: a local filesystem failure; ``errno.ENOSPC`` before any byte moves
                when the bytes still to fetch exceed the free space of ``dest``'s
                filesystem.
        """
        req = _download.request(
            self.profile,
            target,
            dest,
            source=source,
            layout=layout,
            progress=progress,
            overwrite=overwrite,
            progress_interval=progress_interval,
            max_concurrency=max_concurrency,
            part_size=part_size,
            retry=retry,
            verify=verify,
            resume=resume,
            durable=durable,
        )
        return _download.download(req, cancel)

    async def download_async(
        self,
        target: Target,
        dest: str | os.PathLike[str],
        *,
        source: Source = "auto",
        layout: Layout = "by_recording",
        progress: ProgressCallback | None = None,
        overwrite: bool = False,
        progress_interval: float | None = None,
        max_concurrency: int | None = None,
        part_size: int | None = None,
        retry: RetryPolicy | None = None,
        cancel: CancelToken | None = None,
        verify: Verify = "auto",
        resume: bool = False,
        durable: bool = False,
    ) -> list[Path]:
        """``download()`` for asyncio code: the same parameters, result, events and errors,
        without blocking the event loop. Waiting on the engine holds no thread (it is
        polled between short sleeps on the loop; only planning, which lists the store,
        runs in a worker thread), and ``progress`` runs on the loop's thread. Cancelling
        the task cancels the engine, waits until its temporaries are removed, then raises
        ``asyncio.CancelledError``; several downloads may run in one loop at once."""
        req = _download.request(
            self.profile,
            target,
            dest,
            source=source,
            layout=layout,
            progress=progress,
            overwrite=overwrite,
            progress_interval=progress_interval,
            max_concurrency=max_concurrency,
            part_size=part_size,
            retry=retry,
            verify=verify,
            resume=resume,
            durable=durable,
        )
        return await _download.download_async(req, cancel)

    def materialize(
        self,
        target: Target,
        *,
        start: float | datetime | None = None,
        stop: float | datetime | None = None,
        modalities: str | Sequence[str] | None = None,
        max_bytes: int = 2 << 30,
        progress: ProgressCallback | None = None,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[RecordingData]:
        """Decode the target rows' clip ``[start, stop)`` into memory, reading only the
        bytes it needs in place in the store: one ``RecordingData`` per recording, in
        target order (SPEC §9). Needs ``ursa[data]``."""
        from ursa.delivery import require_data_extra

        require_data_extra()
        from ursa.delivery.materialize import materialize

        return materialize(
            self.profile,
            target,
            start=start,
            stop=stop,
            modalities=modalities,
            max_bytes=max_bytes,
            progress=progress,
            max_concurrency=max_concurrency,
            retry=retry,
        )

    def stream(
        self,
        target: Target,
        *,
        window: float,
        stride: float | None = None,
        start: float | datetime | None = None,
        stop: float | datetime | None = None,
        modalities: str | Sequence[str] | None = None,
        drop_last: bool = True,
        prefetch: int = 2,
        max_inflight_bytes: int = 256 << 20,
        max_concurrency: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> WindowStream:
        """Windows of ``window`` seconds every ``stride`` over the target rows, each
        clipped as ``materialize`` would, fetched ahead of the consumer in bounded memory;
        ``len()`` is known up front (SPEC §9). Needs ``ursa[data]``."""
        from ursa.delivery import require_data_extra

        require_data_extra()
        from ursa.delivery.stream import WindowStream

        return WindowStream(
            self.profile,
            target,
            window=window,
            stride=stride,
            start=start,
            stop=stop,
            modalities=modalities,
            drop_last=drop_last,
            prefetch=prefetch,
            max_inflight_bytes=max_inflight_bytes,
            max_concurrency=max_concurrency,
            retry=retry,
        )
