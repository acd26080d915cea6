"""On-disk layouts: where a row's files land under ``dest``.

- ``by_recording``: ``dest/<recording_hash>/<modality>/[<worker>/]<rel>``
- ``by_modality``:  ``dest/<modality>/<recording_hash>/[<worker>/]<rel>``
- ``flat``:         ``dest/<rel>``

``[<worker>/]`` appears only when worker_id is not ``""``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ursa.catalog import ModalityRow

Layout = Literal["by_recording", "by_modality", "flat"]
LAYOUTS: tuple[Layout, ...] = ("by_recording", "by_modality", "flat")


def check_layout(layout: str) -> Layout:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def row_dir(dest: Path, row: ModalityRow, layout: Layout) -> Path:
    """The directory a row's files (raw segments, or asset basenames) land in."""
    if layout == "flat":
        return dest
    first, second = (
        (row.recording_hash, row.modality)
        if layout == "by_recording"
        else (row.modality, row.recording_hash)
    )
    base = dest / first / second
    return base / row.worker_id if row.worker_id else base
