"""query() against a Lance catalog on SeaweedFS, written by ursa.testing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from ursa import ConfigurationError, DataInterface, ModalityRow, Profile, QueryResult
from ursa.catalog import SCHEMA
from ursa.testing import Recording, build_recording


@pytest.fixture(scope="module")
def second(profile: Profile, recording: Recording) -> Recording:
    return build_recording(profile, seed=1)


def test_default_status_is_ingested(profile: Profile, recording: Recording) -> None:
    result = DataInterface(profile).query(recording_hash=recording.recording_hash)
    assert {r.status for r in result} == {"ingested"}
    assert [(r.modality, r.worker_id) for r in result] == [
        ("camera", "left"),
        ("camera", "right"),
        ("eeg", ""),
        ("events", ""),
        ("imu", ""),
    ]


def test_status_filters(profile: Profile, recording: Recording) -> None:
    data = DataInterface(profile)
    h = recording.recording_hash
    assert [r.modality for r in data.query(recording_hash=h, status="raw")] == ["audio"]
    assert [r.modality for r in data.query(recording_hash=h, status="ingesting")] == ["gaze"]
    assert [r.modality for r in data.query(recording_hash=h, status="failed")] == ["emg"]
    assert len(data.query(recording_hash=h, status="all")) == len(recording.rows)


def test_filters_combine_and_accept_lists(
    profile: Profile, recording: Recording, second: Recording
) -> None:
    data = DataInterface(profile)
    both = [recording.recording_hash, second.recording_hash]
    result = data.query(recording_hash=both, modality=["eeg", "camera"], worker_id="left")
    assert [(r.recording_hash, r.modality, r.worker_id) for r in result] == sorted(
        (h, "camera", "left") for h in both
    )
    assert result.recording_hashes == tuple(sorted(both))


def test_where_is_anded_with_status(profile: Profile, recording: Recording) -> None:
    data = DataInterface(profile)
    result = data.query(recording_hash=recording.recording_hash, where="asset_format = 'mp4'")
    assert {r.worker_id for r in result} == {"left", "right"}
    none = data.query(
        recording_hash=recording.recording_hash, status="raw", where="asset_format = 'mp4'"
    )
    assert len(none) == 0


def test_no_match_is_empty_not_error(profile: Profile, recording: Recording) -> None:
    result = DataInterface(profile).query(recording_hash="0" * 64)
    assert len(result) == 0
    assert list(result) == []
    assert repr(result) == "QueryResult([])"


@pytest.mark.parametrize("bad", ["abc", "A" * 64, "g" * 64, "0" * 63, 42])
def test_malformed_hash_is_value_error(profile: Profile, bad: object) -> None:
    with pytest.raises(ValueError, match="recording_hash"):
        DataInterface(profile).query(recording_hash=bad)  # type: ignore[arg-type]


def test_unknown_status_is_value_error(profile: Profile) -> None:
    with pytest.raises(ValueError, match="status"):
        DataInterface(profile).query(status="done")


def test_quotes_in_values_cannot_inject_sql(profile: Profile, recording: Recording) -> None:
    data = DataInterface(profile)
    result = data.query(recording_hash=recording.recording_hash, modality="eeg' OR '1'='1")
    assert len(result) == 0


def test_query_result_is_an_immutable_ordered_sequence(
    profile: Profile, recording: Recording
) -> None:
    result = DataInterface(profile).query(recording_hash=recording.recording_hash, status="all")
    rows = list(result)
    assert rows == sorted(rows, key=lambda r: (r.recording_hash, r.modality, r.worker_id))
    assert result[0] == rows[0] and isinstance(result[1:3], QueryResult)
    assert isinstance(result[0], ModalityRow)
    with pytest.raises(AttributeError):
        result._rows = ()  # type: ignore[misc]
    with pytest.raises(TypeError):
        result[0] = rows[1]  # type: ignore[index]
    with pytest.raises((AttributeError, TypeError)):
        rows[0].status = "raw"  # type: ignore[misc]
    assert "camera/left ingested mp4" in repr(result)


def test_to_arrow_has_the_catalog_schema(profile: Profile, recording: Recording) -> None:
    result = DataInterface(profile).query(recording_hash=recording.recording_hash)
    table = result.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.schema.equals(SCHEMA)
    assert table.column("modality").to_pylist() == [r.modality for r in result]
    assert table.column("started_at").type == pa.timestamp("us", tz="UTC")


def test_filters_are_pushed_down_to_lance(
    profile: Profile, recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter reaches Lance's scanner; nothing is filtered in Python afterwards."""
    data = DataInterface(profile)
    dataset = data._dataset()
    seen: list[object] = []
    real = dataset.to_table

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs.get("filter"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "to_table", spy)
    data.query(recording_hash=recording.recording_hash, modality="eeg")
    assert seen == [
        f"recording_hash IN ('{recording.recording_hash}') AND modality IN ('eeg') "
        "AND status = 'ingested'"
    ]


def test_a_missing_catalog_is_a_clear_error(tmp_path: Path) -> None:
    profile = Profile(name="scratch", root=str(tmp_path / "nothing-here"))
    with pytest.raises(ConfigurationError, match="cannot open the catalog at"):
        DataInterface(profile).query()


def test_local_catalog_path(local_profile: Profile) -> None:
    rec = build_recording(local_profile, seed=3)
    result = DataInterface(local_profile).query(recording_hash=rec.recording_hash)
    assert len(result) == 5
    assert all(r.raw_storage_uri.startswith("file://") for r in result)
