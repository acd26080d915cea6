"""The fixture builders write files the real libraries open, with the promised content."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import av
import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from ursa import Profile
from ursa.testing import RowSpec, assets, build_recording, frame_number_of


def _expected_eeg(channels: int, samples: int, dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((samples, channels), dtype=np.float32).T * 50).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_zarr_reads_back_the_documented_values(tmp_path: Path, dtype: str) -> None:
    path = assets.write_zarr(
        tmp_path, channels=3, samples=2_500, chunk_samples=1_000, dtype=dtype, seed=7
    )
    assert path == tmp_path / "eeg.zarr"
    group = zarr.open_group(path, mode="r")
    data = group["data"]
    assert isinstance(data, zarr.Array)
    assert data.shape == (3, 2_500)
    assert data.chunks == (3, 1_000)
    assert data.dtype == np.dtype(dtype)
    assert group.attrs["sampling_rate_hz"] == 250.0
    assert data.attrs["sampling_rate_hz"] == 250.0
    np.testing.assert_array_equal(data[:], _expected_eeg(3, 2_500, dtype, seed=7))


def test_zarr_chunks_are_uncompressed_and_of_predictable_size(tmp_path: Path) -> None:
    path = assets.write_zarr(tmp_path, channels=8, samples=5_500, chunk_samples=1_000)
    chunks = sorted((path / "data" / "c").rglob("*"))
    chunk_files = [c for c in chunks if c.is_file()]
    assert len(chunk_files) == 6  # ceil(5_500 / 1_000), the partial one stored full size
    assert {c.stat().st_size for c in chunk_files} == {8 * 1_000 * 4}


def test_zarr_values_do_not_depend_on_the_write_slab(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(assets, "_ZARR_SLAB_BYTES", 1)  # one chunk per write
    path = assets.write_zarr(tmp_path, channels=2, samples=950, chunk_samples=100, seed=3)
    data = zarr.open_group(path, mode="r")["data"]
    assert isinstance(data, zarr.Array)
    np.testing.assert_array_equal(data[:], _expected_eeg(2, 950, "float32", seed=3))


def test_builders_refuse_to_replace(tmp_path: Path) -> None:
    assets.write_zarr(tmp_path, samples=10, chunk_samples=10)
    with pytest.raises(FileExistsError):
        assets.write_zarr(tmp_path, samples=10, chunk_samples=10)
    assets.write_blob(tmp_path, "b.bin", 1)
    with pytest.raises(FileExistsError):
        assets.write_blob(tmp_path, "b.bin", 1)


def test_lance_events(tmp_path: Path) -> None:
    path = assets.write_lance_events(tmp_path, rows=500, seed=1)
    assert path == tmp_path / "events.lance"
    dataset = lance.dataset(str(path))
    assert dataset.count_rows() == 500
    table = dataset.to_table()
    assert table.schema.names == ["timestamp_s", "label", "value"]
    assert table.schema.field("timestamp_s").type == pa.float64()
    assert table.schema.field("label").type == pa.string()
    assert table.schema.field("value").type == pa.int64()
    assert np.all(np.diff(table.column("timestamp_s").to_numpy()) > 0)
    again = lance.dataset(str(assets.write_lance_events(tmp_path, "again.lance", rows=500, seed=1)))
    assert again.to_table().equals(table)


def test_mp4_decodes_and_frame_index_matches(tmp_path: Path) -> None:
    mp4 = assets.write_mp4(tmp_path, frames=45, width=64, height=48, fps=15, seed=2)
    assert mp4 == tmp_path / "camera.mp4"
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        decoded = [(f.pts, f.key_frame, f.width, f.height) for f in container.decode(stream)]
    assert len(decoded) == 45
    assert {(w, h) for _, _, w, h in decoded} == {(64, 48)}

    index_path = assets.write_frame_index(mp4)
    assert index_path == tmp_path / "camera.mp4.lance"
    index = lance.dataset(str(index_path)).to_table()
    assert index.schema.names == ["frame", "pts", "time_s", "keyframe"]
    assert index.schema.field("keyframe").type == pa.bool_()
    assert index.column("frame").to_pylist() == list(range(45))
    assert index.column("pts").to_pylist() == [pts for pts, _, _, _ in decoded]
    assert index.column("keyframe").to_pylist() == [key for _, key, _, _ in decoded]
    assert index.column("keyframe").to_pylist()[0] is True
    assert sum(index.column("keyframe").to_pylist()) == 3  # one per second at 15 fps
    np.testing.assert_allclose(index.column("time_s").to_numpy(), np.arange(45) / 15)
    with pytest.raises(FileExistsError):
        assets.write_frame_index(mp4)


def test_parquet(tmp_path: Path) -> None:
    path = assets.write_parquet(tmp_path, rows=321, seed=4)
    table = pq.read_table(path)
    assert table.num_rows == 321
    assert table.schema.names == ["timestamp_s", "sensor", "value"]
    again = assets.write_parquet(tmp_path, "again.parquet", rows=321, seed=4)
    assert again.read_bytes() == path.read_bytes()


def test_blob_has_exact_size_and_is_seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assets, "_RANDOM_BLOCK_BYTES", 1_000)  # exercise several blocks
    a = assets.write_blob(tmp_path, "a.bin", 2_500, seed=5)
    b = assets.write_blob(tmp_path, "b.bin", 2_500, seed=5)
    c = assets.write_blob(tmp_path, "c.bin", 2_500, seed=6)
    assert a.stat().st_size == 2_500
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert assets.write_blob(tmp_path, "empty.bin", 0).stat().st_size == 0


def test_raw_segments_sizes_and_order(tmp_path: Path) -> None:
    paths = assets.write_raw_segments(tmp_path / "raw", count=12, size_bytes=777, seed=8)
    assert [p.name for p in paths][:2] == ["seg-000000.bin", "seg-000001.bin"]
    assert paths == sorted((tmp_path / "raw").iterdir(), key=lambda p: p.name.encode())
    assert all(p.stat().st_size == 777 for p in paths)
    assert len({p.read_bytes() for p in paths}) == 12
    other = assets.write_raw_segments(tmp_path / "raw", count=1, size_bytes=0, prefix="part-")
    assert [p.name for p in other] == ["part-000000.bin"]


def test_module_imports_without_pyav() -> None:
    code = "import sys; sys.modules['av'] = None; import ursa.testing.assets"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_mp4_frames_carry_their_own_number(tmp_path: Path) -> None:
    mp4 = assets.write_mp4(tmp_path, frames=70, width=160, height=120, fps=30, seed=3)
    with av.open(str(mp4)) as container:
        numbers = [frame_number_of(f.to_ndarray(format="rgb24")) for f in container.decode()]
    assert numbers == list(range(70))


def test_parquet_row_groups_and_duration(tmp_path: Path) -> None:
    path = assets.write_parquet(tmp_path, rows=1_000, duration_s=20.0, row_group_size=128)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 8  # ceil(1000 / 128)
    times = pq.read_table(path).column("timestamp_s").to_numpy()
    np.testing.assert_array_equal(times, np.arange(1_000) * (20.0 / 1_000))
    assert times[-1] < 20.0


def test_recording_assets_agree_with_duration(local_profile: object) -> None:
    from ursa.testing import RowSpec, build_recording

    rows = [
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, sampling_rate_hz=100.0),
        RowSpec("events", asset_format="lance", segments=1, segment_size=1, events=200),
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_fps=10),
        RowSpec("imu", asset_format="parquet", segments=1, segment_size=1, table_rows=300),
    ]
    rec = build_recording(local_profile, rows, seed=5, duration_s=7.5)  # type: ignore[arg-type]
    by_modality = {r.modality: r for r in rec.rows}
    assert {r.duration_s for r in rec.rows} == {7.5}

    def local(uri: str | None) -> str:
        assert uri is not None and uri.startswith("file://")
        return uri[len("file://") :]

    eeg = zarr.open_group(local(by_modality["eeg"].storage_uri), mode="r")["data"]
    assert isinstance(eeg, zarr.Array)
    assert eeg.shape[1] == 750  # 7.5 s at 100 Hz: samples 0 .. 749 at i / 100
    events = lance.dataset(local(by_modality["events"].storage_uri)).to_table()
    ts = events.column("timestamp_s").to_numpy()
    assert len(ts) == 200 and ts.min() >= 0 and ts.max() < 7.5
    index = lance.dataset(local(by_modality["camera"].storage_uri) + ".lance").to_table()
    np.testing.assert_allclose(index.column("time_s").to_numpy(), np.arange(75) / 10)
    imu = pq.read_table(local(by_modality["imu"].storage_uri)).column("timestamp_s").to_numpy()
    assert len(imu) == 300 and imu.min() == 0 and imu.max() < 7.5


def test_rowspec_camera_knobs_reach_the_stored_video(
    profile: Profile, boto: Any, tmp_path: Path
) -> None:
    """The benchmark's camera: the size, keyframe interval and bit rate asked for, read
    back from the store by boto3 and PyAV, and frames that still say which they are."""
    spec = RowSpec(
        "camera",
        asset_format="mp4",
        segments=1,
        segment_size=1,
        mp4_width=320,
        mp4_height=240,
        mp4_keyframe_interval=20,
        mp4_bit_rate=1_000_000,
        mp4_grain=16,
        mp4_preset="ultrafast",
    )
    rec = build_recording(profile, [spec], seed=4401, duration_s=4.0)
    uri = rec.rows[0].storage_uri
    assert uri is not None and uri.startswith("s3://")
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    mp4 = tmp_path / "camera.mp4"
    boto.download_file(bucket, key, str(mp4))
    with av.open(str(mp4)) as container:
        stream = container.streams.video[0]
        size = (stream.codec_context.width, stream.codec_context.height)
        frames = [
            (f.key_frame, f.width, f.height, frame_number_of(f.to_ndarray(format="rgb24")))
            for f in container.decode(stream)
        ]
    assert size == (320, 240)
    assert {(w, h) for _, w, h, _ in frames} == {(320, 240)}
    assert [number for *_, number in frames] == list(range(120))
    assert [i for i, (key_frame, *_) in enumerate(frames) if key_frame] == [0, 20, 40, 60, 80, 100]
    bits_per_s = mp4.stat().st_size * 8 / 4.0
    assert 0.75 < bits_per_s / 1_000_000 < 1.25, bits_per_s
