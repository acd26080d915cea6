"""A DataInterface held open (a notebook, a Streamlit app, a service) sees the catalog as
it is at each query: rows added since, and rows whose status changed, without reopening
the dataset when nothing changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lance
import pytest

from ursa import DataInterface, Profile
from ursa.catalog import rows_from_arrow, rows_to_arrow
from ursa.testing import RowSpec, build_recording

ROWS = [
    RowSpec("imu", asset_format="parquet", segments=1, segment_size=64),
    RowSpec("audio", status="raw", segments=2, segment_size=64),
]


@pytest.mark.parametrize("which", ["local", "s3"])
def test_queries_see_rows_added_and_changed_since(
    which: str,
    local_profile: Profile,
    profile: Profile,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if which == "s3":  # a catalog of its own in the session's store
        prof = dataclasses.replace(
            profile, catalog=f"s3://ursa-catalog/fresh-{tmp_path.name}.lance"
        )
    else:
        prof = local_profile
    first = build_recording(prof, ROWS, seed=81)
    opened: list[Any] = []
    real_open = lance.dataset

    def counting_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(args)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(lance, "dataset", counting_open)
    data = DataInterface(prof)
    opens_per_query: list[int] = []

    def query(status: Any) -> Any:
        before = len(opened)
        result = data.query(status=status)
        opens_per_query.append(len(opened) - before)
        return result

    assert query("all").recording_hashes == (first.recording_hash,)
    dataset = data._dataset()
    assert query("raw").recording_hashes == (first.recording_hash,)
    assert data._dataset() is dataset, "an unchanged catalog was reopened"

    second = build_recording(prof, ROWS, seed=82)  # appended by another writer
    assert set(query("all").recording_hashes) == {
        first.recording_hash,
        second.recording_hash,
    }

    # Another writer rewrites the catalog: the first recording's audio is now ingesting.
    uri = data.profile.catalog
    assert uri is not None
    options = _options(data.profile, uri)
    table = real_open(uri, storage_options=options).to_table()
    rows = [
        dataclasses.replace(r, status="ingesting")
        if (r.recording_hash, r.modality) == (first.recording_hash, "audio")
        else r
        for r in rows_from_arrow(table)
    ]
    lance.write_dataset(rows_to_arrow(rows), uri, mode="overwrite", storage_options=options)
    assert query("raw").recording_hashes == (second.recording_hash,)
    assert query("ingesting").recording_hashes == (first.recording_hash,)
    # Opened once; each change moved the open dataset to the new version.
    assert opens_per_query == [1, 0, 0, 0, 0], opens_per_query


def _options(profile: Profile, uri: str) -> dict[str, str]:
    from ursa.stores import lance_options

    return lance_options(profile, uri) or {}
