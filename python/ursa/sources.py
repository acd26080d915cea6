"""Source rules: which bytes each catalog row contributes to a download (the seed page's
table), and how a processed asset is laid out in its bucket.

========== ============ ======================
source=    raw row      ingested row
========== ============ ======================
"auto"     raw segments processed asset
"raw"      raw segments raw segments
"processed" ValueError  processed asset
========== ============ ======================

``ingesting`` and ``failed`` rows are catalog markers, not delivery inputs: ValueError under
every source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ursa.catalog import ModalityRow, check_token

Source = Literal["auto", "raw", "processed"]
SOURCES: tuple[Source, ...] = ("auto", "raw", "processed")


@dataclass(frozen=True)
class Part:
    """One piece of a row's delivery.

    ``uri`` is a prefix (``is_prefix``: every object below it) or one object. ``name`` is
    the directory the objects land in (a directory asset's basename), or None when each
    object lands under its own key relative to the prefix (raw segments) or its basename
    (a single-object asset). A named directory is staged and published whole.
    """

    uri: str
    is_prefix: bool
    name: str | None = None
    processed: bool = False


def check_source(source: str) -> Source:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    return source


def parts_for(row: ModalityRow, source: Source) -> list[Part]:
    """The parts ``row`` contributes under ``source``, asset first, companions after."""
    where = f"{row.recording_hash}/{row.modality}/{row.worker_id or '-'}"
    if row.status in ("ingesting", "failed"):
        raise ValueError(
            f"row {where} has status {row.status!r}: only raw and ingested rows can be downloaded"
        )
    if row.status == "raw":
        if source == "processed":
            raise ValueError(f"row {where} is not ingested yet: it has no processed asset")
        return [Part(row.raw_storage_uri, is_prefix=True)]
    if source == "raw":
        return [Part(row.raw_storage_uri, is_prefix=True)]
    return _asset_parts(row)


def _asset_parts(row: ModalityRow) -> list[Part]:
    assert row.storage_uri is not None and row.asset_format is not None
    uri = row.storage_uri.rstrip("/")
    name = check_token("asset basename", uri.rsplit("/", 1)[-1])
    if row.asset_format in ("zarr", "lance"):
        return [Part(uri + "/", is_prefix=True, name=name, processed=True)]
    if row.asset_format == "mp4":
        index = Part(uri + ".lance/", is_prefix=True, name=name + ".lance", processed=True)
        return [Part(uri, is_prefix=False, processed=True), index]
    return [Part(uri, is_prefix=False, processed=True)]
