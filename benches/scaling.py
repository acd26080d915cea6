"""Scaling figures: download time against object count (4 KiB objects) and against object
size, for ursa and s5cmd (the best peer on most workloads), on one SeaweedFS.

    python benches/scaling.py        # or: make bench-scaling

Writes docs/benchmarks-scaling.md (the table) and docs/benchmarks-scaling.png (the plot).
Each point is the median of URSA_BENCH_ROUNDS runs (default 3), each tool in its own process.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from conftest import KEY, ROOT, SECRET, make_scratch, retire, run_tool
from ursa import Profile
from ursa.testing import RowSpec, build_recording
from ursa.testing.seaweed import start_seaweed

MiB = 1 << 20
COUNTS = [500, 2000, 5000, 20000]
SIZES = [64 * MiB, 256 * MiB, 1024 * MiB, 4096 * MiB]
TOOLS = ("ursa", "s5cmd")
ROUNDS = int(os.environ.get("URSA_BENCH_ROUNDS", "3"))


def measure(spec: dict[str, Any], work: Path) -> dict[str, dict[str, float]]:
    """Each tool's median over the rounds. Tools take turns within a round, so neither
    always runs first after the objects were uploaded (the server is still settling then)."""
    runs: dict[str, list[dict[str, Any]]] = {tool: [] for tool in TOOLS}
    for i in range(ROUNDS):
        for tool in TOOLS:
            dest = work / f"{spec['name']}-{tool}-{i}"
            runs[tool].append(run_tool(tool, spec, dest))
            retire(dest, work / "trash")
    return {
        tool: {
            "wall_s": statistics.median(r["wall_s"] for r in done),
            "rss_mib": max(r["rss_kib"] for r in done) / 1024,
            "cpu_s": statistics.median(r["cpu_s"] for r in done),
        }
        for tool, done in runs.items()
    }


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ursa-scaling-"))
    scratch = make_scratch(work)
    rows: list[tuple[str, int, dict[str, dict[str, float]]]] = []
    with start_seaweed(work / "seaweed", access_key_id=KEY, secret_access_key=SECRET) as server:
        for bucket in ("ursa-catalog", "ursa-raw", "ursa-assets"):
            server.create_bucket(bucket)
        fields = {
            "name": "bench", "endpoint": server.endpoint, "allow_http": True,
            "catalog": "s3://ursa-catalog/catalog.lance", "raw_bucket": "ursa-raw",
            "assets_bucket": "ursa-assets",
        }  # fmt: skip
        profile = Profile(**fields, access_key_id=KEY, secret_access_key=SECRET)
        points = [
            ("count", n, RowSpec("events", status="raw", segments=n, segment_size=4096))
            for n in COUNTS
        ]
        points += [
            ("size", s, RowSpec("camera", status="raw", segments=1, segment_size=s)) for s in SIZES
        ]
        for axis, value, row in points:
            rec = build_recording(profile, [row], seed=value % 9973, workdir=scratch)
            spec = {
                "name": f"{axis}-{value}", "endpoint": server.endpoint, "bucket": "ursa-raw",
                "prefix": f"{rec.recording_hash}/", "profile": fields,
                "recording_hash": rec.recording_hash, "source": "raw", "status": "raw",
                "concurrency": 64, "part_size": 16 * MiB,
            }  # fmt: skip
            result = measure(spec, work)
            rows.append((axis, value, result))
            print(axis, value, result, flush=True)
    shutil.rmtree(scratch)
    shutil.rmtree(work)
    write_report(rows)


def write_report(rows: list[tuple[str, int, dict[str, dict[str, float]]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"# Scaling (run {stamp}, `python benches/scaling.py`, median of {ROUNDS} runs)",
        "",
        "| axis | value | ursa s | s5cmd s | ursa/s5cmd | ursa per unit | ursa peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, axis, unit in ((axes[0], "count", "objects"), (axes[1], "size", "MiB")):
        pts = [(v, r) for a, v, r in rows if a == axis]
        xs = [v if axis == "count" else v / MiB for v, _ in pts]
        for tool in TOOLS:
            ax.plot(xs, [r[tool]["wall_s"] for _, r in pts], marker="o", label=tool)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{unit} ({'4 KiB each' if axis == 'count' else 'one object'})")
        ax.set_ylabel("seconds")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        for x, (_, r) in zip(xs, pts, strict=True):
            u, s = r["ursa"]["wall_s"], r["s5cmd"]["wall_s"]
            per = f"{u / x * 1e3:.3f} ms/object" if axis == "count" else f"{x / u:.0f} MiB/s"
            lines.append(
                f"| {axis} | {x:,.0f} {unit} | {u:.2f} | {s:.2f} | {u / s:.2f} | {per} "
                f"| {r['ursa']['rss_mib']:.0f} |"
            )
    axes[0].set_title("time vs object count")
    axes[1].set_title("time vs object size")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "benchmarks-scaling.png", dpi=100)
    (ROOT / "docs" / "benchmarks-scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
