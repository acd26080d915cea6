"""The cost of durable=True (issue 13), on one SeaweedFS on loopback, written to a disk
directory (not tmpfs): 2,000 raw segments of 256 KiB, and one 256 MiB MP4, each
downloaded by its own child process with durable False and True, interleaved, so both
see the same machine; the page cache is flushed (os.sync) before every run.

    python benches/durable.py        # or: make bench-durable

Writes docs/benchmarks-durable.md. Median of URSA_BENCH_ROUNDS rounds (default 3). The
destination is under URSA_BENCH_DIR (default: the system's temporary directory); it must
be a real disk for the figures to mean anything.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from conftest import bench_store, child_env, measure_and_write
from ursa.testing import RowSpec, build_recording

MiB = 1 << 20
ROUNDS = int(os.environ.get("URSA_BENCH_ROUNDS", "3"))

# The child times only the download (not the import or the catalog query).
CHILD = """
import sys, time
from ursa import DataInterface
data = DataInterface("bench")
rows = data.query(recording_hash=sys.argv[1], status=sys.argv[3])
t = time.perf_counter()
data.download(rows, sys.argv[2], durable=sys.argv[4] == "1")
print(time.perf_counter() - t)
"""


def run(env: dict[str, str], rec: str, dest: Path, status: str, durable: bool) -> float:
    os.sync()  # the previous run's dirty pages are not this run's cost
    cmd = [sys.executable, "-c", CHILD, rec, str(dest), status, "1" if durable else "0"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    shutil.rmtree(dest)
    return float(out.strip().splitlines()[-1])


def measure(work: Path, out: Path) -> str:
    with bench_store(work) as (server, profile):
        small = build_recording(
            profile, [RowSpec("eeg", status="raw", segments=2000, segment_size=256 << 10)], seed=301
        )
        large = build_recording(
            profile,
            [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=256 * MiB)],
            seed=302,
        )
        env = child_env(server.endpoint, work)
        cases = {
            "2,000 x 256 KiB raw segments (500 MiB)": (small.recording_hash, "raw"),
            "1 x 256 MiB MP4": (large.recording_hash, "ingested"),
        }
        times: dict[str, dict[bool, list[float]]] = {c: {False: [], True: []} for c in cases}
        for i in range(ROUNDS):
            for case, (rec, status) in cases.items():
                for durable in (False, True):
                    took = run(env, rec, out / f"run-{i}", status, durable)
                    times[case][durable].append(took)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    for case, by in times.items():
        plain, synced = statistics.median(by[False]), statistics.median(by[True])
        every = " / ".join(f"{a:.2f}-{b:.2f}" for a, b in zip(by[False], by[True], strict=True))
        rows.append(
            f"| {case} | {plain:.2f} s | {synced:.2f} s | {synced / plain - 1:+.0%} | {every} |"
        )
    table = "\n".join(rows)
    return f"""# durable=True benchmarks ({stamp})

Produced by `make bench-durable` (`benches/durable.py`): release build, one SeaweedFS on
loopback, destination on a disk directory (`{out}`, not tmpfs), each download in its own
process,
durable False and True interleaved, `os.sync()` before each run; median of {ROUNDS} rounds.
durable=True fsyncs each file before its rename and each directory after the renames into
it (for a directory asset: every staged file and directory, then the parent).

| case | durable=False | durable=True | cost | every round (False-True) |
|---|---|---|---|---|
{table}
"""


def main() -> None:
    base = os.environ.get("URSA_BENCH_DIR") or None
    measure_and_write(
        "benchmarks-durable.md", lambda work: measure(work, work / "dest"), "ursa-durable-", base
    )


if __name__ == "__main__":
    main()
