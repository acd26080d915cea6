"""Every ```python snippet in README.md, executed in order in one namespace (as a reader
pastes them into one session), against a local file:// store that the config file names
``r2`` — so the snippets stay exactly what a user with R2 credentials would run. A
comment line right after a ``print(`` line is that print's expected output."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ursa.testing import build_recording

README = Path(__file__).parent.parent / "README.md"
README_HASH = "1ad200d69a2f8d36424e5ad00e1b4196f45c30fca791b623f6a060bddca446a3"


def snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def expected_output(code: str) -> list[str]:
    lines = code.splitlines()
    return [
        nxt[2:]
        for line, nxt in itertools.pairwise(lines)
        if line.lstrip().startswith("print(") and nxt.startswith("# ")
    ]


@pytest.fixture
def r2_is_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    store = tmp_path / "r2"
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.r2]\ncatalog = "{store}/catalog.lance"\n'
        f'raw_bucket = "file://{store}/raw/"\nassets_bucket = "file://{store}/assets/"\n'
    )
    monkeypatch.setenv("URSA_CONFIG", str(config))
    monkeypatch.chdir(tmp_path)
    # Assets spanning the recording's 60 s, so the materialize/stream snippets have data.
    build_recording("r2", seed=111, recording_hash=README_HASH, duration_s=60.0)
    logger = logging.getLogger("ursa.download")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers  # the logging snippet configures the global logger
    logger.setLevel(level)


def test_every_python_snippet_in_the_readme_runs(
    r2_is_local: None, capsys: pytest.CaptureFixture[str]
) -> None:
    codes = snippets()
    assert len(codes) >= 7
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for number, code in enumerate(codes, 1):
        exec(compile(code, f"README.md python snippet {number}", "exec"), namespace)
        out = capsys.readouterr().out
        for line in expected_output(code):
            assert line in out, (number, line, out)
    assert "download_async" in "".join(codes) and "cancel=stop" in "".join(codes)
