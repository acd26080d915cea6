"""The scans a download makes of its destination before any byte moves (stale temporaries
to clean, resumable parts, staged directory assets) must not freeze the rest of the
program: a big destination is scanned with the GIL released, so other Python threads (a
Streamlit server, a progress bar, an asyncio loop's helpers) keep running, and Ctrl+C is
heard between directories rather than after the last one."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ursa import _core

DEAD_PID = 99999999  # no such process: its temporaries are stale on this machine


def _stale_name(final: str, token: int, tag: str) -> str:
    return f".{final}.ursa-{_core.host_name()}-{DEAD_PID}-{token:016x}.{tag}"


def _fill(root: Path, dirs: int, per_dir: int) -> list[Path]:
    """``dirs`` directories of ``per_dir`` stale part files each, with their journals
    (garbled: nothing to resume, everything to clean)."""
    made = []
    for d in range(dirs):
        where = root / f"rec{d:04d}"
        where.mkdir(parents=True)
        for i in range(per_dir):
            for tag in ("part", "journal"):
                (where / _stale_name(f"chunk{i}", d * per_dir + i, tag)).write_bytes(b"x")
        made.append(where)
    return made


class _Ticker:
    """A Python thread counting how often it gets to run."""

    def __init__(self) -> None:
        self.ticks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ticks += 1
            time.sleep(0.0005)

    def __enter__(self) -> _Ticker:
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def big_destination(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    # One directory of 40,000 entries: reading it takes tens of milliseconds.
    return _fill(tmp_path_factory.mktemp("big"), dirs=1, per_dir=20_000)


SCANS: dict[str, Callable[[list[str]], object]] = {
    "find_resumable": lambda dirs: _core.find_resumable(dirs),
    "find_stages": lambda dirs: _core.find_stages(dirs),
}


@pytest.mark.parametrize("scan", sorted(SCANS))
def test_a_scan_of_a_big_destination_lets_other_threads_run(
    big_destination: list[Path], scan: str
) -> None:
    dirs = [str(d) for d in big_destination]
    with _Ticker() as ticker:
        began, before = time.perf_counter(), ticker.ticks
        SCANS[scan](dirs)
        during, took = ticker.ticks - before, time.perf_counter() - began
    # With the GIL held for the whole scan the other thread cannot run at all (at most
    # one tick slips in as the call starts).
    assert took > 0.01, f"the scan took {took * 1000:.1f} ms: too short to tell"
    assert during >= 3, f"another thread ran {during} times in a {took * 1000:.0f} ms scan"


@pytest.fixture
def many_directories(tmp_path: Path) -> Iterator[list[Path]]:
    yield _fill(tmp_path, dirs=400, per_dir=40)


def test_ctrl_c_stops_stale_cleaning_between_directories(many_directories: list[Path]) -> None:
    dirs = [str(d) for d in many_directories]
    timer = threading.Timer(0.05, signal.raise_signal, (signal.SIGINT,))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        timer.start()
        began = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            _core.clean_stale(dirs, [])
            time.sleep(5)  # not interrupted inside: the interrupt lands here instead
        took = time.perf_counter() - began
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    untouched = [d for d in many_directories if any(d.iterdir())]
    # Cleaning all 400 directories takes far longer than the 50 ms before Ctrl+C.
    assert untouched, f"every directory was cleaned before Ctrl+C was heard ({took:.2f} s)"
    assert took < 2.0
