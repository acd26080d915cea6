"""durable=True: each published file is fsynced before its rename and each directory after
the renames into it. The bytes are checked against boto3; the fsyncs are counted with
strace on a child process (the only honest witness of a syscall from outside)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conftest import subprocess_env
from ursa import DataInterface, Profile
from ursa.testing import Recording
from ursa.testing.seaweed import SeaweedServer


def tree(root: Path) -> list[str]:
    """Every file under root but the download records in root/.ursa."""
    files = (p.relative_to(root) for p in root.rglob("*") if p.is_file())
    return sorted(p.as_posix() for p in files if p.parts[0] != ".ursa")


def assert_store_bytes(boto: Any, profile: Profile, recording: Recording, dest: Path) -> None:
    """Every planned file is byte-for-byte its object (read with boto3), nothing else is
    under dest, and no temporary is left."""
    data = DataInterface(profile)
    plan = data.plan_download(data.query(recording_hash=recording.recording_hash), dest / "x")
    assert plan.files
    expected: dict[str, bytes] = {}
    for f in plan.files:
        uri = plan.rows[f.row].storage_uri
        assert uri is not None
        bucket = urlsplit(uri).netloc
        rel = f.path.relative_to(dest / "x").as_posix()
        expected[rel] = boto.get_object(Bucket=bucket, Key=f.key)["Body"].read()
    assert tree(dest) == sorted(expected)
    for rel, body in expected.items():
        assert (dest / rel).read_bytes() == body, rel
    assert not [p for p in dest.rglob("*") if ".ursa-" in p.name], "temporaries left behind"


def test_durable_download_is_byte_exact_and_leaves_nothing_behind(
    profile: Profile, recording: Recording, boto: Any, tmp_path: Path
) -> None:
    data = DataInterface(profile)
    rows = data.query(recording_hash=recording.recording_hash)
    paths = data.download(rows, tmp_path / "sync", durable=True)
    assert sorted(p.relative_to(tmp_path / "sync").as_posix() for p in paths) == tree(
        tmp_path / "sync"
    )
    assert_store_bytes(boto, profile, recording, tmp_path / "sync")
    # Replacing a download whole (files and directory assets) is durable alike.
    data.download(rows, tmp_path / "sync", durable=True, overwrite=True)
    assert_store_bytes(boto, profile, recording, tmp_path / "sync")

    paths = asyncio.run(data.download_async(rows, tmp_path / "async", durable=True))
    assert len(paths) == len(tree(tmp_path / "async"))
    assert_store_bytes(boto, profile, recording, tmp_path / "async")


def _fsyncs(env: dict[str, str], recording: Recording, dest: Path, *flags: str) -> int:
    """fsync + fdatasync calls made by `ursa download` into `dest` (strace -f -c)."""
    assert shutil.which("strace"), "this test needs strace: apt-get install strace (make test does)"
    counts = dest.with_name(dest.name + ".strace")
    cmd = [
        "strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(counts),
        sys.executable, "-m", "ursa.cli", "download", recording.recording_hash,
        "--dest", str(dest), "--profile", "r2-test", "--quiet", *flags,
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    total = 0
    for line in counts.read_text().splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(fsync|fdatasync)$", line)
        if m:
            total += int(m.group(1))
    return total


def test_durable_fsyncs_each_file_and_each_directory(
    s3: SeaweedServer, recording: Recording, tmp_path: Path
) -> None:
    env = subprocess_env(s3.endpoint, tmp_path)
    plain = _fsyncs(env, recording, tmp_path / "plain")
    durable = _fsyncs(env, recording, tmp_path / "durable", "--durable")
    files = tree(tmp_path / "durable")
    dirs = {str(Path(f).parent) for f in files}
    assert tree(tmp_path / "plain") == files
    # One fsync per file, and at least one per directory the files were renamed into.
    assert plain == 0, f"{plain} fsyncs without --durable"
    assert durable >= len(files) + len(dirs), (durable, len(files), len(dirs))
