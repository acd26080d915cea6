"""examples/streamlit_app.py as a user sees it: `streamlit run` against the SeaweedFS
server (profile from a config file, credentials in the environment), driven in Debian's
headless Chromium through Playwright."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import SECRET_KEY, subprocess_env
from ursa.testing import Recording
from ursa.testing.seaweed import SeaweedServer

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "examples" / "streamlit_app.py"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright never downloads a browser here
DOWNLOAD_TIMEOUT_S = 120


def _require_tools() -> None:
    """Missing tools fail the test: CI installs them with the project's set-up."""
    missing = [
        f"the Python package `{pkg}` (pip install {pkg})"
        for pkg in ("streamlit", "playwright")
        if importlib.util.find_spec(pkg) is None
    ]
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"Debian's Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        pytest.fail("test_streamlit_app needs " + "; ".join(missing), pytrace=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"streamlit not healthy after 60 s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def test_streamlit_app_downloads_with_live_progress(
    s3: SeaweedServer, recording: Recording, tmp_path: Path
) -> None:
    _require_tools()
    from playwright.sync_api import expect, sync_playwright

    dest = tmp_path / "dest"
    env = subprocess_env(s3.endpoint, tmp_path) | {
        "URSA_PROFILE": "r2-test",
        "URSA_DEST": str(dest),
    }
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "streamlit.log"
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
    ]
    rhash = recording.recording_hash
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(url, proc, log)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 1200})
                page.goto(url)

                # Pick the fixture recording: open the selectbox, filter by the hash, choose.
                picker = page.get_by_test_id("stSelectbox").filter(has_text="Recording")
                choice = picker.get_by_role("combobox")
                choice.click()
                choice.fill(rhash)
                page.get_by_role("option", name=rhash, exact=True).click()
                expect(choice).to_have_value(rhash)

                page.get_by_role("button", name="Download").click()
                done = page.get_by_text(re.compile(r"^Done — [\d,]+ bytes in"))
                expect(done).to_be_visible(timeout=DOWNLOAD_TIMEOUT_S * 1000)
                bar = page.get_by_test_id("stProgress").get_by_role("progressbar")
                expect(bar).to_have_attribute("aria-valuenow", "100")
                landed_line = page.get_by_text(re.compile(r"^[\d,]+ files landed under"))
                expect(landed_line).to_be_visible()
                shown_count = int(landed_line.inner_text().split()[0].replace(",", ""))
                expect(page.get_by_test_id("stCode")).to_contain_text("camera/left/camera.mp4")

                ARTIFACTS.mkdir(exist_ok=True)
                # animations="disabled" finishes the bar's CSS transition before the shot.
                shot = page.screenshot(full_page=True, animations="disabled")
                (ARTIFACTS / "streamlit_done.png").write_bytes(shot)
                (tmp_path / "streamlit_done.png").write_bytes(shot)
                html = page.content()
            finally:
                browser.close()
    finally:
        _stop(proc)

    assert SECRET_KEY not in html
    assert SECRET_KEY not in log.read_text()
    landed = dest / rhash
    assert shown_count == sum(1 for p in landed.rglob("*") if p.is_file()) > 0
    assert (landed / "eeg" / "eeg.zarr" / "zarr.json").is_file()
    for worker in ("left", "right"):
        assert (landed / "camera" / worker / "camera.mp4").is_file()
