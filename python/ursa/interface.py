"""``DataInterface``: the one object users hold. ``query()`` resolves catalog rows;
``download()`` copies their bytes to local disk with live progress."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ursa import _core
from ursa.catalog import ModalityRow, QueryResult, build_filter, query_dataset
from ursa.download import Tuning, run
from ursa.errors import ConfigurationError, raise_from_core
from ursa.events import Emitter, ProgressCallback
from ursa.layouts import check_layout
from ursa.plan import DownloadPlan, make_plan, unique_rows
from ursa.profiles import Profile, load_profile
from ursa.retry import RetryPolicy
from ursa.sources import check_source
from ursa.stores import lance_options

if TYPE_CHECKING:
    from ursa.delivery.results import RecordingData
    from ursa.delivery.stream import WindowStream

Target = QueryResult | Iterable[QueryResult]


class DataInterface:
    """Catalog queries and downloads for one profile (``"r2"``, ``"r2-test"``, ``"local"``,
    a profile from the config file, or a ``Profile``)."""

    def __init__(self, profile: str | Profile = "r2") -> None:
        self.profile = load_profile(profile)
        self._catalog: Any = None

    def __repr__(self) -> str:
        return f"DataInterface(profile={self.profile.name!r})"

    def _dataset(self) -> Any:
        if self._catalog is None:
            import lance

            uri = self.profile.catalog
            if uri is None:
                raise ValueError(f"profile {self.profile.name!r} names no catalog")
            options = lance_options(self.profile, uri)
            try:
                self._catalog = lance.dataset(uri, storage_options=options)
            except (ValueError, OSError) as exc:
                reason = str(exc).split(",")[0]
                raise ConfigurationError(
                    f"profile {self.profile.name!r}: cannot open the catalog at {uri}: {reason}"
                ) from None
        return self._catalog

    def query(
        self,
        recording_hash: str | Sequence[str] | None = None,
        modality: str | Sequence[str] | None = None,
        worker_id: str | None = None,
        status: str = "ingested",
        where: str | None = None,
    ) -> QueryResult:
        """Catalog rows matching every given filter (pushed down to Lance), ordered by
        (recording_hash, modality, worker_id). No match is an empty result."""
        sql = build_filter(recording_hash, modality, worker_id, status, where)
        return query_dataset(self._dataset(), sql)

    def plan_download(
        self,
        target: Target,
        dest: str | os.PathLike[str],
        *,
        source: str = "auto",
        layout: str = "by_recording",
    ) -> DownloadPlan:
        """The download as it would run — every path and size, the collisions, the byte
        total — with nothing written."""
        return make_plan(
            self.profile,
            unique_rows(target),
            _dest(dest),
            check_source(source),
            check_layout(layout),
        )

    def download(
        self,
        target: Target,
        dest: str | os.PathLike[str],
        *,
        source: str = "auto",
        layout: str = "by_recording",
        progress: ProgressCallback | None = None,
        overwrite: bool = False,
        progress_interval: float | None = None,
        max_concurrency: int | None = None,
        part_size: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[Path]:
        """Copy the target rows' bytes verbatim under ``dest``; returns every file written,
        in stream order. See the seed page for sources, layouts and events."""
        source_ = check_source(source)
        layout_ = check_layout(layout)
        tuning = _tuning(max_concurrency, part_size, retry, progress_interval)
        dest_path = _dest(dest)
        rows = unique_rows(target)
        scope = _scope(rows)
        emitter = Emitter(progress)
        emitter.emit("start", bytes_done=0, retries=0, **scope)
        plan = make_plan(self.profile, rows, dest_path, source_, layout_)
        if plan.collisions and not overwrite:
            raise FileExistsError(
                f"{plan.collisions[0]} already exists; pass overwrite=True to replace it"
            )
        emitter.bytes_total = plan.bytes_total
        emitter.emit("plan_done", bytes_done=0, retries=0, **scope)
        dest_path.mkdir(parents=True, exist_ok=True)
        try:
            _core.clean_stale(sorted(str(d) for d in plan.target_dirs()))
        except _core.CoreError as exc:
            raise_from_core(exc)
        retries = run(plan, emitter, tuning, overwrite) if plan.rows else 0
        emitter.emit("finish", bytes_done=plan.bytes_total, retries=retries, **scope)
        return plan.paths

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


def _dest(dest: str | os.PathLike[str]) -> Path:
    path = Path(os.fspath(dest)).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"dest {path} exists and is not a directory")
    return path


def _scope(rows: tuple[ModalityRow, ...]) -> dict[str, str | None]:
    """Call-scoped events name the recording/modality only when the call has one."""
    hashes = {r.recording_hash for r in rows}
    modalities = {r.modality for r in rows}
    return {
        "recording_hash": next(iter(hashes)) if len(hashes) == 1 else None,
        "modality": next(iter(modalities)) if len(modalities) == 1 else None,
    }


def _tuning(
    max_concurrency: int | None,
    part_size: int | None,
    retry: RetryPolicy | None,
    progress_interval: float | None,
) -> Tuning:
    concurrency = _core.DEFAULT_MAX_CONCURRENCY if max_concurrency is None else max_concurrency
    part = _core.DEFAULT_PART_SIZE if part_size is None else part_size
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
    if not isinstance(part, int) or part < 1:
        raise ValueError(f"part_size must be a positive number of bytes, got {part_size!r}")
    if progress_interval is not None and not progress_interval > 0:
        raise ValueError(f"progress_interval must be > 0 seconds, got {progress_interval!r}")
    return Tuning(concurrency, part, retry or RetryPolicy(), progress_interval)
