"""The `ursa` command as a user runs it: a subprocess, a config file, credentials in the
environment (never on the command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SECRET_KEY, subprocess_env
from ursa.testing import Recording
from ursa.testing.seaweed import SeaweedServer


@pytest.fixture
def env(s3: SeaweedServer, tmp_path: Path) -> dict[str, str]:
    return subprocess_env(s3.endpoint, tmp_path) | {"COLUMNS": "200"}


def ursa(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ursa.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ursa: error: ") and "Traceback" not in result.stderr
    assert SECRET_KEY not in result.stderr + result.stdout
    return lines[0]


def test_query_prints_a_table(env: dict[str, str], recording: Recording) -> None:
    result = ursa(env, "query", recording.recording_hash, "--profile", "r2-test", "--status", "all")
    assert result.returncode == 0, result.stderr
    assert "8 rows" in result.stdout
    for modality in ("camera", "eeg", "events", "imu", "audio", "gaze", "emg"):
        assert modality in result.stdout


def test_download_json_lines(env: dict[str, str], recording: Recording, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    h = recording.recording_hash
    result = ursa(env, "download", h, "--dest", str(dest), "--profile", "r2-test", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["phase"] == "start" and events[-1]["phase"] == "finish"
    assert set(events[0]) >= {
        "phase",
        "recording_hash",
        "modality",
        "worker_id",
        "key",
        "bytes_done",
        "bytes_total",
        "elapsed_s",
    }
    assert events[-1]["bytes_done"] == events[-1]["bytes_total"] > 0
    assert (dest / h / "eeg" / "eeg.zarr" / "zarr.json").is_file()


def test_download_live_display_ends_with_a_summary(
    env: dict[str, str], recording: Recording, tmp_path: Path
) -> None:
    h = recording.recording_hash
    result = ursa(env, "download", h, "--dest", str(tmp_path), "--profile", "r2-test")
    assert result.returncode == 0, result.stderr
    assert "✓ eeg / default" in result.stderr
    assert "✓ camera / left" in result.stderr
    assert "Done — 25 files" in result.stderr and "0 retries" in result.stderr


def test_quiet_prints_nothing(env: dict[str, str], recording: Recording, tmp_path: Path) -> None:
    h = recording.recording_hash
    result = ursa(env, "download", h, "--dest", str(tmp_path), "--profile", "r2-test", "-q")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert (tmp_path / h / "imu" / "imu.parquet").is_file()


def test_wrong_hash(env: dict[str, str], tmp_path: Path) -> None:
    result = ursa(env, "download", "1AD200D6", "--dest", str(tmp_path), "--profile", "r2-test")
    assert result.returncode == 2
    assert "8 to 64 lowercase hex" in one_error_line(result)


def test_unknown_recording(env: dict[str, str], tmp_path: Path) -> None:
    result = ursa(env, "download", "e" * 64, "--dest", str(tmp_path), "--profile", "r2-test")
    assert result.returncode == 2
    assert "no ingested rows" in one_error_line(result)


def test_missing_credentials(env: dict[str, str], tmp_path: Path) -> None:
    del env["URSA_R2_TEST_SECRET_ACCESS_KEY"], env["URSA_R2_TEST_ACCESS_KEY_ID"]
    result = ursa(env, "download", "e" * 64, "--dest", str(tmp_path), "--profile", "r2-test")
    assert result.returncode == 4
    line = one_error_line(result)
    assert "r2-test" in line and "URSA_R2_TEST_ACCESS_KEY_ID" in line


def test_existing_dest(env: dict[str, str], recording: Recording, tmp_path: Path) -> None:
    h = recording.recording_hash
    target = tmp_path / h / "imu" / "imu.parquet"
    target.parent.mkdir(parents=True)
    target.write_text("mine")
    result = ursa(env, "download", h, "--dest", str(tmp_path), "--profile", "r2-test")
    assert result.returncode == 3
    assert "pass --overwrite" in one_error_line(result)
    assert target.read_text() == "mine"


def test_no_such_profile(env: dict[str, str], tmp_path: Path) -> None:
    result = ursa(env, "query", "--profile", "staging")
    assert result.returncode == 4
    assert "unknown profile 'staging'" in one_error_line(result)


def test_demo_runs_with_no_server_and_no_credentials_and_runs_again(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("URSA_", "AWS_"))}
    env["HOME"] = str(tmp_path / "home")
    for run in ("first", "again"):  # a second run into the same --dir works too
        result = subprocess.run(
            [sys.executable, "-m", "ursa.cli", "demo", "--dir", str(tmp_path / "demo")],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, (run, result.stderr)
        assert "Done — 537 files" in result.stderr
        assert ("reusing the demo recording" in result.stderr) == (run == "again")
    downloaded = tmp_path / "demo" / "download"
    (h,) = [p.name for p in downloaded.iterdir() if p.name != ".ursa"]
    assert (downloaded / h / "camera" / "right" / "camera.mp4.lance").is_dir()
    assert len(list((downloaded / h / "audio").iterdir())) == 120
