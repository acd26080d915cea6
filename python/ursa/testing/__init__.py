"""Fixture recordings for tests, the demo and the benchmarks: real Zarr, Lance, MP4 and
Parquet assets plus raw segments, uploaded into any profile's stores with catalog rows.
This is the one place that knows how to make a recording."""

from ursa.testing.framecode import frame_number_of
from ursa.testing.recordings import (
    DEFAULT_ROWS,
    Recording,
    RowSpec,
    build_recording,
    recording_hash_for,
    write_catalog,
)

__all__ = [
    "DEFAULT_ROWS",
    "Recording",
    "RowSpec",
    "build_recording",
    "frame_number_of",
    "recording_hash_for",
    "write_catalog",
]
