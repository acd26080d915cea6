"""Oracles for the delivery-verb tests that do not go through ursa: the assets copied out
of the store with boto3 and opened with zarr, pyarrow, pylance and PyAV directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr

from ursa.catalog import ModalityRow


def split(uri: str) -> tuple[str, str]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return bucket, key


def copy_out(boto: Any, uri: str, dest: Path) -> Path:
    """Copy the object, or every object under the prefix, at ``uri`` into ``dest``."""
    bucket, key = split(uri)
    listing = boto.list_objects_v2(Bucket=bucket, Prefix=key + "/").get("Contents", [])
    name = key.rsplit("/", 1)[-1]
    if not listing:
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        boto.download_file(bucket, key, str(path))
        return path
    for obj in listing:
        path = dest / name / obj["Key"][len(key) + 1 :]
        path.parent.mkdir(parents=True, exist_ok=True)
        boto.download_file(bucket, obj["Key"], str(path))
    return dest / name


def eeg(boto: Any, row: ModalityRow, dest: Path) -> tuple[np.ndarray, float]:
    assert row.storage_uri is not None
    group = zarr.open_group(copy_out(boto, row.storage_uri, dest), mode="r")
    data = group["data"]
    assert isinstance(data, zarr.Array)
    return np.asarray(data[:]), float(group.attrs["sampling_rate_hz"])  # type: ignore[arg-type]


def table(boto: Any, row: ModalityRow, dest: Path) -> pa.Table:
    assert row.storage_uri is not None
    path = copy_out(boto, row.storage_uri, dest)
    if row.asset_format == "parquet":
        return pq.read_table(path)
    return lance.dataset(str(path)).to_table()


def rows_in(t: pa.Table, start: float, stop: float) -> pa.Table:
    ts = t.column("timestamp_s").to_numpy()
    return t.filter(pa.array((ts >= start) & (ts < stop)))


def frame_index(boto: Any, row: ModalityRow, dest: Path) -> pa.Table:
    assert row.storage_uri is not None
    return lance.dataset(str(copy_out(boto, row.storage_uri + ".lance", dest))).to_table()
