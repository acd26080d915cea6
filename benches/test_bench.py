"""Download benchmarks: ursa against s5cmd, rclone, obstore and boto3 on the same
SeaweedFS, same objects, in one run. Off by default (`make bench`). Select with
URSA_BENCH_WORKLOADS=a,b and URSA_BENCH_TOOLS=ursa,s5cmd; URSA_BENCH_ROUNDS (default 5)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import TOOLS, WORKLOADS, record, retire, run_tool, selected

ROUNDS = int(os.environ.get("URSA_BENCH_ROUNDS", "5"))


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("tool", selected("URSA_BENCH_TOOLS", TOOLS))
@pytest.mark.parametrize(
    "workload", selected("URSA_BENCH_WORKLOADS", tuple(WORKLOADS)), indirect=True
)
def test_download(
    benchmark: Any, workload: dict[str, Any], tool: str, tmp_path: Path, trash: Path
) -> None:
    runs = iter(range(ROUNDS))
    expected: list[int] = []

    def setup() -> tuple[tuple[str, dict[str, Any], Path], dict[str, Any]]:
        dest = tmp_path / f"run{next(runs)}"
        return (tool, workload, dest), {}

    def once(tool: str, spec: dict[str, Any], dest: Path) -> None:
        result = run_tool(tool, spec, dest)
        record(spec["name"], tool, result)
        expected.append(result["bytes"])
        retire(dest, trash)

    benchmark.pedantic(once, setup=setup, rounds=ROUNDS, iterations=1)
    assert len(set(expected)) == 1 and expected[0] > 0, "runs wrote different byte counts"
