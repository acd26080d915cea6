"""What the CLI prints: the ``query`` table (80 columns: short hashes, ``--long`` for full
ones and storage URIs) and a dry run's plan, as text or as one JSON object."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from ursa.catalog import QueryResult
from ursa.plan import DownloadPlan
from ursa.progress import human_bytes

SHORT_HASH = 12  # ≥ 8 hex: a prefix the CLI accepts back, unique in any real catalog


def rows_table(result: QueryResult, profile_name: str, *, long: bool) -> Table:
    n = len(result)
    table = Table(
        title=f"{n} row{'s' * (n != 1)} in profile {profile_name!r}",
        caption=None if long or not n else "hashes shortened: pass --long for full ones",
    )
    hash_style = {"overflow": "fold"} if long else {"no_wrap": True}
    table.add_column("recording", **hash_style)
    table.add_column("modality")
    table.add_column("worker")
    table.add_column("status")
    table.add_column("format")
    table.add_column("duration", justify="right")
    if long:
        table.add_column("storage", overflow="fold")
    for row in result:
        cells = [
            row.recording_hash if long else row.recording_hash[:SHORT_HASH],
            row.modality,
            row.worker_id or "—",
            row.status,
            row.asset_format or "—",
            "—" if row.duration_s is None else f"{row.duration_s:,.0f} s",
        ]
        if long:
            cells.append(row.storage_uri or row.raw_storage_uri)
        table.add_row(*cells)
    return table


def _rows(plan: DownloadPlan) -> list[dict[str, Any]]:
    per_row = [{"files": 0, "bytes": 0} for _ in plan.rows]
    for f in plan.files:
        per_row[f.row]["files"] += 1
        per_row[f.row]["bytes"] += f.size
    return [
        {
            "recording_hash": row.recording_hash,
            "modality": row.modality,
            "worker_id": row.worker_id,
            **counts,
        }
        for row, counts in zip(plan.rows, per_row, strict=True)
    ]


def plan_record(plan: DownloadPlan, blocked: bool) -> dict[str, Any]:
    """The dry run as one JSON-ready object."""
    return {
        "dry_run": True,
        "dest": str(plan.dest),
        "files": len(plan.files),
        "bytes": plan.bytes_total,
        "rows": _rows(plan),
        "collisions": [str(p) for p in plan.collisions],
        "would_fail": blocked,
        "files_skipped": plan.files_skipped,
        "bytes_skipped": plan.bytes_skipped,
        "files_resumed": plan.files_resumed,
        "bytes_resumed": plan.bytes_resumed,
        "files_to_fetch": plan.files_to_fetch,
        "bytes_to_fetch": plan.bytes_to_fetch,
        "bytes_free": plan.bytes_free,
    }


def plan_text(plan: DownloadPlan, blocked: bool) -> str:
    """The dry run for a reader: totals, a line per row, the paths already taken."""
    files = len(plan.files)
    lines = [
        f"Dry run: {files:,} file{'s' * (files != 1)}, {human_bytes(plan.bytes_total)} "
        f"into {plan.dest} (nothing written)"
    ]
    for row in _rows(plan):
        where = f"{row['recording_hash'][:SHORT_HASH]} {row['modality']} / "
        where += row["worker_id"] or "default"
        n = row["files"]
        lines.append(f"  {where}: {n:,} file{'s' * (n != 1)}, {human_bytes(row['bytes'])}")
    if plan.files_skipped or plan.files_resumed:
        lines.append(
            f"Resume: {plan.files_skipped:,} identical (kept, {human_bytes(plan.bytes_skipped)}), "
            f"{plan.files_resumed:,} continued ({human_bytes(plan.bytes_resumed)} held), "
            f"{plan.files_to_fetch:,} to fetch ({human_bytes(plan.bytes_to_fetch)})"
        )
    if plan.bytes_free is not None and plan.bytes_to_fetch > plan.bytes_free:
        lines.append(
            f"Not enough space: {human_bytes(plan.bytes_to_fetch)} to fetch, "
            f"{human_bytes(plan.bytes_free)} free"
        )
    if plan.collisions:
        count = len(plan.collisions)
        verdict = "pass --overwrite to replace" if blocked else "--overwrite replaces"
        exist = "paths already exist" if count != 1 else "path already exists"
        lines.append(f"{count:,} {exist} ({verdict}):")
        lines += [f"  {p}" for p in plan.collisions[:10]]
        if count > 10:
            lines.append(f"  … and {count - 10:,} more")
    return "\n".join(lines)
