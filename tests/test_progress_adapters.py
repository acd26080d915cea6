"""The ready-made progress callbacks, driven by real downloads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from ursa import DataInterface, Profile
from ursa.progress import RichProgress, streamlit_progress, tqdm_progress
from ursa.testing import Recording


def test_rich_display_counts_files_and_ends_with_a_summary(
    profile: Profile, recording: Recording, tmp_path: Path
) -> None:
    out = io.StringIO()
    data = DataInterface(profile)
    with RichProgress(Console(file=out, width=120, force_terminal=False)) as display:
        paths = data.download(
            data.query(recording_hash=recording.recording_hash), tmp_path, progress=display
        )
    summary = display.summary
    assert summary.files == len(paths)
    assert summary.bytes == sum(p.stat().st_size for p in paths)
    assert [m for m, _ in summary.modalities][:2] == ["camera / left", "camera / right"]
    assert "✓ eeg / default: 10 files" in out.getvalue()
    assert summary.line().startswith(f"Done — {len(paths)} files, {summary.bytes:,} bytes")


def test_tqdm_bar_reaches_the_total(profile: Profile, recording: Recording, tmp_path: Path) -> None:
    out = io.StringIO()
    data = DataInterface(profile)
    callback = tqdm_progress(file=out, mininterval=0)
    paths = data.download(
        data.query(recording_hash=recording.recording_hash), tmp_path, progress=callback
    )
    total = sum(p.stat().st_size for p in paths)
    text = out.getvalue()
    assert "100%" in text and "imu" in text
    assert f"{total / 1000:.0f}k" in text or f"{total / 1e3:.1f}k" in text


class _Widget:
    """Records what the callback does to a Streamlit status or progress element."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def update(self, **kwargs: Any) -> None:
        self.calls.append(("update", kwargs))

    def progress(self, value: float) -> None:
        self.calls.append(("progress", value))


def test_streamlit_helper_follows_the_pages_pattern(
    profile: Profile, recording: Recording, tmp_path: Path
) -> None:
    status, bar = _Widget(), _Widget()
    data = DataInterface(profile)
    data.download(
        data.query(recording_hash=recording.recording_hash, modality="eeg"),
        tmp_path,
        progress=streamlit_progress(status, bar),
    )
    labels = [kw["label"] for _, kw in status.calls]
    assert labels[0] == "Preparing… (planning object list)"
    assert labels[1] == "Downloading eeg / default"
    assert labels[-1].startswith("Done — ") and status.calls[-1][1]["state"] == "complete"
    values = [v for _, v in bar.calls]
    assert values == sorted(values) and values[-1] == 1.0
