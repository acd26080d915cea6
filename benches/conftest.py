"""Benchmark fixtures: one SeaweedFS for the whole run, the workloads built into it by
ursa.testing, and a collector that writes the ratio table to docs/benchmarks.md."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import uploads
from ursa import Profile
from ursa.testing import RowSpec, build_recording
from ursa.testing.seaweed import SeaweedServer, start_seaweed

KEY, SECRET = "bench-access", "bench-secret-not-printed"
MiB, GiB = 1 << 20, 1 << 30
ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("runner.py")


class Workload(NamedTuple):
    """The same bytes for every tool, uploaded as `upload` says (benches/uploads.py: a
    single PUT with only an MD5 ETag, multipart with or without a full-object CRC, or
    the engine's upload with a stored CRC32). `tools` replaces the usual peers."""

    rows: list[RowSpec]
    bucket: str
    source: str
    status: str
    what: str
    upload: str = "engine"
    tools: tuple[str, ...] | None = None


def _mp4(upload: str, what: str) -> Workload:
    row = RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=GiB)
    return Workload([row], "ursa-assets", "auto", "ingested", f"one 1 GiB MP4, {what}", upload)


def _raw(count: int, size: int, upload: str, what: str) -> Workload:
    row = RowSpec("eeg", status="raw", segments=count, segment_size=size)
    return Workload([row], "ursa-raw", "raw", "raw", what, upload)


WORKLOADS: dict[str, Workload] = {
    "mp4-1GiB-put": _mp4("put", "single PUT without checksum (MD5 ETag)"),
    "mp4-1GiB-mpu": _mp4("mpu", "multipart (8 MiB parts) without checksum (`-N` ETag)"),
    "mp4-1GiB-crc32": _mp4("mpu-crc32", "multipart with a FULL_OBJECT CRC32"),
    "mp4-1GiB-crc32c": _mp4("mpu-crc32c", "multipart with a FULL_OBJECT CRC32C"),
    "mp4-1GiB-crc64nvme": _mp4("mpu-crc64nvme", "multipart with a FULL_OBJECT CRC64NVME"),
    "raw-2000x256KiB-put": _raw(
        2000, 256 << 10, "put", "2,000 raw segments of 256 KiB, single PUT (MD5 ETag)"
    ),
    "raw-2000x256KiB-crc32": _raw(
        2000, 256 << 10, "put-crc32", "2,000 raw segments of 256 KiB, single PUT with CRC32"
    ),
    "tiny-20000x4KiB-put": _raw(
        20_000, 4 << 10, "put", "20,000 raw segments of 4 KiB, single PUT (MD5 ETag)"
    ),
    "tiny-20000x4KiB-crc32": _raw(
        20_000, 4 << 10, "put-crc32", "20,000 raw segments of 4 KiB, single PUT with CRC32"
    ),
    "zarr-4000x32KiB": Workload(
        [RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=4000)],
        "ursa-assets",
        "auto",
        "ingested",
        "a Zarr store of 4,000 chunks of 32 KiB (engine upload, CRC32)",
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
        "Zarr (500 chunks) + Lance + 512 MiB MP4 + Parquet (engine upload, CRC32)",
    ),
    "rows-1000x5": Workload(
        [
            RowSpec("eeg", f"w{i:04d}", status="raw", segments=5, segment_size=64 << 10)
            for i in range(1000)
        ],
        "ursa-raw",
        "raw",
        "raw",
        "1,000 rows x 5 raw segments of 64 KiB in one call, single PUT (MD5 ETag)",
        "put",
    ),
    "calls-200x1": Workload(
        [RowSpec("eeg", status="raw", segments=1, segment_size=256 << 10)],
        "ursa-raw",
        "raw",
        "raw",
        "200 sequential downloads of a one-object row (256 KiB, single PUT), one process",
        "put",
        ("ursa-calls", "obstore-calls"),
    ),
}
TOOLS = ("ursa", "ursa-size", "s5cmd", "rclone", "obstore", "boto3", "crt")
MD5_WORKLOAD = "mp4-1GiB-put"  # also runs the MD5 bound (hashlib over the same bytes)
CALLS = 200
SLOW_S = 30.0  # a tool slower than this in round 1 runs once (boto3 on 20,000 objects)
DEST = os.environ.get("URSA_BENCH_DEST", "tmpfs")
assert DEST in ("tmpfs", "disk"), "URSA_BENCH_DEST must be tmpfs or disk"


