"""Space for a large file is reserved before its first byte, with ``fallocate(2)``; where
the filesystem cannot reserve (NFSv3, older ZFS, here ramfs) the file is only sized, never
filled a byte per block as glibc's ``posix_fallocate`` emulation does (on a network
filesystem that is one round trip per 4 KiB before the download even starts).

The filesystem is a ramfs mounted in a private mount namespace (``unshare``), the
syscalls are witnessed by strace, and the bytes are checked against boto3."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import subprocess_env
from ursa import DataInterface, Profile
from ursa.testing import Recording, RowSpec, build_recording
from ursa.testing.seaweed import SeaweedServer

MiB = 1 << 20


@pytest.fixture(scope="module")
def big_raw(profile: Profile) -> Recording:
    # Two raw segments of 3 MiB: each large enough to be reserved before it is written.
    return build_recording(
        profile, [RowSpec("audio", status="raw", segments=2, segment_size=3 * MiB)], seed=171
    )


def _namespaces_work() -> None:
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"this test needs user namespaces (unshare -rm): {probe.stderr}"
    assert shutil.which("strace"), "this test needs strace: apt-get install strace (make test does)"


def test_a_filesystem_without_fallocate_is_not_filled_byte_by_byte(
    s3: SeaweedServer, profile: Profile, big_raw: Recording, boto: Any, tmp_path: Path
) -> None:
    _namespaces_work()
    env = subprocess_env(s3.endpoint, tmp_path)
    mnt, copy, log = tmp_path / "ramfs", tmp_path / "copy", tmp_path / "strace.log"
    mnt.mkdir()
    download = [
        "strace", "-f", "-e", "trace=fallocate,pwrite64", "-o", str(log),
        sys.executable, "-m", "ursa.cli", "download", big_raw.recording_hash,
        "--dest", str(mnt / "dl"), "--profile", "r2-test", "--status", "all", "--quiet",
    ]  # fmt: skip
    # The ramfs lives only as long as the namespace: copy what landed out of it.
    script = f'mount -t ramfs ramfs "$1" && {" ".join(download)} && cp -r "$1/dl" "$2"'
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(mnt), str(copy)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    # Threads interleave in the log ("<unfinished ...>" / "<... fallocate resumed>").
    trace = log.read_text()
    reserved = re.findall(r"fallocate\(\d+, 0, 0, (\d+)", trace)
    refused = re.findall(r"fallocate.*= -1 EOPNOTSUPP", trace)
    assert sorted(int(n) for n in reserved) == [3 * MiB, 3 * MiB], trace[-2000:]
    assert len(refused) == 2, trace[-2000:]
    one_byte = re.findall(r'pwrite64\(\d+, "\\0", 1, \d+', trace)
    assert not one_byte, f"{len(one_byte)} one-byte writes: the file was filled block by block"

    data = DataInterface(profile)
    plan = data.plan_download(data.query(recording_hash=big_raw.recording_hash, status="all"), copy)
    assert len(plan.files) == 2
    for f in plan.files:
        body = boto.get_object(Bucket="ursa-raw", Key=f.key)["Body"].read()
        assert f.path.read_bytes() == body, f.key
