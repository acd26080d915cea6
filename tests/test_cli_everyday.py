"""The CLI's second release, run as a user runs it (a subprocess, credentials in the
environment): --version, -v/-vv, URSA_PROFILE, hash prefixes, an 80-column query table,
--help, messages in CLI words, --json failures, a closed pipe, SIGTERM, --dry-run, and a
demo that explains a missing extra and can be run twice."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import subprocess_env, temporaries
from faultproxy import FaultProxy, Rule
from test_cli import one_error_line, ursa
from ursa import DataInterface, Profile, cli
from ursa.testing import Recording, RowSpec, build_recording
from ursa.testing.seaweed import SeaweedServer

MiB = 1 << 20
TWINS = ("cafe0123" + "1" * 56, "cafe0123" + "2" * 56)  # share a 8-hex prefix


@pytest.fixture
def env(s3: SeaweedServer, tmp_path: Path) -> dict[str, str]:
    return subprocess_env(s3.endpoint, tmp_path) | {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def twins(profile: Profile) -> tuple[Recording, Recording]:
    rows = [RowSpec("imu", asset_format="parquet", segments=1, segment_size=64)]
    a = build_recording(profile, rows, seed=101, recording_hash=TWINS[0])
    b = build_recording(profile, rows, seed=102, recording_hash=TWINS[1])
    return a, b


@pytest.fixture(scope="module")
def big(profile: Profile) -> Recording:
    rows = [
        RowSpec("camera", asset_format="mp4", segments=1, segment_size=1, mp4_size=8 * MiB),
        RowSpec("eeg", asset_format="zarr", segments=1, segment_size=1, zarr_chunks=4),
    ]
    return build_recording(profile, rows, seed=103)


@pytest.fixture
def slow_env(proxy: FaultProxy, big: Recording, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The CLI's environment, through the proxy trickling ``big``'s objects (~2 s)."""
    proxy.clear()
    proxy.add(Rule("slow", method="GET", key=f"^/ursa-assets/{big.recording_hash}/",
                   chunk=16 * 1024, delay_s=0.01))  # fmt: skip
    yield subprocess_env(proxy.endpoint, tmp_path) | {"COLUMNS": "200"}
    proxy.clear()


