"""stream(): windows over recordings in SeaweedFS, checked sample for sample and row for
row against the assets copied out with boto3, plus the stream's own promises: len() up
front, fixed sample counts, padding, never crossing recordings, bounded memory, close()."""

from __future__ import annotations

import multiprocessing
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import delivery_oracle as oracle
from ursa import DataInterface, Profile
from ursa.catalog import ModalityRow
from ursa.testing import Recording, RowSpec, build_recording, frame_number_of

DURATION = 12.0
ROWS = (
    RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunk_bytes=8_000),
    RowSpec(
        "imu",
        asset_format="parquet",
        segments=1,
        segment_size=1,
        table_rows=1_200,
        table_row_group_rows=100,
    ),
    RowSpec("events", asset_format="lance", segments=1, segment_size=1, events=100),
    RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_fps=10),
)


@pytest.fixture(scope="module")
def recs(profile: Profile) -> list[Recording]:
    return [build_recording(profile, ROWS, seed=seed, duration_s=DURATION) for seed in (921, 922)]


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stream-oracle")


def row(rec: Recording, modality: str) -> ModalityRow:
    return next(r for r in rec.rows if r.modality == modality)


def target(data: DataInterface, rec: Recording, modality: Any = None) -> Any:
    return data.query(recording_hash=rec.recording_hash, modality=modality)


def test_windows_hold_exact_samples_and_rows(
    profile: Profile, recs: list[Recording], boto: Any, copies: Path
) -> None:
    rec = recs[0]
    data = DataInterface(profile)
    values, fs = oracle.eeg(boto, row(rec, "eeg"), copies / "eeg")
    imu = oracle.table(boto, row(rec, "imu"), copies / "imu")
    events = oracle.table(boto, row(rec, "events"), copies / "events")
    stream = data.stream(target(data, rec), window=1.0, stride=0.5)
    assert len(stream) == 23  # starts 0, 0.5, ..., 11.0: each fits before 12 s
    windows = list(stream)
    assert len(windows) == 23
    for k, w in enumerate(windows):
        assert (w.index, w.start, w.stop, w.recording_hash) == (
            k,
            k * 0.5,
            k * 0.5 + 1.0,
            rec.recording_hash,
        )
        eeg = w["eeg"]
        i0 = k * 125  # 0.5 s at 250 Hz
        assert eeg.sizes["time"] == 250
        np.testing.assert_array_equal(eeg["data"].to_numpy(), values[:, i0 : i0 + 250])
        np.testing.assert_array_equal(eeg["time"].to_numpy(), np.arange(i0, i0 + 250) / fs)
        assert w["imu"].equals(oracle.rows_in(imu, w.start, w.stop))
        assert w["events"].equals(oracle.rows_in(events, w.start, w.stop))
        assert [frame_number_of(f) for f in w["camera"].frames()] == list(range(k * 5, k * 5 + 10))
        assert not any(p.any() for p in w.is_pad.values())


def test_drop_last_false_pads_the_last_window(
    profile: Profile, recs: list[Recording], boto: Any, copies: Path
) -> None:
    rec = recs[0]
    data = DataInterface(profile)
    values, _ = oracle.eeg(boto, row(rec, "eeg"), copies / "eeg-pad")
    kept = data.stream(target(data, rec, "eeg"), window=5.0)
    assert len(kept) == 2
    stream = data.stream(target(data, rec, ["eeg", "imu"]), window=5.0, drop_last=False)
    assert len(stream) == 3
    last = list(stream)[-1]
    assert (last.start, last.stop) == (10.0, 15.0)
    eeg = last["eeg"]["data"].to_numpy()
    assert eeg.shape == (8, 1_250)  # round(5 s * 250 Hz), padded past the end at 12 s
    np.testing.assert_array_equal(eeg[:, :500], values[:, 2_500:])
    np.testing.assert_array_equal(last.is_pad["eeg"], np.arange(1_250) >= 500)
    assert not (eeg[:, 500:]).any()
    assert last["imu"].num_rows == 200 and not last.is_pad["imu"].any()


