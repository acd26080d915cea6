"""Which rows a verb decodes, checked before any byte moves (SPEC §9): only ingested rows
with a known asset format; ``modalities=`` takes keys (``"camera/left"``) or modality
names (``"camera"``), and one that matches no row of the target is an error."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ursa.catalog import ModalityRow, QueryResult
from ursa.delivery.assets import FORMATS, entry_key
from ursa.plan import unique_rows


def select_rows(
    target: QueryResult | Iterable[QueryResult], modalities: str | Sequence[str] | None
) -> tuple[ModalityRow, ...]:
    rows = unique_rows(target)
    if modalities is not None:
        wanted = [modalities] if isinstance(modalities, str) else list(modalities)
        if not all(isinstance(m, str) for m in wanted):
            raise ValueError(f"modalities must be strings, got {modalities!r}")
        known = {entry_key(r) for r in rows} | {r.modality for r in rows}
        unknown = [m for m in wanted if m not in known]
        if unknown:
            have = ", ".join(sorted({entry_key(r) for r in rows})) or "no rows"
            raise ValueError(f"unknown modality {unknown[0]!r}: the target has {have}")
        rows = tuple(r for r in rows if r.modality in wanted or entry_key(r) in wanted)
    for row in rows:
        where = f"{row.recording_hash[:12]}/{entry_key(row)}"
        if row.status == "raw":
            raise ValueError(
                f"{where} is a raw row: raw segments are bytes, not data; "
                "use download(..., source='raw')"
            )
        if row.status != "ingested":
            raise ValueError(f"{where} is {row.status}: it has no processed asset to decode")
        if row.asset_format not in FORMATS or row.storage_uri is None:
            raise ValueError(f"{where}: cannot decode asset_format {row.asset_format!r}")
    return rows


def by_recording(rows: Iterable[ModalityRow]) -> dict[str, list[ModalityRow]]:
    """Rows grouped by recording, recordings in first-seen order."""
    groups: dict[str, list[ModalityRow]] = {}
    for row in rows:
        groups.setdefault(row.recording_hash, []).append(row)
    return groups
