"""The ready-made progress callbacks, driven by real downloads."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conftest import profile_for
from faultproxy import FaultProxy, Rule
from ursa import DataInterface, DownloadCancelled, DownloadProgress, Profile
from ursa.progress import RichProgress, streamlit_progress, tqdm_progress
from ursa.testing import Recording, RowSpec, build_recording


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
    assert summary.line().startswith(f"Done — {len(paths)} files, {summary.bytes / 1e3:.1f} kB")


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


@pytest.fixture(scope="module")
def big(profile: Profile) -> Recording:
    """One 4 MiB camera file: without in-file progress a bar jumps 0 % → ~100 %."""
    row = RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=4 << 20)
    return build_recording(profile, [row], seed=71)


@pytest.fixture
def slow(proxy: FaultProxy, big: Recording) -> Iterator[DataInterface]:
    proxy.clear()
    key = f"^/ursa-assets/{big.recording_hash}/camera/camera\\.mp4$"
    proxy.add(Rule("slow", method="GET", key=key, chunk=32 * 1024, delay_s=0.02))
    yield DataInterface(profile_for(proxy.endpoint))
    proxy.clear()


def percentages(text: str) -> set[int]:
    return {int(m) for m in re.findall(r"(\d+)%\|", text)}


def test_tqdm_bar_moves_inside_one_file_without_being_asked(
    slow: DataInterface, big: Recording, tmp_path: Path
) -> None:
    out = io.StringIO()
    rows = slow.query(recording_hash=big.recording_hash)
    slow.download(
        rows, tmp_path, progress=tqdm_progress(file=out, mininterval=0), part_size=1 << 20
    )
    seen = percentages(out.getvalue())
    assert 100 in seen
    assert len({p for p in seen if 5 <= p <= 90}) >= 3, f"the bar jumped: {sorted(seen)}"


def test_tqdm_bar_is_closed_when_the_download_fails(
    slow: DataInterface, big: Recording, tmp_path: Path
) -> None:
    out = io.StringIO()
    cancel = threading.Event()
    bar = tqdm_progress(file=out, mininterval=0)

    def progress(e: DownloadProgress) -> None:
        bar(e)
        if e.phase == "progress":
            cancel.set()

    progress.on_error = bar.on_error  # type: ignore[attr-defined]
    rows = slow.query(recording_hash=big.recording_hash)
    with pytest.raises(DownloadCancelled):
        slow.download(rows, tmp_path, progress=progress, progress_interval=0.05, cancel=cancel)
    text = out.getvalue()
    assert "%|" in text and 100 not in percentages(text)
    assert text.endswith("\n"), "the bar was left open"
    assert bar.bar is None


def test_rich_display_fits_60_columns() -> None:
    """A 145 MB download drawn on a 60-column terminal: each bar is one line with its byte
    counts (not folded under it), and the summary wraps between words."""
    out = io.StringIO()
    console = Console(file=out, width=60, force_terminal=True, color_system=None)
    h, total = "ab" * 32, 145_000_000

    def event(phase: str, done: int, modality: str | None = None, worker: str = "") -> Any:
        scoped = modality is not None
        return DownloadProgress(
            phase,  # type: ignore[arg-type]
            h if scoped else None,
            modality,
            worker if scoped else None,
            None,
            done,
            None if phase == "start" else total,
            0.5,
        )

    with RichProgress(console) as display:
        display(event("start", 0))
        display(event("plan_done", 0))
        display(event("modality_start", 0, "camera", "left"))
        display(event("file_done", 50_000_000, "camera", "left"))
        display(event("modality_done", 50_000_000, "camera", "left"))
        display(event("modality_start", 50_000_000, "imu"))
        display(event("file_done", 70_000_000, "imu"))
        display(event("modality_done", 70_000_000, "imu"))
        display(event("modality_start", 70_000_000, "eeg"))
    console.print(display.summary.line())
    text = out.getvalue()
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n").splitlines()
    bars = [line for line in lines if "━" in line]
    assert bars, "no bar was drawn"
    for line in bars:
        assert re.search(r"━.* [\d.]+/[\d.?]+ ?(bytes|kB|MB)", line), lines
    assert any("eeg / default" in line for line in bars), bars
    assert "✓ imu / default: 1 file\n" in text
    too_wide = [line for line in lines if len(line) > 60]
    assert not too_wide, too_wide
