"""Memory that scales with the number of planned objects (issue 14, item 6): Python's own
allocations, counted by tracemalloc, per planned object, while a plan of many small
objects is made and while it is downloaded (the engine's share is measured by
benches/memory.py, from RssAnon)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ursa import Profile
from ursa.testing import RowSpec, build_recording

N = 20_000
# Bytes per planned object: the plan itself holds ~840 here (a PlannedFile, its Path,
# key and ETag strings). The code before issue 14 peaked at ~1,120 while planning (the
# listing held beside the plan, every path's string kept on it) and ~1,310 while
# downloading (every file's engine arguments built at once, kept for the whole download).
BOUND = 1_000

# In a fresh process, as a user has it: how much the interpreter already holds (e.g. its
# table of interned strings, which pathlib adds every path component to, and which grows
# in steps of MiBs) must not depend on which tests ran before.
CHILD = """
import json, sys, tracemalloc
from ursa import DataInterface, Profile
fields, rhash, dest = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
data = DataInterface(Profile(**fields))
rows = data.query(recording_hash=rhash, status="raw")
tracemalloc.start()
plan = data.plan_download(rows, dest)
planning = tracemalloc.get_traced_memory()[1]
files = len(plan.files)
del plan
tracemalloc.reset_peak()
paths = data.download(rows, dest)
downloading = tracemalloc.get_traced_memory()[1]
print(json.dumps([files, planning, downloading, [str(p) for p in paths[::100]]]))
"""


def test_planning_and_downloading_many_objects_hold_under_1000_python_bytes_each(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    fields = {"name": "scratch", "root": str(root), "assets_bucket": f"file://{root}/assets/"}
    row = RowSpec("events", status="raw", segments=N, segment_size=1)
    rec = build_recording(Profile(**fields), [row], seed=14, workdir=tmp_path)
    dest = tmp_path / "dest"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(fields), rec.recording_hash, str(dest)],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    files, planning, downloading, some = json.loads(out)

    assert files == N
    assert len(some) == N // 100 and all(Path(p).stat().st_size == 1 for p in some)
    assert planning / N < BOUND, f"planning peaked at {planning / N:.0f} bytes per object"
    assert downloading / N < BOUND, f"the download peaked at {downloading / N:.0f} bytes per object"