def child_env(endpoint: str, work: Path) -> dict[str, str]:
    """Profile "bench" for a child process: a config file, credentials in the environment."""
    config = work / "config.toml"
    config.write_text(
        f'[profiles.bench]\nendpoint = "{endpoint}"\nallow_http = true\n'
        'catalog = "s3://ursa-catalog/catalog.lance"\nraw_bucket = "ursa-raw"\n'
        'assets_bucket = "ursa-assets"\n'
    )
    return os.environ | {
        "URSA_CONFIG": str(config),
        "URSA_BENCH_ACCESS_KEY_ID": KEY,
        "URSA_BENCH_SECRET_ACCESS_KEY": SECRET,
    }


@contextlib.contextmanager
def bench_store(work: Path) -> Iterator[tuple[SeaweedServer, Profile]]:
    """A SeaweedFS of its own under `work`, with the three buckets and profile "bench"
    (for the benchmark scripts that run outside pytest)."""
    with start_seaweed(work / "seaweed", access_key_id=KEY, secret_access_key=SECRET) as server:
        for bucket in ("ursa-catalog", "ursa-raw", "ursa-assets"):
            server.create_bucket(bucket)
        yield server, Profile(
            name="bench", endpoint=server.endpoint, allow_http=True,
            catalog="s3://ursa-catalog/catalog.lance", raw_bucket="ursa-raw",
            assets_bucket="ursa-assets", access_key_id=KEY, secret_access_key=SECRET,
        )  # fmt: skip


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


