"""materialize(): clips read in place in SeaweedFS, checked value for value against the
assets copied out with boto3 and opened with zarr, pyarrow, pylance and PyAV."""

from __future__ import annotations

import datetime as dt
import multiprocessing
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pytest
import xarray as xr

import delivery_oracle as oracle
from ursa import DataInterface, Profile
from ursa.catalog import ModalityRow
from ursa.testing import Recording, RowSpec, build_recording, frame_number_of

DURATION = 20.0
FPS = 10
ROWS = (
    # 250 samples (8,000 bytes) per chunk: 20 chunks over 20 s.
    RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunk_bytes=8_000),
    RowSpec("events", asset_format="lance", segments=1, segment_size=1, events=300),
    RowSpec("camera", "left", asset_format="mp4", segments=1, segment_size=1, mp4_fps=FPS),
    RowSpec("camera", "right", asset_format="mp4", segments=1, segment_size=1, mp4_fps=FPS),
    RowSpec(
        "imu",
        asset_format="parquet",
        segments=1,
        segment_size=1,
        table_rows=4_000,
        table_row_group_rows=400,
    ),
    RowSpec("audio", status="raw", segments=1, segment_size=1),
    RowSpec("gaze", status="ingesting", segments=1, segment_size=1),
    RowSpec("emg", status="failed", segments=1, segment_size=1),
)


@pytest.fixture(scope="module")
def clip_recording(profile: Profile) -> Recording:
    return build_recording(profile, ROWS, seed=911, duration_s=DURATION)


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oracle")


def row(rec: Recording, modality: str, worker: str = "") -> ModalityRow:
    return next(r for r in rec.rows if r.modality == modality and r.worker_id == worker)


def ingested(data: DataInterface, rec: Recording, modality: Any = None) -> Any:
    return data.query(recording_hash=rec.recording_hash, modality=modality)


@pytest.mark.parametrize(
    ("start", "stop"), [(3.0, 5.0), (2.9981, 3.0021), (0.0, 0.5), (19.5, 25.0)]
)
def test_eeg_clip_is_every_sample_in_the_half_open_span(
    profile: Profile, clip_recording: Recording, boto: Any, copies: Path, start: float, stop: float
) -> None:
    data = DataInterface(profile)
    (rec,) = data.materialize(ingested(data, clip_recording, "eeg"), start=start, stop=stop)
    got = rec["eeg"]
    assert isinstance(got, xr.Dataset)
    values, fs = oracle.eeg(boto, row(clip_recording, "eeg"), copies / f"eeg-{start}")
    times = np.arange(values.shape[1]) / fs
    keep = (times >= start) & (times < stop)
    assert got["data"].dims == ("channel", "time")
    assert got["time"].dtype == np.float64
    np.testing.assert_array_equal(got["time"].to_numpy(), times[keep])
    np.testing.assert_array_equal(got["data"].to_numpy(), values[:, keep])
    assert got.attrs["sampling_rate_hz"] == fs == 250.0


def test_tables_are_every_row_in_the_span(
    profile: Profile, clip_recording: Recording, boto: Any, copies: Path
) -> None:
    data = DataInterface(profile)
    (rec,) = data.materialize(
        ingested(data, clip_recording, ["imu", "events"]), start=4.25, stop=9.0
    )
    assert set(rec) == {"imu", "events"}
    for modality in ("imu", "events"):
        got = rec[modality]
        assert isinstance(got, pa.Table)
        full = oracle.table(boto, row(clip_recording, modality), copies / f"t-{modality}")
        expected = oracle.rows_in(full, 4.25, 9.0)
        assert 0 < got.num_rows < full.num_rows
        assert got.equals(expected), modality


def test_datetimes_are_converted_with_started_at(
    profile: Profile, clip_recording: Recording
) -> None:
    data = DataInterface(profile)
    target = ingested(data, clip_recording, "eeg")
    t0 = row(clip_recording, "eeg").started_at
    assert t0 is not None
    (by_float,) = data.materialize(target, start=1.0, stop=2.0)
    (by_time,) = data.materialize(
        target, start=t0 + dt.timedelta(seconds=1), stop=t0 + dt.timedelta(seconds=2)
    )
    assert by_time["eeg"].identical(by_float["eeg"])
    assert by_float.started_at == t0


