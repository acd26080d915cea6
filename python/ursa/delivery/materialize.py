"""``materialize()``: every selected row's clip decoded into memory, one
``RecordingData`` per recording. Checks run before any byte moves; then the assets'
metadata is read, the clip's bytes are planned (a plan above ``max_bytes`` is refused),
every row's ranges are started at once through the engine, and rows are decoded in order
while the download phase grammar reports the bytes fetched."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ursa.catalog import ModalityRow, QueryResult
from ursa.delivery.assets import Asset, Readers, open_asset
from ursa.delivery.extra import require_data_extra
from ursa.delivery.results import RecordingData
from ursa.delivery.select import by_recording, select_rows
from ursa.delivery.timeaxis import Span, TimeLike, check_order, resolve
from ursa.events import Emitter, Phase, ProgressCallback
from ursa.profiles import Profile
from ursa.ranges import ByteRange, cancel_all
from ursa.retry import RetryPolicy

_INFLIGHT_BYTES = 256 << 20
_ROW_DONE: tuple[Phase, ...] = ("file_done", "modality_done")


def materialize(
    profile: Profile,
    target: QueryResult | Iterable[QueryResult],
    *,
    start: TimeLike | None = None,
    stop: TimeLike | None = None,
    modalities: str | Sequence[str] | None = None,
    max_bytes: int = 2 << 30,
    progress: ProgressCallback | None = None,
    max_concurrency: int | None = None,
    retry: RetryPolicy | None = None,
) -> list[RecordingData]:
    require_data_extra()
    check_order(start, stop)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
    check_concurrency(max_concurrency)
    rows = select_rows(target, modalities)
    spans = {row: resolve(start, stop, row.started_at) for row in rows}

    emitter = Emitter(progress)
    rhash, modality = _scope(rows)
    emitter.emit("start", bytes_done=0, retries=0, recording_hash=rhash, modality=modality)
    readers = Readers(profile, max_concurrency, retry, _INFLIGHT_BYTES, share_batch=True)
    assets = [open_asset(row, readers) for row in rows]
    plans = [a.plan(spans[a.row]) for a in assets]
    planned = sum(a.plan_bytes(spans[a.row]) for a in assets)
    if planned > max_bytes:
        raise ValueError(
            f"the clip needs about {planned:,} bytes, above max_bytes={max_bytes:,}: "
            "clip a shorter span, select fewer modalities, or raise max_bytes"
        )
    emitter.bytes_total = readers.bytes_fetched + planned
    emitter.emit(
        "plan_done",
        bytes_done=readers.bytes_fetched,
        retries=readers.retries,
        recording_hash=rhash,
        modality=modality,
    )

    # Every row's ranges run at once (the engine bounds bytes in flight); rows are
    # decoded in order as their bytes arrive.
    pending = [
        a.reader.start(p) if p and a.reader else None for a, p in zip(assets, plans, strict=True)
    ]
    decoded: dict[ModalityRow, object] = {}
    other_bytes = 0
    try:
        for asset, ranges, job in zip(assets, plans, pending, strict=True):
            row = asset.row
            emitter.emit(
                "modality_start",
                bytes_done=readers.bytes_fetched + other_bytes,
                retries=readers.retries,
                recording_hash=row.recording_hash,
                modality=row.modality,
                worker_id=row.worker_id,
            )
            decoded[row], extra = _decode(asset, spans[row], ranges, job)
            other_bytes += extra
            done = readers.bytes_fetched + other_bytes
            for phase in _ROW_DONE:
                emitter.emit(
                    phase,
                    bytes_done=done,
                    retries=readers.retries,
                    recording_hash=row.recording_hash,
                    modality=row.modality,
                    worker_id=row.worker_id,
                    key=_asset_key(row) if phase == "file_done" else None,
                )
    except BaseException:
        cancel_all(pending)
        raise
    total = readers.bytes_fetched + other_bytes
    emitter.bytes_total = max(emitter.bytes_total or 0, total)
    emitter.emit(
        "finish", bytes_done=total, retries=readers.retries, recording_hash=rhash, modality=modality
    )
    return [
        RecordingData(
            rhash, group[0].started_at, {a.key: decoded[a.row] for a in assets if a.row in group}
        )
        for rhash, group in by_recording(rows).items()
    ]


def _decode(asset: Asset, span: Span, ranges: list[ByteRange], job: object) -> tuple[object, int]:
    """The row's clip, and the bytes read outside the engine (pylance's tables)."""
    if job is not None:
        asset.take(ranges, job.result())  # type: ignore[attr-defined]
    try:
        value = asset.clip(span)
    finally:
        asset.release()
    extra = int(value.nbytes) if asset.row.asset_format == "lance" else 0
    return value, extra


def _asset_key(row: ModalityRow) -> str | None:
    uri = row.storage_uri or ""
    return uri.split("://", 1)[-1].split("/", 1)[-1] if "://" in uri else None


def _scope(rows: Sequence[ModalityRow]) -> tuple[str | None, str | None]:
    """Call-scoped events name the recording / modality only when the call has one."""
    hashes = {r.recording_hash for r in rows}
    modalities = {r.modality for r in rows}
    return (
        next(iter(hashes)) if len(hashes) == 1 else None,
        next(iter(modalities)) if len(modalities) == 1 else None,
    )


def check_concurrency(max_concurrency: int | None) -> None:
    if max_concurrency is None:
        return
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
        raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive integer, got {max_concurrency!r}")
