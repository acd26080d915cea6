"""Benchmark fixtures: one SeaweedFS for the whole run, the workloads built into it by
ursa.testing, and a collector that writes the ratio table to docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from ursa import Profile
from ursa.testing import RowSpec, build_recording
from ursa.testing.seaweed import SeaweedServer, start_seaweed

KEY, SECRET = "bench-access", "bench-secret-not-printed"
MiB, GiB = 1 << 20, 1 << 30
ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("runner.py")


class Workload(NamedTuple):
    """The same bytes for every tool. Objects are uploaded with a stored CRC32, as current
    S3 SDKs do, unless `checksums` is false (older uploaders: an MD5 ETag only)."""

    rows: list[RowSpec]
    bucket: str
    source: str
    status: str
    what: str
    checksums: bool = True


WORKLOADS: dict[str, Workload] = {
    "raw-2000x256KiB": Workload(
        [RowSpec("eeg", status="raw", segments=2000, segment_size=256 << 10)],
        "ursa-raw",
        "raw",
        "raw",
        "2,000 raw segments of 256 KiB",
    ),
    "mp4-1GiB": Workload(
        [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=GiB)],
        "ursa-assets",
        "auto",
        "ingested",
        "one 1 GiB MP4 (+ its small frame index)",
    ),
    "mp4-1GiB-md5": Workload(
        [RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=GiB)],
        "ursa-assets",
        "auto",
        "ingested",
        "the same 1 GiB MP4 uploaded without a stored checksum (its MD5 ETag is the check)",
        checksums=False,
    ),
    "zarr-4000x32KiB": Workload(
        [RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=4000)],
        "ursa-assets",
        "auto",
        "ingested",
        "a Zarr store of 4,000 chunks of 32 KiB",
    ),
    "mixed-session": Workload(
        [
            RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=500),
            RowSpec("events", asset_format="lance", segments=1, segment_size=1, events=20_000),
            RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=512 * MiB),
            RowSpec("imu", asset_format="parquet", segments=1, segment_size=1, table_rows=50_000),
        ],
        "ursa-assets",
        "auto",
        "ingested",
        "Zarr (500 chunks) + Lance + 512 MiB MP4 + Parquet",
    ),
    "tiny-20000x4KiB": Workload(
        [RowSpec("events", status="raw", segments=20_000, segment_size=4 << 10)],
        "ursa-raw",
        "raw",
        "raw",
        "20,000 raw segments of 4 KiB",
    ),
}
TOOLS = ("ursa", "s5cmd", "rclone", "obstore", "boto3")


def selected(env: str, every: tuple[str, ...]) -> list[str]:
    wanted = os.environ.get(env)
    return [w for w in every if not wanted or w in wanted.split(",")]


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    with start_seaweed(
        tmp_path_factory.mktemp("seaweed"), access_key_id=KEY, secret_access_key=SECRET
    ) as s:
        for bucket in ("ursa-catalog", "ursa-raw", "ursa-assets"):
            s.create_bucket(bucket)
        yield s


@pytest.fixture(scope="session")
def profile_fields(server: SeaweedServer) -> dict[str, Any]:
    return {
        "name": "bench",
        "endpoint": server.endpoint,
        "allow_http": True,
        "catalog": "s3://ursa-catalog/catalog.lance",
        "raw_bucket": "ursa-raw",
        "assets_bucket": "ursa-assets",
    }


_built: dict[str, dict[str, Any]] = {}


@pytest.fixture
def workload(
    request: pytest.FixtureRequest, profile_fields: dict[str, Any], scratch: Path
) -> dict[str, Any]:
    name: str = request.param
    if name not in _built:
        rows, bucket, source, status, _, checksums = WORKLOADS[name]
        profile = Profile(**profile_fields, access_key_id=KEY, secret_access_key=SECRET)
        # Each workload its own seed, hence its own recording hash and key prefix: a
        # shared one would put another workload's objects in this one's download.
        rec = build_recording(
            profile, rows, seed=list(WORKLOADS).index(name) + 1,
            workdir=scratch, checksums=checksums,
        )  # fmt: skip
        assert all(b["recording_hash"] != rec.recording_hash for b in _built.values())
        os.sync()  # the upload's writeback (the server's volumes) must not land in a run
        prefix = f"{rec.recording_hash}/"
        _built[name] = {
            "name": name,
            "endpoint": profile_fields["endpoint"],
            "bucket": bucket,
            "prefix": prefix,
            "profile": profile_fields,
            "recording_hash": rec.recording_hash,
            "source": source,
            "status": status,
            "concurrency": 64,
            "part_size": 16 * MiB,
        }
    return _built[name]


@dataclass
class Measure:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    bytes: int = 0
    retries: int | None = None  # over all runs; None: the tool does not report them


RESULTS: dict[str, dict[str, Measure]] = {}


def run_tool(tool: str, spec: dict[str, Any], dest: Path) -> dict[str, Any]:
    """One run of one tool in its own process; it reports its own wall time, CPU (rusage,
    a CLI tool's included) and peak RSS (VmHWM), all over the transfer alone."""
    spec_file = dest.with_suffix(".json")
    spec_file.write_text(json.dumps(spec))
    env = os.environ | {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), tool, str(spec_file), str(dest)],
        env=env, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out, _ = proc.communicate()
    assert proc.returncode == 0, f"{tool} failed"
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def retire(dest: Path, trash: Path) -> None:
    """Clear a run's output without freeing many inodes while the benchmark runs. ext4
    without a journal (as on these VMs) steps over every inode freed in the last minute,
    one by one, when it creates a file: right after 20,000 files were deleted, creating a
    file took ~650 µs instead of ~60 µs (measured), which made the small-object rows depend
    on which tool ran after which deletion. Big files (most bytes, few inodes) go now; the
    rest waits in `trash` until the session ends. Then everything dirty is flushed: right
    after 20,000 small files, a 64 MiB download took 0.20 s instead of 0.06 s."""
    for path in dest.rglob("*"):
        if path.is_file() and path.stat().st_size >= MiB:
            path.unlink()
    trash.mkdir(parents=True, exist_ok=True)
    dest.rename(Path(tempfile.mkdtemp(dir=trash)) / dest.name)
    os.sync()  # this run's writeback must not land in the next run's time