def _decode_locally(path: Path) -> dict[int, np.ndarray]:
    with av.open(str(path)) as container:
        return {f.pts: f.to_ndarray(format="rgb24") for f in container.decode(video=0)}


@pytest.mark.parametrize(
    ("start", "stop"),
    [
        (2.0, 3.0),  # starts on a keyframe (one per second), ends exactly on a frame time
        (2.35, 3.7),  # starts between keyframes
        (4.05, 4.1),  # between two frames: no frame
        (0.0, 0.1),  # the first frame alone
        (19.85, 30.0),  # the last frames
    ],
)
def test_video_frames_are_exactly_those_in_the_span(
    profile: Profile,
    clip_recording: Recording,
    boto: Any,
    copies: Path,
    start: float,
    stop: float,
) -> None:
    data = DataInterface(profile)
    (rec,) = data.materialize(ingested(data, clip_recording, "camera"), start=start, stop=stop)
    assert set(rec) == {"camera/left", "camera/right"}
    clip = rec["camera/left"]
    camera = row(clip_recording, "camera", "left")
    index = oracle.frame_index(boto, camera, copies / f"idx-{start}")
    times = index.column("time_s").to_numpy()
    expected = np.flatnonzero((times >= start) & (times < stop))
    assert len(clip) == len(expected)
    np.testing.assert_array_equal(clip.frame_numbers, expected)
    np.testing.assert_array_equal(clip.times, times[expected])
    frames = clip.frames()
    assert frames.dtype == np.uint8
    assert frames.shape == (len(expected), 120, 160, 3)
    assert [frame_number_of(f) for f in frames] == list(expected)
    assert camera.storage_uri is not None
    local = _decode_locally(oracle.copy_out(boto, camera.storage_uri, copies / f"mp4-{start}"))
    pts = index.column("pts").to_numpy()
    for frame, i in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame, local[int(pts[i])])


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def test_decoded_frames_are_held_once(profile: Profile) -> None:
    """frames() fills one array as it decodes: a 720p clip of 300 frames is 830 MB, and
    holding it twice (every decoded frame, then their stack) can exhaust a worker's
    memory. Measured as the process's peak RSS (PyAV's frames are not Python objects)."""
    big = RowSpec(
        "camera", asset_format="mp4", segments=1, segment_size=1, mp4_fps=10,
        mp4_width=640, mp4_height=480,
    )  # fmt: skip
    rec_spec = build_recording(profile, [big], seed=913, duration_s=10.0)
    data = DataInterface(profile)
    (rec,) = data.materialize(ingested(data, rec_spec, "camera"), start=0.0, stop=10.0)
    clip = rec["camera"]
    Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
    before = _rss_kib("VmRSS")
    frames = clip.frames()
    grew = (_rss_kib("VmHWM") - before) * 1024
    assert frames.shape == (100, 480, 640, 3)
    assert grew < 1.3 * frames.nbytes, f"peak grew {grew:,} bytes for a {frames.nbytes:,}-byte clip"


def test_whole_recording_and_result_shape(profile: Profile, clip_recording: Recording) -> None:
    data = DataInterface(profile)
    result = data.materialize(ingested(data, clip_recording))
    assert [r.recording_hash for r in result] == [clip_recording.recording_hash]
    (rec,) = result
    assert sorted(rec) == ["camera/left", "camera/right", "eeg", "events", "imu"]
    assert rec["eeg"].sizes["time"] == 5_000
    assert len(rec["camera/right"]) == DURATION * FPS
    assert rec["imu"].num_rows == 4_000
    with pytest.raises(TypeError):
        rec["eeg"] = None  # type: ignore[index]


def _materialize_in_child(data: DataInterface, target: Any, queue: Any) -> None:
    (rec,) = data.materialize(target, start=1.0, stop=2.0)
    queue.put(rec["eeg"]["data"].to_numpy())


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_forked_child_reads_with_its_own_engine(
    profile: Profile, clip_recording: Recording
) -> None:
    # A DataLoader worker forked after the parent read: readers kept for reuse belong to
    # the process that built them, so the child must not inherit (and hang on) them.
    data = DataInterface(profile)
    target = ingested(data, clip_recording, "eeg")
    (parent,) = data.materialize(target, start=1.0, stop=2.0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_materialize_in_child, args=(data, target, queue))
    child.start()
    try:
        got = queue.get(timeout=20)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    np.testing.assert_array_equal(got, parent["eeg"]["data"].to_numpy())
