"""The Ray-free scale-out primitives: shards balanced by bytes, and the driver's tracker
turning shards' batches (several runs of one shard among them) into download()'s events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ursa import DownloadProgress, ModalityRow
from ursa.events import Emitter
from ursa.scaleout import Batch, FileDone, ShardTracker
from ursa.scaleout.shards import _balance
from ursa.testing.recordings import recording_hash_for


def row(seed: int, modality: str) -> ModalityRow:
    return ModalityRow(recording_hash_for(seed), modality, "", "raw", f"s3://raw/{seed}/")


def test_recordings_stay_whole_and_shards_are_balanced_by_bytes() -> None:
    # Recordings (rows 0-1, 2, 3-4, 5) of 90, 50, 40, 10 bytes onto 2 shards.
    groups = [[0, 1], [2], [3, 4], [5]]
    row_bytes = [45, 45, 50, 20, 20, 10]
    shards = _balance(groups, row_bytes, 2)
    assert shards == [[0, 1, 5], [2, 3, 4]]  # 100 and 90 bytes; call order within each
    assert _balance(groups, row_bytes, 10) == groups  # never more shards than recordings


def test_a_retried_shard_never_counts_backwards_nor_twice() -> None:
    rows = (row(1, "eeg"), row(2, "eeg"))
    events: list[DownloadProgress] = []
    emitter = Emitter(events.append)
    emitter.bytes_total = 300
    tracker = ShardTracker(rows, emitter, progress_interval=None)
    a = FileDone(0, "k/a", Path("/d/a"), 100)

    tracker.add(0, 0, Batch(150, 1, (a,)))  # run 0 of shard 0: a done, 50 B of the next
    tracker.add(1, 0, Batch(100, 0, (FileDone(1, "k/c", Path("/d/c"), 100),), (1,)))
    assert tracker.bytes_done() == 250
    tracker.add(0, 1, Batch(100, 0, (a,)))  # run 1 after a lost process: a kept, again
    assert tracker.bytes_done() == 250  # the most any run of shard 0 reached
    tracker.release()
    tracker.add(0, 1, Batch(200, 2, (FileDone(0, "k/b", Path("/d/b"), 100),), (0,)))
    assert tracker.bytes_done() == 300 and tracker.retries() == 3  # every run's requests
    tracker.release()

    assert tracker.finished
    assert [(e.phase, e.key) for e in events] == [
        ("modality_start", None),
        ("file_done", "k/a"),  # once, though both runs reported it
        ("file_done", "k/b"),
        ("modality_done", None),
        ("modality_start", None),  # row 1 finished first, released in call order
        ("file_done", "k/c"),
        ("modality_done", None),
    ]
    assert [e.bytes_done for e in events] == [250, 250, 300, 300, 300, 300, 300]


def test_ray_is_imported_only_by_ursa_ray_and_its_absence_says_what_to_install() -> None:
    code = (
        "import sys, ursa, ursa.scaleout\n"
        "assert 'ray' not in sys.modules, 'import ursa imported ray'\n"
        "sys.modules['ray'] = None  # as if the extra were not installed\n"
        "import ursa.ray\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "ImportError: ursa.ray needs Ray: pip install 'ursa[ray]'"
    )
