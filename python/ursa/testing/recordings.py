"""Build a recording into a profile: assets are made locally with the real libraries
(``ursa.testing.assets``), uploaded by the engine into the profile's raw and assets
stores (``s3://`` or ``file://``), and their rows appended to the catalog."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ursa import _core
from ursa.catalog import ModalityRow, rows_to_arrow
from ursa.errors import raise_from_core
from ursa.profiles import Profile, load_profile
from ursa.stores import bucket_uri, lance_options, locate
from ursa.testing import assets


@dataclass(frozen=True)
class RowSpec:
    """One catalog row to make. ``asset_format`` is required for ingested rows; sizes are
    knobs for the benchmarks (e.g. 2,000 segments, or a multi-GiB MP4)."""

    modality: str
    worker_id: str = ""
    status: str = "ingested"
    asset_format: str | None = None
    segments: int = 4
    segment_size: int = 64 * 1024
    zarr_chunks: int = 8
    zarr_chunk_bytes: int = 32_000
    events: int = 500
    mp4_frames: int = 30
    mp4_size: int | None = None  # pad the MP4 (a trailing `free` box) to this many bytes
    table_rows: int = 1_000
    table_row_group_rows: int | None = None  # rows per Parquet row group (None: one group)
    sampling_rate_hz: float = 250.0  # Zarr signals
    mp4_fps: int = 30
    # The camera (``assets.write_mp4``): the defaults are a small, quick test video.
    mp4_width: int = 160
    mp4_height: int = 120
    mp4_keyframe_interval: int | None = None  # frames (None: one keyframe per second)
    mp4_bit_rate: int | None = None  # bits/s (None: the encoder's default quality)
    mp4_grain: int = 0  # per-frame sensor-like noise, so the encoder spends mp4_bit_rate
    mp4_preset: str | None = None  # libx264 speed preset


DEFAULT_ROWS: tuple[RowSpec, ...] = (
    RowSpec("eeg", asset_format="zarr"),
    RowSpec("events", asset_format="lance"),
    RowSpec("camera", "left", asset_format="mp4"),
    RowSpec("camera", "right", asset_format="mp4"),
    RowSpec("imu", asset_format="parquet"),
    RowSpec("audio", status="raw"),
    RowSpec("gaze", status="ingesting"),
    RowSpec("emg", status="failed"),
)

_BASENAMES = {"zarr": "{m}.zarr", "lance": "{m}.lance", "mp4": "{m}.mp4", "parquet": "{m}.parquet"}


@dataclass(frozen=True)
class Recording:
    recording_hash: str
    rows: tuple[ModalityRow, ...]


def recording_hash_for(seed: int | str) -> str:
    return hashlib.sha256(f"ursa-recording-{seed}".encode()).hexdigest()


def build_recording(
    profile: str | Profile,
    rows: Sequence[RowSpec] = DEFAULT_ROWS,
    *,
    seed: int = 0,
    recording_hash: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
    checksums: bool = True,
    duration_s: float | None = None,
) -> Recording:
    """Make every row's raw segments (kept after ingestion, as in production) and, for
    ingested rows, the processed asset; upload them; append the rows to the catalog.

    With ``duration_s`` every asset spans exactly the recording, on the time axis of
    SPEC §9: a Zarr signal has ``ceil(duration_s * fs)`` samples (sample ``i`` at
    ``i / fs``; chunks of ``zarr_chunk_bytes``, ``zarr_chunks`` is ignored), events and
    table rows have timestamps in ``[0, duration_s)`` (table row ``i`` at
    ``i * duration_s / table_rows``), and an MP4 has ``ceil(duration_s * mp4_fps)``
    frames (frame ``i`` at ``i / mp4_fps``). Without it the assets keep their sizes from
    the ``RowSpec`` knobs and the catalog says 60 s, as earlier fixtures did.

    With ``checksums`` (the default) every object is uploaded with its CRC32, as current
    S3 SDKs do, and the store keeps it; without, as older uploaders did, an object's only
    checksum is its MD5 ETag."""
    prof = load_profile(profile)
    rhash = recording_hash or recording_hash_for(seed)
    made: list[ModalityRow] = []
    with tempfile.TemporaryDirectory(prefix="ursa-build-", dir=workdir) as tmp:
        for i, spec in enumerate(rows):
            row_seed = seed * 1000 + i
            made.append(
                _build_row(prof, rhash, spec, Path(tmp) / str(i), row_seed, checksums, duration_s)
            )
    write_catalog(prof, made)
    return Recording(rhash, tuple(made))


def _build_row(
    prof: Profile,
    rhash: str,
    spec: RowSpec,
    tmp: Path,
    seed: int,
    checksums: bool,
    duration_s: float | None,
) -> ModalityRow:
    rel = f"{rhash}/{spec.modality}/" + (f"{spec.worker_id}/" if spec.worker_id else "")
    if prof.raw_bucket is None:
        raise ValueError(f"profile {prof.name!r} has no raw store")
    raw_uri = bucket_uri(prof.raw_bucket, rel)
    segments = assets.write_raw_segments(
        tmp / "raw", count=spec.segments, size_bytes=spec.segment_size, seed=seed
    )
    _upload(prof, raw_uri, tmp / "raw", segments, checksums)
    storage_uri = None
    if spec.status == "ingested":
        if spec.asset_format is None or prof.assets_bucket is None:
            raise ValueError(
                "an ingested row needs an asset_format and a profile with an assets store"
            )
        name = _BASENAMES[spec.asset_format].format(m=spec.modality)
        built = _make_asset(spec, tmp / "asset", name, seed, duration_s)
        storage_uri = bucket_uri(prof.assets_bucket, rel + name)
        files = [p for p in (tmp / "asset").rglob("*") if p.is_file()]
        _upload(prof, bucket_uri(prof.assets_bucket, rel), tmp / "asset", files, checksums)
        assert built.exists()
    return ModalityRow(
        recording_hash=rhash,
        modality=spec.modality,
        worker_id=spec.worker_id,
        status=spec.status,
        raw_storage_uri=raw_uri,
        storage_uri=storage_uri,
        asset_format=spec.asset_format if spec.status == "ingested" else None,
        started_at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=seed),
        duration_s=60.0 if duration_s is None else float(duration_s),
    )


def _make_asset(
    spec: RowSpec, parent: Path, name: str, seed: int, duration_s: float | None
) -> Path:
    parent.mkdir(parents=True)
    fmt = spec.asset_format
    if fmt == "zarr":
        channels = 8
        samples_per_chunk = max(1, spec.zarr_chunk_bytes // (4 * channels))
        samples = samples_per_chunk * spec.zarr_chunks
        if duration_s is not None:
            samples = _count_before(duration_s, spec.sampling_rate_hz)
        return assets.write_zarr(
            parent,
            name,
            channels=channels,
            samples=samples,
            chunk_samples=samples_per_chunk,
            sampling_rate_hz=spec.sampling_rate_hz,
            seed=seed,
        )
    if fmt == "lance":
        return assets.write_lance_events(
            parent, name, rows=spec.events, seed=seed, duration_s=duration_s
        )
    if fmt == "mp4":
        frames = spec.mp4_frames
        if duration_s is not None:
            frames = _count_before(duration_s, spec.mp4_fps)
        mp4 = assets.write_mp4(
            parent,
            name,
            frames=frames,
            width=spec.mp4_width,
            height=spec.mp4_height,
            fps=spec.mp4_fps,
            seed=seed,
            keyframe_interval=spec.mp4_keyframe_interval,
            bit_rate=spec.mp4_bit_rate,
            grain=spec.mp4_grain,
            preset=spec.mp4_preset,
        )
        assets.write_frame_index(mp4)
        if spec.mp4_size is not None:
            _pad_mp4(mp4, spec.mp4_size, seed)
        return mp4
    if fmt == "parquet":
        return assets.write_parquet(
            parent,
            name,
            rows=spec.table_rows,
            seed=seed,
            duration_s=duration_s,
            row_group_size=spec.table_row_group_rows,
        )
    raise ValueError(f"unknown asset_format {fmt!r}")


def _count_before(duration_s: float, rate_hz: float) -> int:
    """How many samples ``i / rate_hz`` lie in ``[0, duration_s)``."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    count = math.ceil(duration_s * rate_hz)
    while count > 0 and (count - 1) / rate_hz >= duration_s:
        count -= 1
    while count / rate_hz < duration_s:
        count += 1
    return count


