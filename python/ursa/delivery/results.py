"""What the verbs return: ``RecordingData`` (materialize) and ``Window`` (stream), both
read-only mappings from ``"<modality>"`` / ``"<modality>/<worker_id>"`` to the decoded
entry (``xarray.Dataset``, ``pyarrow.Table`` or ``VideoClip``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np


class _Entries(Mapping[str, Any]):
    def __init__(self, entries: Mapping[str, Any]) -> None:
        self._entries = MappingProxyType(dict(entries))

    def __getitem__(self, key: str) -> Any:
        return self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class RecordingData(_Entries):
    """One recording's clip: ``rec["eeg"]``, ``rec["camera/left"]``."""

    def __init__(
        self, recording_hash: str, started_at: dt.datetime | None, entries: Mapping[str, Any]
    ) -> None:
        super().__init__(entries)
        self.recording_hash = recording_hash
        self.started_at = started_at

    def __repr__(self) -> str:
        return f"RecordingData({self.recording_hash[:12]}…, keys={list(self)})"


class Window(_Entries):
    """Window ``index`` (counted per recording) of a stream: ``[start, stop)`` of one
    recording. ``is_pad`` maps each key to a boolean array over that entry's samples, rows
    or frames: True where a signal was padded (zeros) past its end to keep
    ``round(window * fs)`` samples; tables and video are never padded, so theirs are all
    False, as is every array of a full window."""

    def __init__(
        self,
        recording_hash: str,
        index: int,
        start: float,
        stop: float,
        entries: Mapping[str, Any],
        is_pad: Mapping[str, np.ndarray],
    ) -> None:
        super().__init__(entries)
        self.recording_hash = recording_hash
        self.index = index
        self.start = start
        self.stop = stop
        self.is_pad: Mapping[str, np.ndarray] = MappingProxyType(dict(is_pad))

    @property
    def padded(self) -> bool:
        return any(bool(p.any()) for p in self.is_pad.values())

    def __repr__(self) -> str:
        return (
            f"Window({self.index}, {self.recording_hash[:12]}…, "
            f"[{self.start:g}, {self.stop:g}) s, keys={list(self)})"
        )
