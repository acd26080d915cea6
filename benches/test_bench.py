"""Download benchmarks: ursa (default verification and verify="size") against s5cmd,
rclone, obstore, boto3 and boto3's CRT client on the same SeaweedFS, same objects, in one
run. Off by default (`make bench`). Select with URSA_BENCH_WORKLOADS=a,b and
URSA_BENCH_TOOLS=ursa,s5cmd; URSA_BENCH_ROUNDS (default 5); URSA_BENCH_DEST=tmpfs|disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from conftest import (
    MD5_WORKLOAD,
    SLOW_S,
    TOOLS,
    WORKLOADS,
    build,
    process_cpu_s,
    record,
    retire,
    run_tool,
    selected,
)
from ursa.testing.seaweed import SeaweedServer

ROUNDS = int(os.environ.get("URSA_BENCH_ROUNDS", "5"))


def tools_for(name: str) -> list[str]:
    own = WORKLOADS[name].tools
    tools = selected("URSA_BENCH_TOOLS", own or TOOLS)
    return [*tools, "md5"] if name == MD5_WORKLOAD else tools


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("name", selected("URSA_BENCH_WORKLOADS", tuple(WORKLOADS)))
def test_download(
    name: str,
    server: SeaweedServer,
    profile_fields: dict[str, Any],
    scratch: Path,
    dest_root: Path,
    trash: Path,
) -> None:
    """Every tool once per round, the order rotated each round, so that no tool always
    runs right after the same one, or always first after the upload."""
    spec = build(name, profile_fields, scratch)
    tools = tools_for(name)
    done: dict[str, list[int]] = {tool: [] for tool in tools}
    slow: set[str] = set()
    for i in range(ROUNDS):
        shift = i % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            if tool in slow:
                continue
            dest = dest_root / f"{tool}-{i}"
            before = process_cpu_s(server.pid)
            result = run_tool(tool, spec, dest)
            result["server_cpu_s"] = process_cpu_s(server.pid) - before
            record(name, tool, result)
            done[tool].append(result["bytes"])
            retire(dest, trash)
            if result["wall_s"] > SLOW_S:
                slow.add(tool)
    for tool, sizes in done.items():
        if tool != "md5":
            assert len(set(sizes)) == 1 and sizes[0] > 0, f"{tool}: runs wrote different bytes"