def _pad_mp4(mp4: Path, size: int, seed: int) -> None:
    """Grow a real MP4 to ``size`` bytes with a trailing ``free`` box (players skip it),
    so benchmarks get a large, still valid file without encoding gigabytes of video."""
    pad = size - mp4.stat().st_size
    if pad < 16:
        return
    filler = assets.write_blob(mp4.parent.parent, "pad.bin", pad - 16, seed)
    with mp4.open("ab") as out, filler.open("rb") as src:
        out.write(struct.pack(">I4sQ", 1, b"free", pad))  # size=1: a 64-bit size follows
        while chunk := src.read(8 << 20):
            out.write(chunk)
    filler.unlink()


def _upload(
    prof: Profile, base_uri: str, root: Path, files: Sequence[Path], checksums: bool
) -> None:
    loc = locate(prof, base_uri)
    items = [(str(f), loc.key + f.relative_to(root).as_posix()) for f in files]
    try:
        _core.put_files(loc.store, items, 16, checksum=checksums)
    except _core.CoreError as exc:
        raise_from_core(exc)


def write_catalog(profile: str | Profile, rows: Sequence[ModalityRow]) -> None:
    """Append rows to the profile's catalog (created if missing)."""
    import lance

    prof = load_profile(profile)
    uri = prof.catalog
    if uri is None:
        raise ValueError(f"profile {prof.name!r} names no catalog")
    options = lance_options(prof, uri)
    try:
        lance.dataset(uri, storage_options=options)
        mode = "append"
    except (ValueError, OSError):
        mode = "create"
    lance.write_dataset(rows_to_arrow(rows), uri, mode=mode, storage_options=options)
