"""Run one tool on one workload in this process and print what it did as JSON.

Every tool runs in its own process (started by the benchmark) so that its CPU time and
peak RSS can be read from the OS. The transfer is timed inside the process, around the
download itself, so that interpreter start-up and module imports do not count against the
Python tools.

    python benches/runner.py TOOL SPEC_JSON DEST

SPEC_JSON: {"endpoint", "bucket", "prefix", "profile": {...}, "recording_hash", "source",
"status", "concurrency", "part_size"}; credentials come from the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), never the command line.

With URSA_BENCH_PROFILE=DIR, the transfer runs under cProfile and its stats are written
to DIR (to see where a Python tool's time goes; the figures of such a run are not
comparable).
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MiB = 1 << 20


def _keys() -> tuple[str, str]:
    return os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]


def _hwm_kib(pid: int | str = "self") -> int:
    """Peak RSS (VmHWM) of a live process since its exec."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


PEAK_KIB = 0
# (wall, CPU) when the clock starts, set by a tool whose untimed set-up runs inside it
STARTED: tuple[float, float] | None = None

# Imported before the clock starts, like interpreter start-up: module import time is not
# transfer time for any Python tool (ursa's catalog query itself is timed).
PRELOAD = {
    "ursa": ("ursa", "lance"),
    "ursa-size": ("ursa", "lance"),
    "ursa-calls": ("ursa", "lance"),
    "obstore-calls": ("obstore", "obstore.store"),
    "crt": ("botocore.session", "botocore.config", "s3transfer.crt", "awscrt.s3"),
    "obstore": ("obstore", "obstore.store"),
    "boto3": ("boto3", "boto3.s3.transfer", "botocore.config"),
}


