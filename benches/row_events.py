"""Truthful row events (issue 14): on the demo recording (`ursa demo`'s rows, local
profile), how long after a row's last file or directory landed its `modality_done` is
emitted, as a share of the run's time. The engine reports completions as they happen;
the rows are reported one at a time, in plan order, so a row that lands before the rows
ahead of it waits for them.

    python benches/row_events.py        # or: make bench-row-events

Writes docs/benchmarks-row-events.md: URSA_BENCH_ROUNDS runs (default 5), each in a fresh
destination; the table is the run with the median worst lag.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import ursa.download as download_module
from ursa import DataInterface, DownloadProgress, Profile
from ursa.cli import _demo_rows
from ursa.testing import DEFAULT_ROWS, build_recording

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("URSA_BENCH_ROUNDS", "5"))

Row = tuple[str, float, float]  # name, landed (s into the run), modality_done (s)


def _watch_landings(landed: dict[int, float]) -> None:
    """Note when the engine's completion of each row's last file/directory arrives."""
    tracker = download_module._RowTracker
    file_done, dir_done = tracker.file_done, tracker.dir_done

    def on_file(self: download_module._RowTracker, job: int) -> None:
        landed[self.plan.files[job].row] = time.monotonic()
        file_done(self, job)

    def on_dir(self: download_module._RowTracker, directory: int) -> None:
        landed[self.dir_row[directory]] = time.monotonic()
        dir_done(self, directory)

    tracker.file_done, tracker.dir_done = on_file, on_dir  # type: ignore[method-assign]


def one_run(data: DataInterface, dest: Path, landed: dict[int, float]) -> tuple[float, list[Row]]:
    rows = [data.query(status="ingested"), data.query(status="raw")]
    landed.clear()
    done: list[tuple[str, float]] = []

    def progress(event: DownloadProgress) -> None:
        if event.phase == "modality_done":
            name = event.modality + (f"/{event.worker_id}" if event.worker_id else "")
            done.append((name, time.monotonic()))

    began = time.monotonic()
    data.download(rows, dest, progress=progress)
    run = time.monotonic() - began
    return run, [(name, landed[i] - began, t - began) for i, (name, t) in enumerate(done)]


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ursa-row-events-"))
    store = work / "store"
    profile = Profile(name="demo", root=str(store), assets_bucket=f"file://{store}/assets/")
    build_recording(profile, _demo_rows(DEFAULT_ROWS), seed=2026)
    data = DataInterface(profile)
    landed: dict[int, float] = {}
    _watch_landings(landed)
    runs = [one_run(data, work / f"dl-{i}", landed) for i in range(ROUNDS)]

    def worst(run: tuple[float, list[Row]]) -> float:
        total, rows = run
        return max((d - land) / total for _, land, d in rows)

    ranked = sorted(runs, key=worst)
    total, rows = ranked[len(ranked) // 2]
    lines = [
        "# Row events: modality_done against the row's last landing",
        "",
        f"`python benches/row_events.py`: the demo recording (`ursa demo`'s rows, local "
        f"profile), {ROUNDS} downloads; the run with the median worst lag "
        f"({total * 1000:.0f} ms):",
        "",
        "| row (plan order) | last landed | modality_done | lag | lag / run |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, land, done in rows:
        lag = done - land
        lines.append(
            f"| {name} | {land * 1000:.0f} ms | {done * 1000:.0f} ms | {lag * 1000:.0f} ms "
            f"| {lag / total:.0%} |"
        )
    worsts = ", ".join(f"{worst(r):.0%}" for r in runs)
    lines += [
        "",
        f"Worst lag per run, in run order: {worsts} (target: within 10 % of the run; median "
        f"{statistics.median(worst(r) for r in runs):.0%}). Load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (ROOT / "docs" / "benchmarks-row-events.md").write_text(text)


if __name__ == "__main__":
    main()
