"""``ursa.ray.download``: one download carried out by a Ray cluster (SPEC §10), with
``pip install 'ursa[ray]'``.

The driver plans the call and splits it into shards (``ursa.scaleout.shards``); each shard
is one Ray task running ursa's normal download with ``resume=True``. Retries have one
owner per level: ursa retries requests inside a task; Ray retries a task only when its
process or node is lost (``retry_exceptions=False``), and the retry resumes. Tasks send
batched counters to one small actor; the driver polls it and emits the call's
``DownloadProgress`` events on the calling thread (``ursa.scaleout.tracker``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

try:
    import ray
    import ray.exceptions
except ImportError as exc:  # the extra is optional; say how to get it
    raise ImportError("ursa.ray needs Ray: pip install 'ursa[ray]'") from exc

from ursa.download import (
    CancelToken,
    Target,
    _check_cancel_token,
    _raise_if_cancelled,
    _scope,
    _tell_adapter,
)
from ursa.events import Emitter, ProgressCallback
from ursa.profiles import Profile
from ursa.scaleout.shards import Batch, Shard, ShardResult, plan_shards, run_shard
from ursa.scaleout.tracker import ShardTracker

__all__ = ["Downloaded", "download"]

MAX_RETRIES = 3  # runs of a shard after lost processes (Ray's default for tasks)
SHARDS_PER_CPU = 4  # default shard count: this many per CPU of the cluster, at most
_POLL_S = 0.2  # how often the driver collects the shards' progress
_CANCEL_WAIT_S = 30.0  # how long cancelled shards get to remove their temporaries


class Downloaded(list[Path]):
    """The files written, in stream order (what ``download()`` returns), and ``nodes``:
    the id of the Ray node that wrote each one (with ``local_disk=True``, where it is)."""

    def __init__(self, paths: Iterable[Path], nodes: Iterable[str]) -> None:
        super().__init__(paths)
        self.nodes: tuple[str, ...] = tuple(nodes)

    def by_node(self) -> dict[str, list[Path]]:
        """The paths grouped by node id, each group in stream order."""
        out: dict[str, list[Path]] = {}
        for path, node in zip(self, self.nodes, strict=True):
            out.setdefault(node, []).append(path)
        return out


def download(
    profile: str | Profile,
    target: Target,
    dest: str | os.PathLike[str],
    *,
    resume: bool = True,
    progress: ProgressCallback | None = None,
    local_disk: bool = False,
    shards: int | None = None,
    cancel: CancelToken | None = None,
    ray_options: Mapping[str, Any] | None = None,
    **download_options: Any,
) -> Downloaded:
    """``DataInterface(profile).download(target, dest, ...)`` carried out by the Ray
    cluster this process is connected to (``ray.init()`` first; a local one is started
    when none is). The same checks, events (on this thread and the ``ursa.download``
    logger), errors and return value as ``download()``.

    Args:
        profile: a profile name, or a ``Profile`` identical to the one of its name: workers
            get the name only and resolve it (and its credentials) themselves.
        target, dest, progress, cancel, **download_options: as in ``download()``.
        resume: keep identical files already in ``dest`` (default True). False only makes
            an existing file a collision, checked on the driver; shards always resume.
        local_disk: each node writes to its own disk at ``dest`` (default False: ``dest``
            is a filesystem every node sees). ``Downloaded.nodes`` says where each file is.
        shards: how many shards (default: one per recording, at most 4 per cluster CPU).
        ray_options: passed to each task's ``.options()`` (default
            ``num_cpus=1, scheduling_strategy="SPREAD"``).
    """
    _check_cancel_token(cancel)
    if not ray.is_initialized():
        ray.init()
    n = shards if shards is not None else SHARDS_PER_CPU * max(1, _cluster_cpus())
    work = plan_shards(
        profile,
        target,
        dest,
        shards=n,
        resume=resume,
        local_disk=local_disk,
        progress=progress,
        **download_options,
    )
    emitter = Emitter(progress)
    rec, mod = _scope(work.plan.rows)
    emitter.emit("start", bytes_done=0, retries=0, recording_hash=rec, modality=mod)
    emitter.bytes_total = work.plan.bytes_total
    emitter.emit("plan_done", bytes_done=0, retries=0, recording_hash=rec, modality=mod)
    tracker = ShardTracker(work.plan.rows, emitter, work.progress_interval)
    try:
        results = _run(work.shards, tracker, cancel, ray_options or {})
    except BaseException as exc:
        _tell_adapter(progress, exc)
        raise
    emitter.emit(
        "finish",
        bytes_done=work.plan.bytes_total,
        retries=tracker.retries(),
        recording_hash=rec,
        modality=mod,
    )
    return _assemble(work.shards, results, len(work.plan.rows))


def _cluster_cpus() -> int:
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return int(resources.get("CPU", 1))


def _run(
    shards: tuple[Shard, ...],
    tracker: ShardTracker,
    cancel: CancelToken | None,
    ray_options: Mapping[str, Any],
) -> list[ShardResult]:
    """Every shard as a task; progress released on this thread until all are done. On
    any exception the remaining tasks are cancelled (each removes its temporaries)."""
    hub = _ProgressHub.remote()  # type: ignore[attr-defined]
    options = {
        "num_cpus": 1,
        "scheduling_strategy": "SPREAD",
        **ray_options,
        "max_retries": MAX_RETRIES,
        "retry_exceptions": False,
    }
    pending = {_shard_task.options(**options).remote(s, hub): s.index for s in shards}
    results: dict[int, ShardResult] = {}
    try:
        while pending:
            _raise_if_cancelled(cancel)
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=_POLL_S)
            for ref in ready:
                del pending[ref]
                result = _result(ref)
                results[result.index] = result
            for shard, run, batch in ray.get(hub.drain.remote()):
                tracker.add(shard, run, batch)
            tracker.release()
    except BaseException:
        for ref in pending:
            ray.cancel(ref)
        if pending:
            ray.wait(list(pending), num_returns=len(pending), timeout=_CANCEL_WAIT_S)
        raise
    finally:
        ray.kill(hub)
    if not tracker.finished:  # every task returned after its last batch was delivered
        raise RuntimeError("internal error: shards finished without reporting every row")
    return [results[s.index] for s in shards]


def _result(ref: Any) -> ShardResult:
    """A finished task's result; a shard's own exception is raised as itself (a one-line
    ursa error, not Ray's wrapper with a remote traceback)."""
    try:
        result: ShardResult = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    return result


def _assemble(shards: tuple[Shard, ...], results: list[ShardResult], n_rows: int) -> Downloaded:
    """The shards' paths put back into the call's row order."""
    per_row: list[tuple[tuple[Path, ...], str]] = [((), "")] * n_rows
    for shard, result in zip(shards, results, strict=True):
        for position, paths in zip(shard.positions, result.paths, strict=True):
            per_row[position] = (paths, result.node)
    return Downloaded(
        (p for paths, _ in per_row for p in paths),
        (node for paths, node in per_row for _ in paths),
    )


# --- in the cluster -------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class _ProgressHub:
    """Collects the running shards' batches until the driver drains them. ``begin``
    numbers the runs of each shard (a retried task is a new run)."""

    def __init__(self) -> None:
        self.runs: dict[int, int] = {}
        self.pending: list[tuple[int, int, Batch]] = []
        self.pids: list[tuple[int, int, int]] = []

    def begin(self, shard: int, pid: int) -> int:
        run = self.runs.get(shard, 0)
        self.runs[shard] = run + 1
        self.pids.append((shard, run, pid))
        return run

    def report(self, shard: int, run: int, batch: Batch) -> None:
        self.pending.append((shard, run, batch))

    def drain(self) -> list[tuple[int, int, Batch]]:
        out, self.pending = self.pending, []
        return out

    def processes(self) -> list[tuple[int, int, int]]:
        """(shard, run, pid) of every run so far."""
        return list(self.pids)


@ray.remote
def _shard_task(shard: Shard, hub: Any) -> ShardResult:
    run = ray.get(hub.begin.remote(shard.index, os.getpid()))
    last: list[Any] = []

    def send(batch: Batch) -> None:
        last[:] = [hub.report.remote(shard.index, run, batch)]

    result = run_shard(shard, send)
    ray.get(last)  # the last batch is in before the driver sees the result
    return replace(result, node=ray.get_runtime_context().get_node_id())