def test_windows_never_cross_recordings(profile: Profile, recs: list[Recording]) -> None:
    data = DataInterface(profile)
    both = data.query(recording_hash=[r.recording_hash for r in recs], modality="eeg")
    stream = data.stream(both, window=3.0, stride=2.0, drop_last=False)
    windows = list(stream)
    assert len(stream) == len(windows) == 12  # per recording: 0,2,4,6,8 full + 10 padded
    hashes = [w.recording_hash for w in windows]
    assert hashes == sorted(r.recording_hash for r in recs for _ in range(6))
    assert [w.index for w in windows] == list(range(6)) * 2
    assert all(w["eeg"].sizes["time"] == 750 for w in windows)


def test_break_and_close_cancel_and_release(profile: Profile, recs: list[Recording]) -> None:
    data = DataInterface(profile)
    stream = data.stream(target(data, recs[0], "eeg"), window=0.5, prefetch=4)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    assert "closed" in repr(stream)
    assert list(stream) == []
    (asset,) = stream._recordings[0][1]
    assert asset.signal.store.held_bytes == 0  # type: ignore[attr-defined]
    with data.stream(target(data, recs[0], "eeg"), window=0.5) as second:
        next(iter(second))
    assert "closed" in repr(second)


def test_memory_stays_bounded_on_a_long_recording(profile: Profile) -> None:
    # 16 MB of EEG (500 chunks of 32 kB) streamed with a 1 MiB in-flight budget.
    rows = [
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunk_bytes=32_000)
    ]
    rec = build_recording(profile, rows, seed=931, duration_s=2_000.0)
    data = DataInterface(profile)
    stream = data.stream(target(data, rec), window=2.0, prefetch=2, max_inflight_bytes=1 << 20)
    (asset,) = stream._recordings[0][1]
    held = 0
    tracemalloc.start()
    try:
        for w in stream:
            held = max(held, asset.signal.store.held_bytes)  # type: ignore[attr-defined]
            assert w["eeg"].sizes["time"] == 500
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stream) == 1_000
    chunks = 500 * 32_000
    assert chunks <= stream.bytes_fetched < chunks + 4_096  # each chunk once (+ metadata)
    assert held <= 4 * 32_000  # the chunks of the windows in flight, not the recording
    assert peak < 8 << 20, peak


def test_windows_of_any_length_hold_round_window_fs_samples(
    profile: Profile, recs: list[Recording], boto: Any, copies: Path
) -> None:
    # 0.101 s at 250 Hz is 25.25 samples: the half-open span holds 25 or 26 depending on
    # where it starts; every window still has round(0.101 * 250) = 25, from the first
    # sample at or after its start, so windows stack into a batch.
    rec = recs[0]
    data = DataInterface(profile)
    values, fs = oracle.eeg(boto, row(rec, "eeg"), copies / "eeg-odd")
    stream = data.stream(target(data, rec, "eeg"), window=0.101, stride=0.07, stop=3.0)
    windows = list(stream)
    assert len(stream) == len(windows) == 42  # starts 0, 0.07, ..., 2.87 (+ 0.101 <= 3)
    batch = np.stack([w["eeg"]["data"].to_numpy() for w in windows])
    assert batch.shape == (42, 8, 25)
    for w, got in zip(windows, batch, strict=True):
        i0 = int(np.flatnonzero(np.arange(values.shape[1]) / fs >= w.start)[0])
        np.testing.assert_array_equal(got, values[:, i0 : i0 + 25])


def _iterate_in_child(stream: Any, queue: Any) -> None:
    try:
        next(iter(stream))
        queue.put("iterated")
    except RuntimeError as exc:
        queue.put(str(exc))


@pytest.mark.filterwarnings("ignore:lance is not fork-safe")
@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
def test_a_stream_made_in_another_process_says_so(profile: Profile, recs: list[Recording]) -> None:
    data = DataInterface(profile)
    stream = data.stream(target(data, recs[0], "eeg"), window=1.0)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_iterate_in_child, args=(stream, queue))
    child.start()
    try:
        message = queue.get(timeout=20)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
    assert "call stream() in each worker process" in message
    assert next(iter(stream))["eeg"].sizes["time"] == 250  # the parent still reads it
