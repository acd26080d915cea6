"""Ctrl+C, kill -9 and the temporaries they leave (or don't): a download in a child
process, slowed or stalled by the fault proxy, interrupted from outside."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SECRET_KEY, subprocess_env, temporaries
from faultproxy import FaultProxy, Rule
from ursa import DataInterface, Profile, _core
from ursa.testing import Recording, RowSpec, build_recording

MiB = 1 << 20
CHILD = """
import signal, sys
# Ctrl+C in a terminal: a test run started in the background (SIGINT ignored, inherited)
# must not turn this child deaf to the SIGINT the test sends.
signal.signal(signal.SIGINT, signal.default_int_handler)
from ursa import DataInterface, RetryPolicy
data = DataInterface("r2-test")
rows = data.query(recording_hash=sys.argv[1])
def progress(event):
    if event.phase == "plan_done":
        print("planned", flush=True)
data.download(rows, sys.argv[2], progress=progress, part_size=1 << 20,
              retry=RetryPolicy(idle_timeout_s=120))
print("finished", flush=True)
"""


@pytest.fixture(scope="module")
def rec(profile: Profile) -> Recording:
    rows = [
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=8 * MiB),
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=4),
    ]
    return build_recording(profile, rows, seed=51)


def start_child(proxy: FaultProxy, rec: Recording, dest: Path, tmp: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, rec.recording_hash, str(dest)],
        env=subprocess_env(proxy.endpoint, tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    if child.stdout.readline().strip() != "planned":
        child.kill()
        raise AssertionError(f"the child failed before planning: {child.stderr.read()}")
    cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
    assert SECRET_KEY.encode() not in cmdline, "a secret on a command line"
    return child


def wait_for_bytes(dest: Path, timeout: float = 20) -> None:
    """Until a temporary exists with space reserved (the transfer is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.is_file() and p.stat().st_blocks for p in temporaries(dest)):
            return
        time.sleep(0.05)
    raise AssertionError("the download never started writing")


def wait_until(condition: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def slow_mp4(rec: Recording) -> Rule:
    key = f"{rec.recording_hash}/camera/camera\\.mp4$"
    return Rule("slow", method="GET", key=key, chunk=16 * 1024, delay_s=0.05)


def stall_all(rec: Recording) -> Rule:
    """Every object of the recording sends its response head, then nothing."""
    key = f"^/ursa-assets/{rec.recording_hash}/"
    return Rule("stall", method="GET", key=key, after_bytes=0, delay_s=0)


@pytest.mark.parametrize("fault", [slow_mp4, stall_all], ids=["flowing", "stalled"])
def test_ctrl_c_exits_promptly_and_leaves_nothing(
    proxy: FaultProxy, rec: Recording, tmp_path: Path, fault: object
) -> None:
    proxy.clear()
    proxy.add(fault(rec))  # type: ignore[operator]
    dest = tmp_path / "dest"
    child = start_child(proxy, rec, dest, tmp_path)
    try:
        wait_for_bytes(dest)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        child.kill()
        child.communicate()  # reaps it and closes its pipes, whatever happened above
        proxy.clear()
    assert took < 2.0, f"took {took:.2f}s to stop"
    assert "KeyboardInterrupt" in err
    assert not temporaries(dest)
    assert not (dest / rec.recording_hash / "camera" / "camera.mp4").exists()


def test_a_killed_runs_temporaries_are_cleaned_by_the_next_run(
    proxy: FaultProxy, profile: Profile, rec: Recording, tmp_path: Path
) -> None:
    """kill -9 leaves temporaries behind (nothing can run); the next download into the
    same place removes them — but never those of a download that is still alive."""
    proxy.clear()
    proxy.add(stall_all(rec))
    dest = tmp_path / "dest"
    killed = start_child(proxy, rec, dest, tmp_path)
    alive = start_child(proxy, rec, dest, tmp_path)
    try:
        # Every request of both runs must be stalled before the rule goes away.
        plan = DataInterface(profile).plan_download(
            DataInterface(profile).query(recording_hash=rec.recording_hash), dest
        )
        requests = sum(max(1, -(-f.size // MiB)) for f in plan.files)
        wait_until(lambda: sum(r.fault == "stall" for r in proxy.records()) >= 2 * requests)
        killed.kill()
        killed.wait(10)
        host = _core.host_name()
        stale = [p for p in temporaries(dest) if f".ursa-{host}-{killed.pid}-" in p.name]
        live = [p for p in temporaries(dest) if f".ursa-{host}-{alive.pid}-" in p.name]
        assert stale and live
        proxy.clear()
        data = DataInterface(profile)
        paths = data.download(data.query(recording_hash=rec.recording_hash), dest)
        assert not any(p.exists() for p in stale), "a dead run's temporaries survived"
        assert all(p.exists() for p in live), "a live run's temporaries were touched"
        mp4 = dest / rec.recording_hash / "camera" / "camera.mp4"
        assert mp4 in paths and mp4.stat().st_size == 8 * MiB
    finally:
        alive.kill()
        alive.wait(10)
        killed.kill()
        for stream in (killed.stdout, killed.stderr, alive.stdout, alive.stderr):
            if stream:
                stream.close()
        proxy.clear()


def test_bytes_after_a_ctrl_c_retry_are_exact(
    proxy: FaultProxy, profile: Profile, rec: Recording, tmp_path: Path
) -> None:
    """After an interrupted run, a new run into the same place delivers exact bytes (with
    overwrite=True for the files the first run had already finished)."""
    proxy.clear()
    proxy.add(slow_mp4(rec))
    dest = tmp_path / "dest"
    child = start_child(proxy, rec, dest, tmp_path)
    try:
        wait_for_bytes(dest)
        child.send_signal(signal.SIGINT)
        child.communicate(timeout=10)
    finally:
        child.kill()
        child.communicate()  # reaps it and closes its pipes, whatever happened above
        proxy.clear()
    data = DataInterface(profile)
    paths = data.download(data.query(recording_hash=rec.recording_hash), dest, overwrite=True)
    direct = DataInterface(profile)
    again = tmp_path / "again"
    for a, b in zip(
        paths, direct.download(direct.query(recording_hash=rec.recording_hash), again), strict=True
    ):
        assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