def _run_cli(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a CLI tool, sampling its peak RSS until it exits (the kernel's ru_maxrss of a
    child also counts the forking parent's pages, so it cannot be used here)."""
    global PEAK_KIB
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    while proc.poll() is None:
        with contextlib.suppress(OSError, ValueError):  # it may exit between polls
            PEAK_KIB = max(PEAK_KIB, _hwm_kib(proc.pid))
        time.sleep(0.02)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv[0])


def run_ursa(spec: dict[str, Any], dest: Path, verify: str = "auto") -> int | None:
    from ursa import DataInterface, DownloadProgress, Profile

    key, secret = _keys()
    profile = Profile(**spec["profile"], access_key_id=key, secret_access_key=secret)
    data = DataInterface(profile)
    rows = data.query(recording_hash=spec["recording_hash"], status=spec["status"])
    seen = retries = 0

    def progress(event: DownloadProgress) -> None:  # a callback attached, as users do
        nonlocal seen, retries
        seen, retries = seen + 1, event.retries

    paths = data.download(rows, dest, source=spec["source"], progress=progress, verify=verify)
    assert seen >= len(paths)
    return retries


def run_ursa_size(spec: dict[str, Any], dest: Path) -> int | None:
    return run_ursa(spec, dest, verify="size")


def run_ursa_calls(spec: dict[str, Any], dest: Path) -> None:
    """Per-call overhead: one `download()` call per one-object row, sequentially, in one
    process (the catalog query is made once, before the clock: it is not per call)."""
    from ursa import DataInterface, Profile

    key, secret = _keys()
    profile = Profile(**spec["profile"], access_key_id=key, secret_access_key=secret)
    data = DataInterface(profile)
    rows = data.query(recording_hash=spec["recording_hash"], status=spec["status"])
    global STARTED
    STARTED = (time.perf_counter(), _cpu_s())
    for i in range(spec["calls"]):
        data.download(rows, dest / f"c{i}", source=spec["source"])


def run_obstore_calls(spec: dict[str, Any], dest: Path) -> None:
    """obstore doing the same GETs as `run_ursa_calls`, sequentially, writing the files."""
    import obstore
    from obstore.store import S3Store

    key, secret = _keys()
    store = S3Store(
        spec["bucket"], endpoint=spec["endpoint"], region="us-east-1",
        access_key_id=key, secret_access_key=secret, client_options={"allow_http": True},
    )  # fmt: skip
    (name,) = spec["objects"]
    for i in range(spec["calls"]):
        path = dest / f"c{i}" / name[len(spec["prefix"]) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        result = obstore.get(store, name)
        with path.open("wb") as f:
            for chunk in result:
                f.write(chunk)


def run_s5cmd(spec: dict[str, Any], dest: Path) -> None:
    s5cmd = shutil.which("s5cmd", path=os.path.dirname(sys.executable)) or "s5cmd"
    src = f"s3://{spec['bucket']}/{spec['prefix']}*"
    _run_cli(
        [s5cmd, "--endpoint-url", spec["endpoint"], "--numworkers", str(spec["concurrency"]),
         "cp", "--concurrency", "8", "--part-size", str(spec["part_size"] // MiB), src, f"{dest}/"],
    )  # fmt: skip


def run_rclone(spec: dict[str, Any], dest: Path) -> None:
    rclone = shutil.which("rclone", path=os.path.dirname(sys.executable)) or "rclone"
    key, secret = _keys()
    env = os.environ | {
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": spec["endpoint"],
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": secret,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }
    _run_cli(
        [rclone, "copy", f"bench:{spec['bucket']}/{spec['prefix']}", str(dest),
         "--transfers", str(spec["concurrency"]), "--checkers", str(spec["concurrency"]),
         "--multi-thread-streams", "8", "--multi-thread-cutoff", f"{spec['part_size'] // MiB}M",
         "--multi-thread-chunk-size", f"{spec['part_size'] // MiB}M", "--no-check-dest",
         "--config", "/dev/null"],
        env=env,
    )  # fmt: skip


def run_obstore(spec: dict[str, Any], dest: Path) -> None:
    import obstore
    from obstore.store import S3Store

    key, secret = _keys()
    store = S3Store(
        spec["bucket"], endpoint=spec["endpoint"], region="us-east-1",
        access_key_id=key, secret_access_key=secret, client_options={"allow_http": True},
    )  # fmt: skip
    part = spec["part_size"]

    async def fetch(meta: Any, sem: asyncio.Semaphore) -> None:
        path = dest / meta["path"][len(spec["prefix"]) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        size = meta["size"]
        if size <= part:
            async with sem:  # the file is opened under the semaphore: bounded open files
                result = await obstore.get_async(store, meta["path"])
                with path.open("wb") as f:
                    async for chunk in result.stream():
                        f.write(chunk)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

        async def ranged(start: int) -> None:
            async with sem:
                end = min(start + part, size)
                data = await obstore.get_range_async(store, meta["path"], start=start, end=end)
                os.pwrite(fd, memoryview(data), start)

        try:
            await asyncio.gather(*(ranged(s) for s in range(0, size, part)))
        finally:
            os.close(fd)

    async def main() -> None:
        objects = [m async for batch in obstore.list(store, spec["prefix"]) for m in batch]
        sem = asyncio.Semaphore(spec["concurrency"])
        await asyncio.gather(*(fetch(m, sem) for m in objects))

    asyncio.run(main())


def run_boto3(spec: dict[str, Any], dest: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    key, secret = _keys()
    conc = spec["concurrency"]
    s3 = boto3.client(
        "s3", endpoint_url=spec["endpoint"], aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(max_pool_connections=conc, s3={"addressing_style": "path"}),
    )  # fmt: skip
    config = TransferConfig(
        multipart_threshold=spec["part_size"], multipart_chunksize=spec["part_size"],
        max_concurrency=8,
    )  # fmt: skip
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=spec["bucket"], Prefix=spec["prefix"]
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]

    def one(key: str) -> None:
        path = dest / key[len(spec["prefix"]) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(spec["bucket"], key, str(path), Config=config)

    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, keys))


def run_crt(spec: dict[str, Any], dest: Path) -> None:
    """The AWS CRT S3 client (awscrt, which plans its own ranged GETs and connections)
    through s3transfer's CRT transfer manager, as the AWS CLI's `crt` transfer client uses
    it: one manager, every object submitted at once. boto3's own route to it,
    `TransferConfig(preferred_transfer_client="crt")`, cannot reach SeaweedFS: it drops the
    client's endpoint_url and forces TLS (boto3/crt.py), so it resolves `<bucket>.s3…`
    and fails with AWS_IO_DNS_INVALID_NAME."""
    import botocore.session
    from botocore.config import Config
    from s3transfer.crt import (
        BotocoreCRTCredentialsWrapper,
        BotocoreCRTRequestSerializer,
        CRTTransferManager,
        create_s3_crt_client,
    )

    key, secret = _keys()
    session = botocore.session.Session()
    kwargs = {
        "region_name": "us-east-1", "endpoint_url": spec["endpoint"],
        "aws_access_key_id": key, "aws_secret_access_key": secret,
        "config": Config(s3={"addressing_style": "path"}),
    }  # fmt: skip
    s3 = session.create_client("s3", **kwargs)
    credentials = BotocoreCRTCredentialsWrapper(s3._get_credentials())
    crt = create_s3_crt_client(
        "us-east-1", crt_credentials_provider=credentials.to_crt_credentials_provider(),
        part_size=spec["part_size"], use_ssl=False,
    )  # fmt: skip
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=spec["bucket"], Prefix=spec["prefix"]
    )
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    with CRTTransferManager(crt, BotocoreCRTRequestSerializer(session, kwargs)) as manager:
        futures = []
        for k in keys:
            path = dest / k[len(spec["prefix"]) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            futures.append(manager.download(spec["bucket"], k, str(path)))
        for future in futures:
            future.result()


def run_md5(spec: dict[str, Any], dest: Path) -> None:
    """The MD5 bound: hashlib.md5 over the object's bytes, already in memory (fetched
    before the clock), on one core. Writes nothing."""
    import hashlib

    global STARTED
    (body,) = [Path(p).read_bytes() for p in spec["md5_source"]]
    STARTED = (time.perf_counter(), _cpu_s())
    digest = hashlib.md5(body).hexdigest()
    assert len(digest) == 32


TOOLS = {
    "ursa": run_ursa,
    "ursa-size": run_ursa_size,
    "crt": run_crt,
    "md5": run_md5,
    "ursa-calls": run_ursa_calls,
    "obstore-calls": run_obstore_calls,
    "s5cmd": run_s5cmd,
    "rclone": run_rclone,
    "obstore": run_obstore,
    "boto3": run_boto3,
}


def _cpu_s() -> float:
    """User+system CPU of this process and its finished children (a CLI tool's)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    tool, spec_json, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    spec = json.loads(Path(spec_json).read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for module in PRELOAD.get(tool, ()):
        importlib.import_module(module)
    profile_to = os.environ.get("URSA_BENCH_PROFILE")  # a directory for cProfile stats
    profiler = cProfile.Profile() if profile_to else None
    cpu_before, started = _cpu_s(), time.perf_counter()
    if profiler:
        profiler.enable()
    retries = TOOLS[tool](spec, dest)  # None: the tool does not report its retries
    ended = time.perf_counter()
    if STARTED is not None:  # set-up inside the tool (a query, a read) is not measured
        started, cpu_before = STARTED
    wall, cpu = ended - started, _cpu_s() - cpu_before
    if profiler and profile_to:
        profiler.disable()
        profiler.dump_stats(Path(profile_to) / f"{spec['name']}-{tool}-{dest.name}.prof")
    # ursa's own records of what it published (.ursa/ in each dest, for resume=True) are not the
    # objects' bytes; writing them is inside the timed region all the same.
    files = [p for p in dest.rglob("*") if p.is_file() and ".ursa" not in p.relative_to(dest).parts]
    peak = max(PEAK_KIB, _hwm_kib())
    size = sum(p.stat().st_size for p in files)
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "files": len(files),
                "bytes": size,
                "rss_kib": peak,
                "retries": retries,
            }
        )
    )


if __name__ == "__main__":
    main()