def build(name: str, profile_fields: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Generate a workload with ursa.testing (content and catalog rows), upload its objects
    as its `upload` mode says, and return the spec every tool gets."""
    if name in _built:
        return _built[name]
    w = WORKLOADS[name]
    profile = Profile(**profile_fields, access_key_id=KEY, secret_access_key=SECRET)
    # Each workload its own seed, hence its own recording hash and key prefix: a shared
    # one would put another workload's objects in this one's download.
    rec = build_recording(
        profile, w.rows, seed=list(WORKLOADS).index(name) + 1, workdir=scratch,
        checksums=w.upload == "engine",
    )  # fmt: skip
    assert all(b["recording_hash"] != rec.recording_hash for b in _built.values())
    prefix = f"{rec.recording_hash}/"
    s3 = uploads.client(profile_fields["endpoint"], KEY, SECRET)
    objects = []
    for bucket in ("ursa-raw", "ursa-assets"):
        keys = uploads.reupload(s3, bucket, prefix, w.upload)
        if bucket == w.bucket:
            objects = keys
    spec: dict[str, Any] = {
        "name": name,
        "endpoint": profile_fields["endpoint"],
        "bucket": w.bucket,
        "prefix": prefix,
        "objects": objects if len(objects) == 1 else [],
        "profile": profile_fields,
        "recording_hash": rec.recording_hash,
        "source": w.source,
        "status": w.status,
        "concurrency": 64,
        "part_size": 16 * MiB,
        "calls": CALLS,
    }
    if name == MD5_WORKLOAD:  # the MD5 bound hashes the same bytes, read from tmpfs
        big = max(objects, key=lambda k: s3.head_object(Bucket=w.bucket, Key=k)["ContentLength"])
        source = scratch / "md5-source.bin"
        s3.download_file(w.bucket, big, str(source))
        spec["md5_source"] = [str(source)]
    os.sync()  # the upload's writeback (the server's volumes) must not land in a run
    _built[name] = spec
    return spec


def process_cpu_s(pid: int) -> float:
    """CPU (user+sys, every thread) process `pid` has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measure:
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    server_cpu_s: list[float] = field(default_factory=list)  # SeaweedFS's, during the run
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
    """Clear a run's output. On tmpfs, at once. On disk, without freeing many inodes while
    the benchmark runs: ext4 without a journal (as on these VMs) steps over every inode
    freed in the last minute, one by one, when it creates a file: right after 20,000 files
    were deleted, creating a file took ~650 µs instead of ~60 µs (measured), which made the
    small-object rows depend on which tool ran after which deletion. Big files (most bytes,
    few inodes) go now; the rest waits in `trash` until the session ends. Then everything
    dirty is flushed: right after 20,000 small files, a 64 MiB download took 0.20 s
    instead of 0.06 s."""
    if not dest.exists():
        return
    if DEST == "tmpfs":
        shutil.rmtree(dest)
        return
    for path in dest.rglob("*"):
        if path.is_file() and path.stat().st_size >= MiB:
            path.unlink()
    trash.mkdir(parents=True, exist_ok=True)
    dest.rename(Path(tempfile.mkdtemp(dir=trash)) / dest.name)
    os.sync()  # this run's writeback must not land in the next run's time


def make_scratch(fallback: Path) -> Path:
    """A directory on tmpfs when there is one (else under `fallback`): to generate
    workloads in before upload, so that deleting the generated files (20,000 for one
    workload) frees no inodes on the disk the tools may write to (see `retire`), and as
    the tools' destination when URSA_BENCH_DEST=tmpfs."""
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


@pytest.fixture
def dest_root(scratch: Path, tmp_path: Path) -> Path:
    """Where the tools write: tmpfs (the main table) or the disk (URSA_BENCH_DEST=disk)."""
    if DEST == "tmpfs" and scratch.is_relative_to("/dev/shm"):
        return Path(tempfile.mkdtemp(prefix="dest-", dir=scratch))
    assert DEST == "disk", "URSA_BENCH_DEST=tmpfs but there is no writable /dev/shm"
    return tmp_path


def record(workload: str, tool: str, result: dict[str, Any]) -> None:
    peers = RESULTS.setdefault(workload, {})
    if tool != "md5":  # the MD5 bound writes nothing
        for other, measure in peers.items():
            if other != "md5":
                assert measure.bytes == result["bytes"], (
                    f"{tool} and {other} wrote different byte counts"
                )
    m = peers.setdefault(tool, Measure())
    m.wall_s.append(result["wall_s"])
    m.cpu_s.append(result["cpu_s"])
    m.server_cpu_s.append(result["server_cpu_s"])
    m.rss_kib.append(result["rss_kib"])
    m.bytes = result["bytes"]
    if result["retries"] is not None:
        m.retries = (m.retries or 0) + result["retries"]


def _peers(tools: dict[str, Measure]) -> dict[str, float]:
    """Median times of the tools that are not ursa (nor the MD5 bound)."""
    return {
        t: statistics.median(m.wall_s)
        for t, m in tools.items()
        if not t.startswith("ursa") and t != "md5"
    }


def _cpu_gib(m: Measure) -> float:
    return statistics.median(m.cpu_s) / (max(m.bytes, 1) / GiB)


def summary() -> str:
    """One line per workload: ursa's ratios to the best peer (and to rclone, which checks
    MD5 as ursa does) and CPU per GiB."""
    lines = [
        "| workload | best peer (s) | ursa / best | ursa-size / best | ursa / rclone "
        "| CPU s/GiB ursa · ursa-size · best peer · least of peers |",
        "|---|---|---|---|---|---|",
    ]
    for workload, tools in RESULTS.items():
        peers = _peers(tools)
        if not peers:
            continue
        best = min(peers, key=peers.__getitem__)
        med = {t: statistics.median(m.wall_s) for t, m in tools.items()}
        ursa = "ursa-calls" if "ursa-calls" in tools else "ursa"

        def ratio(tool: str, other: float | None, med: dict[str, float] = med) -> str:
            return f"{med[tool] / other:.2f}" if tool in med and other else "-"

        def cpu(tool: str, tools: dict[str, Measure] = tools) -> str:
            return f"{_cpu_gib(tools[tool]):.2f}" if tool in tools else "-"

        least = min(_cpu_gib(tools[t]) for t in peers)
        lines.append(
            f"| {workload} | {best} {peers[best]:.2f} | {ratio(ursa, peers[best])} "
            f"| {ratio('ursa-size', peers[best])} | {ratio(ursa, peers.get('rclone'))} "
            f"| {cpu(ursa)} · {cpu('ursa-size')} · {cpu(best)} · {least:.2f} |"
        )
    return "\n".join(lines) + "\n"


def bounds() -> str:
    """The single-PUT 1 GiB object: the transfer bound (the best time of a tool that checks
    the size only), the MD5 bound (hashlib over the same bytes on one core), and ursa."""
    tools = RESULTS.get(MD5_WORKLOAD, {})
    if "md5" not in tools or "ursa" not in tools:
        return ""
    med = {t: statistics.median(m.wall_s) for t, m in tools.items()}
    size_only = {t: v for t, v in med.items() if t not in ("ursa", "rclone", "md5")}
    fastest = min(size_only, key=size_only.__getitem__)
    bound = max(size_only[fastest], med["md5"])
    ursa = tools["ursa"]
    cpu, server_cpu = statistics.median(ursa.cpu_s), statistics.median(ursa.server_cpu_s)
    cores = os.cpu_count() or 1
    return (
        f"MD5 bounds on {MD5_WORKLOAD} (same run): transfer bound {size_only[fastest]:.2f} s "
        f"({fastest}, size only); MD5 bound {med['md5']:.2f} s (hashlib.md5 over the 1 GiB in "
        f"memory, one core, {GiB / med['md5'] / 1e6:,.0f} MB/s); max = {bound:.2f} s; "
        f"ursa {med['ursa']:.2f} s = {med['ursa'] / bound:.2f} x the bound"
        + (f", {med['ursa'] / med['rclone']:.2f} x rclone" if "rclone" in med else "")
        + f". The CPU both sides need: ursa {cpu:.2f} s + SeaweedFS {server_cpu:.2f} s on "
        f"{cores} cores: at least {(cpu + server_cpu) / cores:.2f} s; ursa = "
        f"{med['ursa'] / ((cpu + server_cpu) / cores):.2f} x that.\n"
    )


def table() -> str:
    lines = []
    for workload, tools in RESULTS.items():
        what = WORKLOADS[workload].what
        medians = {t: statistics.median(m.wall_s) for t, m in tools.items()}
        peers = _peers(tools)
        best = min(peers, key=peers.__getitem__) if peers else None
        lines += [
            f"### {workload} — {what}",
            "",
            "| tool | median s (runs) | min, max s | MB/s | vs best peer | CPU s/GiB "
            "| server CPU s/GiB | peak RSS MiB | retries |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for tool in sorted(tools, key=medians.__getitem__):
            m = tools[tool]
            ratio = f"{medians[tool] / peers[best]:.2f} of {best}" if best else "-"
            rate = m.bytes / medians[tool] / 1e6 if tool != "md5" else GiB / medians[tool] / 1e6
            cpu = "-" if tool == "md5" else f"{_cpu_gib(m):.2f}"
            gib = max(m.bytes, 1) / GiB
            server = "-" if tool == "md5" else f"{statistics.median(m.server_cpu_s) / gib:.2f}"
            lines.append(
                f"| {tool} | {medians[tool]:.3f} ({len(m.wall_s)}) "
                f"| {min(m.wall_s):.2f}, {max(m.wall_s):.2f} | {rate:,.0f} | {ratio} "
                f"| {cpu} | {server} | {max(m.rss_kib) / 1024:.0f} "
                f"| {'-' if m.retries is None else m.retries} |"
            )
        lines.append("")
    return "\n".join(lines)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not RESULTS:
        return
    text = summary() + "\n" + bounds() + "\n" + table()
    print("\n" + text)
    if os.environ.get("URSA_BENCH_PROFILE"):
        return  # profiled runs are slower: they never replace the published table
    name = "benchmarks" if DEST == "tmpfs" else "benchmarks-disk"
    if os.environ.get("URSA_BENCH_WORKLOADS") or os.environ.get("URSA_BENCH_TOOLS"):
        name += "-partial"  # a selection never replaces the full table
    out = ROOT / "docs" / f"{name}.md"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    selection = " ".join(
        f"{k}={os.environ[k]}" for k in sorted(os.environ) if k.startswith("URSA_BENCH_")
    )
    header = (
        f"# Benchmarks: latest run ({stamp}), destination on {DEST}\n\n"
        f"Produced by `{selection + ' ' if selection else ''}make bench` (`pytest "
        f"{' '.join(sys.argv[1:]) or 'benches'}`; the engine built in release mode): every "
        "tool downloads the same objects from one SeaweedFS on loopback into a fresh "
        f"directory on {DEST}, each run in its own process, tools interleaved round by round "
        "(each round every tool once, the order rotated by one tool per round). Objects are "
        "uploaded with boto3 the ways users' objects were (benches/uploads.py: single PUT "
        "with only an MD5 ETag, multipart with a `-N` ETag and no checksum, multipart with a "
        "FULL_OBJECT CRC32/CRC32C/CRC64NVME, single PUT with a CRC32), or by the engine "
        "with a CRC32 (zarr, mixed). Time and CPU (user+sys, a CLI tool's included) are "
        "measured inside that process around the transfer, after module imports (median of "
        "the runs); server CPU is SeaweedFS's over the tool's whole process; peak RSS is "
        "the whole process's; the ratio is the tool's median over the "
        "best peer's (peers: every tool but ursa); retries are the requests a tool retried "
        "over all its runs (- where the tool does not report them). A tool slower than "
        f"{SLOW_S:.0f} s in round 1 runs once.\n\n"
        'Tools: `ursa` (verify="auto": a stored CRC32/CRC32C/CRC64NVME, else a single-part '
        'MD5 ETag, else the size), `ursa-size` (verify="size"), s5cmd (no check), rclone '
        "(its default checks on: size, and the MD5 of single-part objects against the ETag), "
        "obstore (no check), boto3 (`download_file`, 64 threads), crt (awscrt's S3 client through "
        "s3transfer's CRT manager, as the AWS CLI's crt client; boto3's "
        '`preferred_transfer_client="crt"` drops endpoint_url, see runner.py). '
        "`md5` is hashlib.md5 over the single-PUT object's "
        "1 GiB, already in memory, on one core (the MD5 bound). The calls workload: "
        f"`ursa-calls` makes {CALLS} sequential `download()` calls of a one-object row in one "
        f"process (the catalog queried once, before the clock), `obstore-calls` the same "
        f"{CALLS} GETs sequentially, writing the files.\n\n## Summary\n\n"
    )
    out.write_text(header + text)


def core_build() -> str:
    """Which Cargo profile built ``ursa._core``: a dev build keeps its debug info."""
    from ursa import _core

    try:
        sections = subprocess.run(
            ["readelf", "-S", "-W", _core.__file__], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "of an unknown profile"
    if ".debug_info" in sections:
        return "a dev build (debug info, unoptimized)"
    return "a release build"


def measure_and_write(
    doc: str, measure: Callable[[Path], str], prefix: str, base: str | None = None
) -> None:
    """Run a benchmark script's ``measure`` in a scratch directory (removed after), write its
    text to ``docs/<doc>`` and print it."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        text = measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (ROOT / "docs" / doc).write_text(text)
    print(text)