def make_scratch(fallback: Path) -> Path:
    """A directory to generate workloads in before upload: on tmpfs when there is one, so
    that deleting the generated files (20,000 for one workload) frees no inodes on the disk
    the tools then write to (see `retire`): the first tool after a build paid for it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="ursa-bench-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="ursa-bench-", dir=fallback))


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_scratch(tmp_path_factory.getbasetemp())
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def trash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("trash")
    yield path
    shutil.rmtree(path)


def record(workload: str, tool: str, result: dict[str, Any]) -> None:
    peers = RESULTS.setdefault(workload, {})
    for other, measure in peers.items():
        assert measure.bytes == result["bytes"], f"{tool} and {other} wrote different byte counts"
    m = peers.setdefault(tool, Measure())
    m.wall_s.append(result["wall_s"])
    m.cpu_s.append(result["cpu_s"])
    m.rss_kib.append(result["rss_kib"])
    m.bytes = result["bytes"]
    if result["retries"] is not None:
        m.retries = (m.retries or 0) + result["retries"]


def table() -> str:
    lines = []
    for workload, tools in RESULTS.items():
        what = WORKLOADS[workload].what
        medians = {t: statistics.median(m.wall_s) for t, m in tools.items()}
        peers = {t: v for t, v in medians.items() if t != "ursa"}
        best = min(peers, key=peers.__getitem__) if peers else None
        lines += [
            f"### {workload} — {what}",
            "",
            "| tool | median s (runs) | MB/s | vs best peer | CPU s/GiB | peak RSS MiB | retries |",
            "|---|---|---|---|---|---|---|",
        ]
        for tool in sorted(tools, key=medians.__getitem__):
            m = tools[tool]
            gib = max(m.bytes, 1) / GiB
            ratio = f"{medians[tool] / peers[best]:.2f} of {best}" if best else "-"
            rate = m.bytes / medians[tool] / 1e6
            cpu = statistics.median(m.cpu_s) / gib
            lines.append(
                f"| {tool} | {medians[tool]:.2f} ({len(m.wall_s)}) | {rate:,.0f} | {ratio} "
                f"| {cpu:.2f} | {max(m.rss_kib) / 1024:.0f} "
                f"| {'-' if m.retries is None else m.retries} |"
            )
        lines.append("")
    return "\n".join(lines)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS:
        return
    print("\n" + table())
    if os.environ.get("URSA_BENCH_PROFILE"):
        return  # profiled runs are slower: they never replace the published table
    out = ROOT / "docs" / "benchmarks.md"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    header = (
        f"# Benchmarks: latest run ({stamp})\n\nProduced by `make bench` "
        f"(`{' '.join(sys.argv[1:]) or 'pytest benches'}`): every tool downloads the same "
        "objects from one SeaweedFS on loopback, each run in a fresh directory and its own "
        "process. Time and CPU (user+sys, a CLI tool's included) are measured inside that "
        "process around the transfer, after module imports (median of the runs); peak RSS "
        "is the whole process's; the ratio is ursa's (or the tool's) median over the best "
        "peer's; retries are the requests a tool retried over all its runs (- where the tool "
        "does not report them).\n\n"
    )
    out.write_text(header + table())
