"""Resume figures (issue 12), on one SeaweedFS on loopback:

1. a completed download of 2,000 raw segments (256 KiB each), run again with
   ``resume=True``: its time against the first run's (target: at most 10 %);
2. a 1 GiB MP4 whose download is SIGKILLed at about 90 %, then continued with
   ``resume=True``: the bytes the re-run asks for (the sum of its GETs' Range lengths,
   counted by the fault proxy in front of the server) against the object's size
   (target: at most 15 %), and its time.

    python benches/resume.py        # or: make bench-resume

Writes docs/benchmarks-resume.md. Median of URSA_BENCH_ROUNDS rounds (default 3).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import ROOT, bench_store, child_env, measure_and_write
from ursa import DataInterface, Profile
from ursa.testing import RowSpec, build_recording

sys.path.insert(0, str(ROOT / "tests"))
from faultproxy import FaultProxy  # the tests' proxy, to count requests

MiB, GiB = 1 << 20, 1 << 30
ROUNDS = int(os.environ.get("URSA_BENCH_ROUNDS", "3"))
KILL_AT = 0.9

CHILD = """
import sys
from ursa import DataInterface
data = DataInterface("bench")
data.download(data.query(recording_hash=sys.argv[1]), sys.argv[2])
"""


def journal_held(dest: Path) -> int:
    total = 0
    for journal in dest.rglob("*.journal"):
        held: dict[str, int] = {}
        for line in journal.read_text().splitlines()[1:]:
            part, _, written = line.partition(" ")
            if written.isdigit():
                held[part] = max(held.get(part, 0), int(written))
        total += sum(held.values())
    return total


def rerun_after_completion(profile: Profile, work: Path) -> dict[str, Any]:
    rec = build_recording(
        profile, [RowSpec("eeg", status="raw", segments=2000, segment_size=256 << 10)], seed=201
    )
    data = DataInterface(profile)
    rows = data.query(recording_hash=rec.recording_hash, status="raw")
    first, again = [], []
    for i in range(ROUNDS):
        dest = work / f"raw-{i}"
        t = time.perf_counter()
        data.download(rows, dest)
        first.append(time.perf_counter() - t)
        os.sync()
        t = time.perf_counter()
        data.download(rows, dest, resume=True)
        again.append(time.perf_counter() - t)
    return {"first_s": statistics.median(first), "resume_s": statistics.median(again)}


def resume_after_kill(profile: Profile, work: Path, endpoint: str) -> dict[str, Any]:
    rec = build_recording(
        profile,
        [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=GiB)],
        seed=202,
    )
    env = child_env(endpoint, work)
    results = []
    with FaultProxy(endpoint) as proxy:
        via_proxy = DataInterface(dataclasses.replace(profile, endpoint=proxy.endpoint))
        for i in range(ROUNDS):
            dest = work / f"mp4-{i}"
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, rec.recording_hash, str(dest)], env=env
            )
            while journal_held(dest) < KILL_AT * GiB:
                if child.poll() is not None:
                    raise RuntimeError("the download finished before it could be killed")
                time.sleep(0.005)
            child.send_signal(signal.SIGKILL)
            child.wait()
            held = journal_held(dest)
            proxy.clear()
            rows = via_proxy.query(recording_hash=rec.recording_hash)
            t = time.perf_counter()
            via_proxy.download(rows, dest, resume=True)
            took = time.perf_counter() - t
            asked = 0
            for r in proxy.records():
                if r.method == "GET" and r.path.endswith("camera.mp4"):
                    found = re.fullmatch(r"bytes=(\d+)-(\d+)", r.range or "")
                    asked += GiB if found is None else int(found[2]) - int(found[1]) + 1
            results.append({"held": held, "asked": asked, "resume_s": took})
    return {
        "held": statistics.median(r["held"] for r in results),
        "asked": statistics.median(r["asked"] for r in results),
        "resume_s": statistics.median(r["resume_s"] for r in results),
    }


def main() -> None:
    measure_and_write("benchmarks-resume.md", measure, "ursa-resume-")


def measure(work: Path) -> str:
    with bench_store(work) as (server, profile):
        rerun = rerun_after_completion(profile, work)
        killed = resume_after_kill(profile, work, server.endpoint)
    share = rerun["resume_s"] / rerun["first_s"]
    fetched = killed["asked"] / GiB
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = f"""# Resume benchmarks ({stamp})

Produced by `make bench-resume` (`benches/resume.py`), median of {ROUNDS} rounds, one
SeaweedFS on loopback.

| case | first run | re-run with resume=True | target |
|---|---|---|---|
| 2,000 x 256 KiB raw segments, completed, run again | {rerun["first_s"]:.2f} s | \
{rerun["resume_s"]:.3f} s ({share:.1%} of the first) | ≤ 10 % |
| 1 GiB MP4, SIGKILLed at ≥ {KILL_AT:.0%} (journal held {killed["held"] / GiB:.1%}) | - | \
{killed["resume_s"]:.2f} s, asked for {killed["asked"] / MiB:.0f} MiB \
({fetched:.1%} of the object) | ≤ 15 % |
"""
    return text


if __name__ == "__main__":
    main()
