"""Memory figures (issue 14, item 6): a download's anonymous memory (``RssAnon``), sampled
every 5 ms on a thread during ``DataInterface.download``, at its peak above its level
right after the catalog query:

1. against the number of planned objects (16-byte raw segments; N = 20,000, 100,000 and
   200,000), on a local ``file://`` store: planning and events are what grows with N,
   and no server time is spent uploading 200,000 objects. The slope (bytes per planned
   object) is the least-squares fit over the N values. A second process per N plans
   under ``tracemalloc``: the bytes the Python plan holds per object (the rest of the
   growth is the engine's and the allocators');
2. against the size of one object (1 GiB and 4 GiB raw segments) on one SeaweedFS on
   loopback.

    python benches/memory.py        # or: make bench-memory

Each case runs once, in its own process. Writes docs/benchmarks-memory.md.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from conftest import ROOT, bench_store, child_env

MiB, GiB = 1 << 20, 1 << 30


def _env_ints(name: str, default: str) -> list[int]:
    return [int(v) for v in os.environ.get(name, default).split(",") if v]


COUNTS = _env_ints("URSA_BENCH_COUNTS", "20000,100000,200000")
SIZES = [s * GiB for s in _env_ints("URSA_BENCH_GIB", "1,4")]
SAMPLE_S = 0.005


def rss_anon() -> int:
    """This process's anonymous resident memory, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One download (or, with ``trace``, one plan under tracemalloc) in this process."""
    from ursa import DataInterface, Profile

    profile = Profile(**spec["profile"]) if "profile" in spec else spec["profile_name"]
    data = DataInterface(profile)
    rows = data.query(recording_hash=spec["recording_hash"], status="raw")
    dest = Path(spec["dest"])
    gc.collect()
    if spec.get("trace"):
        import tracemalloc

        tracemalloc.start()
        plan = data.plan_download(rows, dest, source="raw")
        held, peak = tracemalloc.get_traced_memory()
        return {"objects": len(plan.files), "traced_held": held, "traced_peak": peak}
    base = rss_anon()
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(SAMPLE_S):
            peak = max(peak, rss_anon())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    paths = data.download(rows, dest, source="raw")
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    peak = max(peak, rss_anon())
    return {"objects": len(paths), "base": base, "peak": peak, "wall_s": wall}


def run_child(spec: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        env=env, check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    print(spec.get("name"), result, flush=True)
    return result


def by_count(work: Path) -> list[dict[str, Any]]:
    from ursa import Profile
    from ursa.testing import RowSpec, build_recording

    root = work / "store"
    fields = {"name": "local", "root": str(root), "assets_bucket": f"file://{root}/assets/"}
    results = []
    for n in COUNTS:
        row = RowSpec("events", status="raw", segments=n, segment_size=16)
        rec = build_recording(Profile(**fields), [row], seed=n, workdir=work)
        spec = {"name": f"count-{n}", "profile": fields, "recording_hash": rec.recording_hash}
        traced = run_child(spec | {"dest": str(work / f"plan-{n}"), "trace": True})
        ran = run_child(spec | {"dest": str(work / f"dest-{n}")})
        shutil.rmtree(work / f"dest-{n}")
        results.append(ran | {"n": n, **traced})
    return results


def by_size(work: Path) -> list[dict[str, Any]]:
    from ursa.testing import RowSpec, build_recording

    results = []
    with bench_store(work) as (server, profile):
        env = child_env(server.endpoint, work)
        for size in SIZES:
            row = RowSpec("camera", status="raw", segments=1, segment_size=size)
            rec = build_recording(profile, [row], seed=size // GiB, workdir=work)
            dest = work / f"dest-{size}"
            spec = {"name": f"size-{size // GiB}GiB", "profile_name": "bench"}
            spec |= {"recording_hash": rec.recording_hash, "dest": str(dest)}
            results.append(run_child(spec, env) | {"size": size})
            shutil.rmtree(dest)
    return results


def slope(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line through the points: (slope, intercept)."""
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return b, my - b * mx


def report(counts: list[dict[str, Any]], sizes: list[dict[str, Any]]) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# Memory (run {stamp}, `python benches/memory.py`, one run per case)",
        "",
        "Anonymous memory (`RssAnon`, sampled every 5 ms during `download()`): its peak",
        "above its level right after the catalog query. Each case in its own process.",
        "",
        "## Against the number of planned objects (16-byte objects, `file://` store)",
        "",
        "| objects | peak above query MiB | per object B | Python plan held B/object "
        "(tracemalloc) | planning peak B/object (tracemalloc) | download s |",
        "|---|---|---|---|---|---|",
    ]
    for r in counts:
        grow = r["peak"] - r["base"]
        lines.append(
            f"| {r['n']:,} | {grow / MiB:.1f} | {grow / r['n']:.0f} "
            f"| {r['traced_held'] / r['n']:.0f} | {r['traced_peak'] / r['n']:.0f} "
            f"| {r['wall_s']:.1f} |"
        )
    if len(counts) > 1:
        b, a = slope([(r["n"], r["peak"] - r["base"]) for r in counts])
        lines += ["", f"Slope (least squares over N): **{b:.0f} bytes per planned object** "
                  f"(intercept {a / MiB:.1f} MiB); target ≤ 1,024."]  # fmt: skip
    lines += [
        "",
        "## Against the size of one object (SeaweedFS on loopback)",
        "",
        "| object | peak above query MiB | download s |",
        "|---|---|---|",
    ]
    for r in sizes:
        grow = r["peak"] - r["base"]
        lines.append(f"| {r['size'] // GiB} GiB | {grow / MiB:.1f} | {r['wall_s']:.1f} |")
    lines += ["", "Target: ≤ 64 MiB, the same for every size."]
    return "\n".join(lines) + "\n"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ursa-memory-"))
    try:
        counts = by_count(work) if COUNTS else []
        sizes = by_size(work) if SIZES else []
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(counts, sizes)
    (ROOT / "docs" / "benchmarks-memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(json.loads(sys.argv[2]))))
    else:
        main()
