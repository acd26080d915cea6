"""Deterministic builders of real fixture files (Zarr v3, Lance, MP4, Parquet, raw bytes).

Each builder writes into a local directory ``parent`` (created if missing), refuses to
replace an existing file or directory, and returns the path it created; uploading is the
caller's business. The same arguments give the same content. Zarr, Parquet and the random
byte files are byte-identical between runs; Lance datasets and MP4s hold identical data,
but Lance names its files with fresh UUIDs and the MP4 encoder is not promised to be
bit-exact across machines.

PyAV, zarr and pylance are imported inside the builders that need them, so this module
imports where one of them (PyAV in particular) is missing.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "write_blob",
    "write_frame_index",
    "write_lance_events",
    "write_mp4",
    "write_parquet",
    "write_raw_segments",
    "write_zarr",
]

# Random bytes are drawn in blocks of this size: memory stays bounded for multi-GiB files,
# and the block size is fixed because numpy's ``bytes()`` output depends on how the draws
# are split.
_RANDOM_BLOCK_BYTES = 8 << 20
# The Zarr array is filled this many bytes (rounded to whole chunks) at a time.
_ZARR_SLAB_BYTES = 64 << 20
_EVENT_LABELS = ("stimulus", "response", "artifact", "marker")
# Distinct noise fields ``write_mp4`` cycles through for ``grain``.
_GRAIN_FIELDS = 17
_SENSORS = ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")


def write_zarr(
    parent: Path,
    name: str = "eeg.zarr",
    *,
    channels: int = 8,
    samples: int = 10_000,
    chunk_samples: int = 1_000,
    dtype: str = "float32",
    sampling_rate_hz: float = 250.0,
    seed: int = 0,
) -> Path:
    """A Zarr v3 group with one array ``data`` of shape ``(channels, samples)``, chunked
    along samples only, and ``sampling_rate_hz`` in the group's and the array's attributes.

    Chunks are stored uncompressed so their size is predictable: every chunk object is
    exactly ``channels * chunk_samples * itemsize`` bytes (zarr stores the last, partial
    chunk at full size too) and there are ``ceil(samples / chunk_samples)`` of them. The
    defaults give 10 chunks of 32,000 bytes; ``samples=4_000_000`` gives 4,000.

    The values are ``default_rng(seed).standard_normal((samples, channels),
    dtype=float32).T * 50`` cast to ``dtype`` (noise at a plausible microvolt scale)."""
    import zarr

    if channels < 1 or samples < 1 or chunk_samples < 1:
        raise ValueError("channels, samples and chunk_samples must be positive")
    path = _fresh(parent, name)
    group = zarr.open_group(path, mode="w-", zarr_format=3)
    group.attrs["sampling_rate_hz"] = sampling_rate_hz
    array = group.create_array(
        "data",
        shape=(channels, samples),
        chunks=(channels, chunk_samples),
        dtype=dtype,
        compressors=None,
        fill_value=0,
        dimension_names=("channel", "sample"),
        attributes={"sampling_rate_hz": sampling_rate_hz},
    )
    rng = np.random.default_rng(seed)
    chunk_bytes = channels * chunk_samples * np.dtype(dtype).itemsize
    slab = chunk_samples * max(1, _ZARR_SLAB_BYTES // chunk_bytes)
    # Whole chunks per write: each chunk is encoded once, and zarr writes a slab's chunks
    # concurrently. Drawing sample-major keeps the values independent of the slab size.
    for start in range(0, samples, slab):
        stop = min(samples, start + slab)
        noise = rng.standard_normal((stop - start, channels), dtype=np.float32).T * 50
        array[:, start:stop] = noise.astype(dtype)
    return path


def write_lance_events(
    parent: Path,
    name: str = "events.lance",
    *,
    rows: int = 1_000,
    seed: int = 0,
    duration_s: float | None = None,
) -> Path:
    """A Lance dataset of events: ``timestamp_s`` (float64, increasing), ``label``
    (string) and ``value`` (int64). With ``duration_s`` the timestamps are sorted uniform
    draws in ``[0, duration_s)``; without, gaps are exponential with a 0.5 s mean."""
    import lance
    import pyarrow as pa

    path = _fresh(parent, name)
    rng = np.random.default_rng(seed)
    if duration_s is None:
        times = np.cumsum(rng.exponential(0.5, rows))
    else:
        times = np.sort(rng.uniform(0.0, duration_s, rows))
    table = pa.table(
        {
            "timestamp_s": pa.array(times, pa.float64()),
            "label": pa.array([_EVENT_LABELS[i] for i in rng.integers(0, 4, rows)], pa.string()),
            "value": pa.array(rng.integers(0, 1_000, rows), pa.int64()),
        }
    )
    lance.write_dataset(table, str(path))
    return path


def write_mp4(
    parent: Path,
    name: str = "camera.mp4",
    *,
    frames: int = 60,
    width: int = 160,
    height: int = 120,
    fps: int = 30,
    seed: int = 0,
    keyframe_interval: int | None = None,
    bit_rate: int | None = None,
    grain: int = 0,
    preset: str | None = None,
) -> Path:
    """An MP4 of ``frames`` frames (H.264 when PyAV has an encoder for it, else MPEG-4
    part 2) at ``fps``, frame ``i`` presented at ``i / fps`` s: a seeded colour gradient
    with a square moving across it, a keyframe every ``keyframe_interval`` frames (default
    ``fps``: one per second, so a frame index has several). Each frame carries its number
    (``ursa.testing.framecode``): ``frame_number_of`` on a decoded frame says which one it
    is.

    ``bit_rate`` (bits/s) asks the encoder for that average rate instead of its default
    quality; the picture alone is so simple that the encoder cannot spend it, so ``grain``
    adds per-frame noise of up to ``grain`` levels (as a camera's sensor does) below the
    frame number. ``preset`` is the libx264 speed preset (ignored by other encoders)."""
    import av

    from ursa.testing import framecode

    if width % 2 or height % 2:
        raise ValueError("width and height must be even (yuv420p)")
    if not 0 <= grain < 128:
        raise ValueError(f"grain must be in [0, 128), got {grain!r}")
    path = _fresh(parent, name)
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0.0, 1.0, width)[None, :, None] * rng.integers(0, 256, 3)
    background = np.broadcast_to(gradient, (height, width, 3)).astype(np.uint8)
    square_colour = rng.integers(0, 256, 3, dtype=np.uint8)
    side = max(2, min(width, height) // 4)
    band = framecode.band_height(width, height)
    noise = _grain_fields(rng, grain, (height, width, 3))
    if grain:  # leave headroom so adding the noise cannot wrap around
        background = _dim(background, grain)
        square_colour = _dim(square_colour, grain)
    codec = _video_codec()
    options = {"preset": preset} if preset and codec == "libx264" else {}
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        assert isinstance(stream, av.VideoStream)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = keyframe_interval or fps
        if bit_rate is not None:
            stream.bit_rate = bit_rate
        for i in range(frames):
            image = background.copy()
            x = (i * 3) % (width - side + 1)
            y = max(band, (height - side) // 2)
            image[y : y + side, x : x + side] = square_colour
            if noise is not None:
                image += noise[i % len(noise)]
            framecode.stamp(image, i)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder's delayed frames
    return path


def write_frame_index(mp4: Path) -> Path:
    """Decode ``mp4`` and write its frame index, the Lance dataset at ``str(mp4) + ".lance"``:
    one row per frame in presentation order with ``frame`` (int64), ``pts`` (int64, in
    the video stream's time base), ``time_s`` (float64) and ``keyframe`` (bool)."""
    import av
    import lance
    import pyarrow as pa

    path = Path(str(mp4) + ".lance")
    if path.exists():
        raise FileExistsError(path)
    pts: list[int] = []
    time_s: list[float] = []
    keyframe: list[bool] = []
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        for frame in container.decode(stream):
            if frame.pts is None:
                raise ValueError(f"{mp4}: a decoded frame has no pts")
            pts.append(frame.pts)
            time_s.append(float(frame.pts * stream.time_base))
            keyframe.append(bool(frame.key_frame))
    table = pa.table(
        {
            "frame": pa.array(range(len(pts)), pa.int64()),
            "pts": pa.array(pts, pa.int64()),
            "time_s": pa.array(time_s, pa.float64()),
            "keyframe": pa.array(keyframe, pa.bool_()),
        }
    )
    lance.write_dataset(table, str(path))
    return path


def write_parquet(
    parent: Path,
    name: str = "table.parquet",
    *,
    rows: int = 1_000,
    seed: int = 0,
    duration_s: float | None = None,
    row_group_size: int | None = None,
) -> Path:
    """A Parquet file of sensor readings: ``timestamp_s`` (float64), ``sensor`` (string),
    ``value`` (float64). Row ``i`` is at ``i * duration_s / rows`` s (``i / 100`` s
    without ``duration_s``). ``row_group_size`` rows per row group (pyarrow's default:
    one group), so a reader can skip the groups a clip does not overlap."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _fresh(parent, name)
    rng = np.random.default_rng(seed)
    index = np.arange(rows)
    times = index / 100.0 if duration_s is None else index * (duration_s / rows)
    table = pa.table(
        {
            "timestamp_s": pa.array(times, pa.float64()),
            "sensor": pa.array([_SENSORS[i] for i in rng.integers(0, 6, rows)], pa.string()),
            "value": pa.array(rng.standard_normal(rows), pa.float64()),
        }
    )
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return path


def write_blob(parent: Path, name: str, size_bytes: int, seed: int = 0) -> Path:
    """A file of exactly ``size_bytes`` random bytes, written in bounded memory."""
    if size_bytes < 0:
        raise ValueError("size_bytes must be >= 0")
    path = _fresh(parent, name)
    with open(path, "wb") as f:
        _write_random(f, np.random.default_rng(seed), size_bytes)
    return path


def write_raw_segments(
    parent: Path, *, count: int, size_bytes: int, seed: int = 0, prefix: str = "seg-"
) -> list[Path]:
    """``count`` files of exactly ``size_bytes`` random bytes each, named
    ``<prefix><index>.bin`` with the index counted from 0 and zero-padded (at least six
    digits) so the names' byte order is the stream order. Returned in stream order."""
    if count < 0 or size_bytes < 0:
        raise ValueError("count and size_bytes must be >= 0")
    width = max(6, len(str(count - 1)))
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = _fresh(parent, f"{prefix}{index:0{width}d}.bin")
        with open(path, "wb") as f:
            _write_random(f, rng, size_bytes)
        paths.append(path)
    return paths


def _fresh(parent: Path, name: str) -> Path:
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path = parent / name
    if path.exists():
        raise FileExistsError(path)
    return path


def _write_random(f: BinaryIO, rng: np.random.Generator, size_bytes: int) -> None:
    blocks = size_bytes // _RANDOM_BLOCK_BYTES
    f.writelines(rng.bytes(_RANDOM_BLOCK_BYTES) for _ in range(blocks))
    f.write(rng.bytes(size_bytes % _RANDOM_BLOCK_BYTES))


def _grain_fields(
    rng: np.random.Generator, grain: int, shape: tuple[int, int, int]
) -> np.ndarray | None:
    """Noise fields of values in ``[0, grain]``, drawn once and cycled through (a fresh
    draw per frame costs more than encoding it). There are more of them than the 16
    reference frames H.264 allows, so no frame can borrow a recent frame's noise."""
    if not grain:
        return None
    fields = np.frombuffer(rng.bytes(_GRAIN_FIELDS * int(np.prod(shape))), dtype=np.uint8)
    return (fields % (grain + 1)).reshape(_GRAIN_FIELDS, *shape)


def _dim(values: np.ndarray, grain: int) -> np.ndarray:
    """``values`` scaled into ``[0, 255 - grain]``."""
    return (values.astype(np.uint16) * (255 - grain) // 255).astype(np.uint8)


def _video_codec() -> str:
    import av

    for codec in ("libx264", "h264", "mpeg4"):
        try:
            av.codec.Codec(codec, "w")
        except ValueError:  # UnknownCodecError: not built into this FFmpeg
            continue
        return codec
    raise RuntimeError("PyAV's FFmpeg has neither an H.264 nor an MPEG-4 encoder")
