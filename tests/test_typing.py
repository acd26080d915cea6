"""A user's script checked with ``mypy --strict``: a typo in a Literal parameter is a type
error (not a runtime surprise), and correct use passes clean. The public API's docstrings
name every parameter."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import ursa
from ursa import DataInterface

TYPO = """
from ursa import DataInterface

data = DataInterface("local")
rows = data.query(status="ingestd")
data.download(rows, "out", source="procesed", layout="by_recordng")
"""

CORRECT = """
import asyncio
import threading
from ursa import DataInterface, DownloadProgress, Layout, Source, StatusFilter

def on_progress(event: DownloadProgress) -> None:
    print(event.phase, event.path, event.size)

status: StatusFilter = "raw"
layout: Layout = "by_modality"
source: Source = "raw"
data = DataInterface("local")
rows = data.query(status=status)
paths = data.download(rows, "out", source=source, layout=layout, progress=on_progress,
                      cancel=threading.Event())
more = asyncio.run(data.download_async(rows, "out2", layout="flat"))
print(len(paths) + len(more))
"""


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(source)
    package_root = Path(ursa.__file__).parent.parent
    env = os.environ | {"MYPYPATH": str(package_root)}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / ".mypy_cache"), str(script)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False,
    )  # fmt: skip


def test_a_typo_in_a_literal_parameter_is_a_mypy_error(tmp_path: Path) -> None:
    result = mypy(tmp_path, TYPO)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 3, result.stdout
    for typo in ("'ingestd'", "'procesed'", "'by_recordng'"):
        assert any(typo in line for line in errors), (typo, result.stdout)


def test_correct_use_passes_mypy_strict(tmp_path: Path) -> None:
    result = mypy(tmp_path, CORRECT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_parameter_is_in_the_docstring() -> None:
    for method in (DataInterface.query, DataInterface.download):
        doc = inspect.getdoc(method) or ""
        assert "Raises:" in doc
        for name in inspect.signature(method).parameters:
            if name != "self":
                assert f"{name}:" in doc, (method.__name__, name)
    async_doc = inspect.getdoc(DataInterface.download_async) or ""
    assert "CancelledError" in async_doc and "same parameters" in async_doc