def test_version(env: dict[str, str]) -> None:
    import ursa as package

    result = ursa(env, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"ursa {package.__version__}"


def test_help_has_a_line_per_option_examples_and_exit_codes(env: dict[str, str]) -> None:
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        undocumented = [a.dest for a in sub._actions if not a.help]
        assert not undocumented, (name, undocumented)
        text = ursa(env, name, "--help").stdout
        assert "examples:" in text and "exit codes:" in text and "143 SIGTERM" in text, text
    text = ursa(env, "download", "--help").stdout
    assert "{auto,raw,processed}" in text and "{by_recording,by_modality,flat}" in text
    assert "--dry-run" in text and "unique prefix" in text
    top = ursa(env, "--help").stdout
    assert "examples:" in top and "3 a destination file exists (pass --overwrite)" in top


def test_verbose_flags_turn_on_the_logger(
    env: dict[str, str], recording: Recording, tmp_path: Path
) -> None:
    h = recording.recording_hash
    info = ursa(env, "download", h, "--dest", str(tmp_path / "a"), "--profile", "r2-test", "-q",
                "-v")  # fmt: skip
    assert info.returncode == 0, info.stderr
    assert "INFO ursa.download: start" in info.stderr
    assert "INFO ursa.download: finish" in info.stderr
    assert "file_done" not in info.stderr
    debug = ursa(env, "-vv", "download", h, "--dest", str(tmp_path / "b"), "--profile",
                 "r2-test", "-q")  # fmt: skip
    assert debug.returncode == 0, debug.stderr
    assert debug.stderr.count("DEBUG ursa.download: file_done") == 25
    quiet = ursa(env, "download", h, "--dest", str(tmp_path / "c"), "--profile", "r2-test", "-q")
    assert quiet.stderr == ""


def test_ursa_profile_is_the_default_profile(env: dict[str, str], recording: Recording) -> None:
    h = recording.recording_hash
    result = ursa(env | {"URSA_PROFILE": "r2-test"}, "query", h, "--status", "all")
    assert result.returncode == 0, result.stderr
    assert "8 rows in profile 'r2-test'" in result.stdout
    named = ursa(env | {"URSA_PROFILE": "staging"}, "query", h)
    assert named.returncode == 4 and "unknown profile 'staging'" in one_error_line(named)


def test_a_unique_prefix_works_wherever_a_hash_does(
    env: dict[str, str], recording: Recording, tmp_path: Path
) -> None:
    h = recording.recording_hash
    query = ursa(env, "query", h[:8], "--profile", "r2-test", "--status", "all", "--json")
    assert query.returncode == 0, query.stderr
    assert {json.loads(line)["recording_hash"] for line in query.stdout.splitlines()} == {h}
    result = ursa(env, "download", h[:10], "--dest", str(tmp_path), "--profile", "r2-test", "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / h / "imu" / "imu.parquet").is_file()


def test_an_ambiguous_or_unknown_prefix_is_one_line(
    env: dict[str, str], twins: tuple[Recording, Recording], tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    result = ursa(env, "download", "cafe0123", "--dest", str(dest), "--profile", "r2-test")
    assert result.returncode == 2
    line = one_error_line(result)
    assert "cafe0123 is ambiguous" in line
    assert TWINS[0][:16] in line and TWINS[1][:16] in line
    assert not dest.exists()
    one = ursa(env, "query", TWINS[1][:9], "--profile", "r2-test", "--json")
    assert [json.loads(x)["recording_hash"] for x in one.stdout.splitlines()] == [TWINS[1]]
    unknown = ursa(env, "query", "0badc0de", "--profile", "r2-test")
    assert unknown.returncode == 2 and "starting with 0badc0de" in one_error_line(unknown)
    short = ursa(env, "query", "cafe012", "--profile", "r2-test")
    assert short.returncode == 2 and "8 to 64 lowercase hex" in one_error_line(short)


def test_prefixes_are_resolved_by_a_pushed_down_filter(
    profile: Profile, twins: tuple[Recording, Recording], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = DataInterface(profile)
    dataset = data._dataset()
    seen: list[Any] = []
    real = dataset.to_table

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("filter"))
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset, "to_table", spy)
    assert cli._hashes(data, [TWINS[0][:12]]) == [TWINS[0]]
    assert seen == [f"(starts_with(recording_hash, '{TWINS[0][:12]}'))"]


def test_query_table_fits_80_columns(env: dict[str, str], recording: Recording) -> None:
    h = recording.recording_hash
    result = ursa(env | {"COLUMNS": "80"}, "query", h, "--profile", "r2-test", "--status", "all")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, result.stdout
    body = [line for line in lines if h[:12] in line]
    assert len(body) == 8 and h not in result.stdout, "one row per line, short hashes"
    long = ursa(env, "query", h, "--profile", "r2-test", "--status", "all", "--long")
    assert sum(h in line for line in long.stdout.splitlines()) == 8
    assert "s3://ursa-assets/" in long.stdout


def test_messages_name_cli_flags_and_json_ends_with_an_error_object(
    env: dict[str, str], recording: Recording, tmp_path: Path
) -> None:
    h = recording.recording_hash
    target = tmp_path / h / "imu" / "imu.parquet"
    target.parent.mkdir(parents=True)
    target.write_text("mine")
    result = ursa(env, "download", h, "--dest", str(tmp_path), "--profile", "r2-test", "--json")
    assert result.returncode == 3
    line = one_error_line(result)
    assert "pass --overwrite" in line and "overwrite=True" not in line
    records = [json.loads(x) for x in result.stdout.splitlines()]
    assert records[0]["phase"] == "start"
    assert records[-1] == {
        "error": "FileExistsError",
        "message": line.removeprefix("ursa: error: "),
        "exit_code": 3,
    }
    assert target.read_text() == "mine"
    bad = ursa(env, "query", "--profile", "r2-test", "--where", "no_such_column = 1", "--json")
    assert bad.returncode != 0 and json.loads(bad.stdout.splitlines()[-1])["error"]


def test_a_closed_pipe_ends_quietly(
    slow_env: dict[str, str], big: Recording, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    command = (
        f"set -o pipefail; {sys.executable} -m ursa.cli download {big.recording_hash} "
        f"--dest {dest} --profile r2-test --json 2>{tmp_path / 'err'} | head -1"
    )
    result = subprocess.run(["bash", "-c", command], env=slow_env, capture_output=True,
                            text=True, timeout=60, check=False)  # fmt: skip
    assert json.loads(result.stdout)["phase"] == "start"
    assert result.returncode == 141, (result.returncode, (tmp_path / "err").read_text())
    assert (tmp_path / "err").read_text() == "", "warnings or a traceback on a closed pipe"
    assert not temporaries(dest)


def test_sigterm_is_handled_like_ctrl_c(
    slow_env: dict[str, str], big: Recording, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    child = subprocess.Popen(
        [sys.executable, "-m", "ursa.cli", "download", big.recording_hash, "--dest", str(dest),
         "--profile", "r2-test", "-q"],
        env=slow_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not any(p.is_file() and p.stat().st_blocks for p in temporaries(dest)):
            assert time.monotonic() < deadline and child.poll() is None, "never started"
            time.sleep(0.05)
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        child.kill()
        child.communicate()  # reaps it and closes its pipes, whatever happened above
    assert child.returncode == 143, err
    assert err.strip() == (
        "ursa: terminated; nothing partial was left behind; the same command with --resume "
        "continues"
    )
    assert took < 2.0
    assert not temporaries(dest)
    assert not (dest / big.recording_hash / "camera" / "camera.mp4").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(
    env: dict[str, str], recording: Recording, tmp_path: Path, boto: Any
) -> None:
    h = recording.recording_hash
    dest = tmp_path / "dest"
    result = ursa(env, "download", h[:8], "--dest", str(dest), "--profile", "r2-test",
                  "--dry-run", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert not dest.exists()
    expected = 0
    for row in catalog_rows(env, h):
        prefix = row["storage_uri"].removeprefix("s3://ursa-assets/")
        pages = boto.get_paginator("list_objects_v2").paginate(Bucket="ursa-assets", Prefix=prefix)
        expected += sum(o["Size"] for p in pages for o in p.get("Contents", []))
    assert plan["bytes"] == expected and plan["files"] == 25 and plan["collisions"] == []
    real = ursa(env, "download", h, "--dest", str(dest), "--profile", "r2-test", "-q")
    assert real.returncode == 0
    downloaded = [p for p in dest.rglob("*") if p.is_file() and ".ursa" not in p.parts]
    assert sum(p.stat().st_size for p in downloaded) == expected
    again = ursa(env, "download", h, "--dest", str(dest), "--profile", "r2-test", "--dry-run")
    assert again.returncode == 3
    assert "25 files" in again.stdout and "pass --overwrite to replace" in again.stdout
    assert str(dest / h / "camera" / "left" / "camera.mp4") in again.stdout


def catalog_rows(env: dict[str, str], h: str) -> list[dict[str, Any]]:
    result = ursa(env, "query", h, "--profile", "r2-test", "--json")
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_demo_without_the_testing_extra_says_so_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "zarr").mkdir(parents=True)
    (blocker / "zarr" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'zarr'\", name='zarr')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("URSA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env.get("PYTHONPATH", "")])
    result = ursa(env, "demo", "--dir", str(tmp_path / "demo"))
    assert result.returncode == 4
    line = one_error_line(result)
    assert "testing extra" in line and "pip install 'ursa[testing]'" in line and "zarr" in line


def test_library_messages_are_reworded_for_the_cli(
    env: dict[str, str], recording: Recording, tmp_path: Path
) -> None:
    h = recording.recording_hash
    result = ursa(env, "download", h, "--dest", str(tmp_path / "d"), "--profile", "r2-test",
                  "--max-concurrency", "0")  # fmt: skip
    assert result.returncode == 2
    assert one_error_line(result) == (
        "ursa: error: --max-concurrency must be a positive integer, got 0"
    )
    assert cli.cli_words(
        "profile 'local' has no assets store: use profile='r2', or source='raw' for the raw "
        "segments; pass overwrite=True to replace it"
    ) == (
        "profile 'local' has no assets store: use --profile r2, or --source raw for the raw "
        "segments; pass --overwrite to replace it"
    )
