"""Scale-out figures (issue 15), on one SeaweedFS on loopback and one machine:

1. N recordings (one MP4 of 64 MiB each, single PUT without a stored checksum, as
   users' objects are): ``ursa.ray.download`` on a local Ray cluster of 2 CPUs (2 worker
   processes) against one process's ``download()``;
   then the same call again on that cluster, its workers started (what a long-lived
   cluster sees);
2. the cost of a shard: many tiny recordings (one 4 KiB raw segment each) downloaded as
   one shard and as one shard per recording on the same cluster; the difference per
   extra shard is Ray's scheduling plus ursa's progress reporting.

Each tool runs in its own process and times its own call; one run of each (the
machine has 2 cores, shared). Ray's start-up (``ray.init``) is reported apart.

    python benches/scaleout.py     # or: make bench-ray

Writes docs/benchmarks-ray.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import bench_store, child_env, core_build, measure_and_write
from ursa.testing import RowSpec, build_recording

MiB = 1 << 20
N = int(os.environ.get("URSA_BENCH_RAY_N", "8"))
SIZE = 64 * MiB
TINY = int(os.environ.get("URSA_BENCH_RAY_TINY", "48"))

ONE_PROCESS = """
import json, sys, time
from ursa import DataInterface
data = DataInterface("bench")
rows = data.query(recording_hash=json.loads(sys.argv[1]), status="all")
t = time.perf_counter()
data.download(rows, sys.argv[2], progress=lambda e: None)
print(json.dumps({"s": time.perf_counter() - t}))
"""

ON_RAY = """
import json, sys, time
import ray
import ursa.ray
from ursa import DataInterface
t = time.perf_counter()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
init = time.perf_counter() - t
rows = DataInterface("bench").query(recording_hash=json.loads(sys.argv[1]), status="all")
out = {"init_s": init}
for name, shards in json.loads(sys.argv[3]).items():
    t = time.perf_counter()
    ursa.ray.download("bench", rows, sys.argv[2] + "/" + name, shards=shards,
                      progress=lambda e: None)
    out[name] = time.perf_counter() - t
print(json.dumps(out))
ray.shutdown()
"""


def run(code: str, env: dict[str, str], *args: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, check=True, capture_output=True, text=True
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(work: Path) -> str:
    with bench_store(work) as (server, profile):
        big = [
            build_recording(
                profile,
                [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=SIZE)],
                seed=1500 + i,
                checksums=False,
            ).recording_hash
            for i in range(N)
        ]
        tiny = [
            build_recording(
                profile,
                [RowSpec("eeg", status="raw", segments=1, segment_size=4096)],
                seed=1600 + i,
                checksums=False,
            ).recording_hash
            for i in range(TINY)
        ]
        env = child_env(server.endpoint, work)
        one = run(ONE_PROCESS, env, json.dumps(big), str(work / "one"))
        shutil.rmtree(work / "one")
        on_ray = run(
            ON_RAY, env, json.dumps(big), str(work / "ray"), json.dumps({"big": N, "warm": N})
        )
        shutil.rmtree(work / "ray")
        load = os.getloadavg()[0]
        tiny_one = run(ONE_PROCESS, env, json.dumps(tiny), str(work / "one"))
        shards = run(
            ON_RAY, env, json.dumps(tiny), str(work / "ray"), json.dumps({"one": 1, "each": TINY})
        )
    per_shard = (shards["each"] - shards["one"]) / (TINY - 1)
    gib = N * SIZE / (1 << 30)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"""# Scale-out on Ray ({stamp})

Produced by `make bench-ray` (`benches/scaleout.py`): one run, each tool in its own process
timing its own call, one SeaweedFS on loopback, a local Ray cluster started with
`ray.init(num_cpus=2)` (2 worker processes) on a 2-core machine shared with other work.
Load average when the big runs ended: {load:.1f}.
`ursa._core`: {core_build()}.

| workload | one process `download()` | `ursa.ray.download`, 2 workers | ratio (Ray / one) |
|---|---|---|---|
| {N} recordings x 64 MiB MP4 ({gib:.2f} GiB), {N} shards | {one["s"]:.2f} s \
({N * SIZE / MiB / one["s"]:.0f} MiB/s) | {on_ray["big"]:.2f} s \
({N * SIZE / MiB / on_ray["big"]:.0f} MiB/s) | {on_ray["big"] / one["s"]:.2f} |
| the same again on that cluster (workers started, ursa imported) | - | \
{on_ray["warm"]:.2f} s ({N * SIZE / MiB / on_ray["warm"]:.0f} MiB/s) | \
{on_ray["warm"] / one["s"]:.2f} |
| {TINY} recordings x one 4 KiB raw segment, 1 shard | {tiny_one["s"]:.2f} s | \
{shards["one"]:.2f} s | {shards["one"] / tiny_one["s"]:.2f} |
| the same, {TINY} shards (one per recording) | - | {shards["each"]:.2f} s | \
{shards["each"] / tiny_one["s"]:.2f} |

- Cost of one more shard (scheduling, a task's start, its progress batches and the
  driver's polling): ({shards["each"]:.2f} s - {shards["one"]:.2f} s) / {TINY - 1} =
  **{per_shard * 1000:.0f} ms per shard**.
- Ray's start-up (`ray.init(num_cpus=2)`, not in the times above): {on_ray["init_s"]:.1f} s.
"""


def main() -> None:
    measure_and_write("benchmarks-ray.md", measure, "ursa-ray-bench-", "/dev/shm")


if __name__ == "__main__":
    main()
