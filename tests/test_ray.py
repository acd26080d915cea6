"""Scale-out on Ray (SPEC §10): a local Ray cluster (2 CPUs) whose workers get profile
``r2-test`` the way a real cluster's would — a config file and credentials in their own
environment — and only its name from the driver. Bytes are checked against boto3."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

import ursa.ray
from conftest import ACCESS_KEY, SECRET_KEY, subprocess_env, temporaries
from faultproxy import FaultProxy, Rule
from ursa import AccessDeniedError, DataInterface, DownloadProgress, Profile, QueryResult
from ursa.scaleout import plan_shards, run_shard
from ursa.testing import Recording, RowSpec, build_recording
from ursa.testing.seaweed import SeaweedServer

MiB = 1 << 20
ROWS = (
    RowSpec("eeg", asset_format="zarr", segments=1, zarr_chunks=6),
    RowSpec("camera", asset_format="mp4", segments=1),
    RowSpec("imu", asset_format="parquet", segments=1),
)
# ray.init starts its processes with a fork and an exec (the child never touches Lance);
# pylance warns at any fork once the driver has opened a catalog.
pytestmark = pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning")
PHASE = re.compile(r"start plan_done (modality_start (file_done )*modality_done )+finish")


@pytest.fixture(scope="module")
def cluster(
    s3: SeaweedServer, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A local Ray cluster. Its processes inherit the environment of this moment: profile
    ``r2-test`` (direct) and ``proxied`` (through the fault proxy), with credentials in
    environment variables. Yields the environment the driver needs too."""
    config = tmp_path_factory.mktemp("ray-config") / "ursa.toml"
    env = subprocess_env(s3.endpoint, config.parent)  # writes [profiles.r2-test]
    config.write_text(
        Path(env["URSA_CONFIG"]).read_text()
        + f"""
[profiles.proxied]
endpoint = "{proxy.endpoint}"
allow_http = true
catalog = "s3://ursa-catalog/catalog.lance"
raw_bucket = "ursa-raw"
assets_bucket = "ursa-assets"
"""
    )
    ursa_env = {
        "URSA_CONFIG": str(config),
        "URSA_R2_TEST_ACCESS_KEY_ID": ACCESS_KEY,
        "URSA_R2_TEST_SECRET_ACCESS_KEY": SECRET_KEY,
        "URSA_PROXIED_ACCESS_KEY_ID": ACCESS_KEY,
        "URSA_PROXIED_SECRET_ACCESS_KEY": SECRET_KEY,
    }
    # A short path: Ray's unix sockets live under it.
    temp_dir = tempfile.mkdtemp(prefix="ursa-ray-", dir="/tmp")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ursa_env.items():
            mp.setenv(name, value)
        context = ray.init(
            num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False
        )
    # Ray's token (made on first use) is found under the home directory, which the
    # tests' own environment moves: a child driver is told where it is.
    token = str(Path.home() / ".ray" / "auth_token")
    try:
        yield {
            **ursa_env,
            "temp_dir": temp_dir,
            "address": context.address_info["gcs_address"],
            "RAY_AUTH_TOKEN_PATH": token,
        }
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def driver(cluster: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The driver (this process) resolves the profiles as the workers do."""
    for name, value in cluster.items():
        if name.startswith("URSA_"):
            monkeypatch.setenv(name, value)
    return cluster


@pytest.fixture(scope="module")
def recs(profile: Profile) -> list[Recording]:
    """Four recordings, each 64 KiB (one raw audio segment) bigger than the one before."""
    return [
        build_recording(
            profile, (*ROWS, RowSpec("audio", status="raw", segments=1 + i)), seed=900 + i
        )
        for i in range(4)
    ]


def rows_of(recs: list[Recording]) -> QueryResult:
    return DataInterface("r2-test").query(
        recording_hash=[r.recording_hash for r in recs], status="all"
    )


def store_tree(boto: Any, recs: list[Recording]) -> dict[str, bytes]:
    """What a by_recording download of ``recs`` must hold, from boto3: every asset object,
    and the raw segments of the raw row."""
    out: dict[str, bytes] = {}
    for rec in recs:
        for bucket, prefix in (
            ("ursa-assets", f"{rec.recording_hash}/"),
            ("ursa-raw", f"{rec.recording_hash}/audio/"),
        ):
            listing = boto.list_objects_v2(Bucket=bucket, Prefix=prefix)
            for obj in listing.get("Contents", []):
                body = boto.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                out[obj["Key"]] = bytes(body)
    return out


def local_tree(dest: Path) -> dict[str, bytes]:
    """Every file under dest but ursa's records directory."""
    return {
        p.relative_to(dest).as_posix(): p.read_bytes()
        for p in dest.rglob("*")
        if p.is_file() and ".ursa" not in p.relative_to(dest).parts[:1]
    }


def assert_progress(events: list[DownloadProgress], rows: QueryResult) -> None:
    """download()'s phase grammar, one modality pair per row in row order, bytes_done
    never decreasing and ending at bytes_total."""
    assert PHASE.fullmatch(" ".join(e.phase for e in events if e.phase != "progress"))
    starts = [e for e in events if e.phase == "modality_start"]
    assert [(e.recording_hash, e.modality) for e in starts] == [
        (r.recording_hash, r.modality) for r in rows
    ]
    done = [e.bytes_done for e in events]
    assert done == sorted(done), "bytes_done went down"
    assert events[-1].bytes_done == events[-1].bytes_total > 0


def test_a_sharded_download_equals_the_store_and_one_process(
    driver: dict[str, str], recs: list[Recording], boto: Any, tmp_path: Path
) -> None:
    rows = rows_of(recs)
    # Balanced by bytes, the 2 shards hold recordings {0, 3} and {1, 2}: their results
    # must be put back into the call's order.
    shards = plan_shards("r2-test", rows, tmp_path / "ray", shards=2).shards
    assert [len({rows[p].recording_hash for p in s.positions}) for s in shards] == [2, 2]
    assert shards[0].positions != tuple(range(len(shards[0].positions)))
    events: list[DownloadProgress] = []
    paths = ursa.ray.download("r2-test", rows, tmp_path / "ray", shards=2, progress=events.append)
    single = DataInterface("r2-test").download(rows, tmp_path / "one")

    assert local_tree(tmp_path / "ray") == store_tree(boto, recs)
    assert [p.relative_to(tmp_path / "ray") for p in paths] == [
        p.relative_to(tmp_path / "one") for p in single
    ]
    assert len(set(paths.nodes)) == 1 and paths.nodes[0] == ray.get_runtime_context().get_node_id()
    assert_progress(events, rows)
    file_done = [e.path for e in events if e.phase == "file_done"]
    assert sorted(map(str, file_done)) == sorted(map(str, paths))
    assert temporaries(tmp_path / "ray") == []


def test_a_killed_worker_is_retried_and_its_shard_resumed(
    driver: dict[str, str], profile: Profile, faulty: FaultProxy, boto: Any, tmp_path: Path
) -> None:
    rec = build_recording(
        profile,
        [RowSpec("camera", asset_format="mp4", segments=1, mp4_size=4 * MiB)],
        seed=950,
    )
    # ~0.25 s per 64 KiB: the MP4 takes several seconds, so its worker dies mid-file.
    faulty.add(Rule("slow", method="GET", key=r"camera\.mp4", chunk=256 * 1024, delay_s=0.25))
    dest = tmp_path / "dest"
    killed: list[int] = []
    killed_at: list[float] = []

    def kill_the_writer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed:
            for part in temporaries(dest):
                if part.is_file() and part.stat().st_size and part.name.endswith(".part"):
                    pid = int(re.findall(r"-(\d+)-[^-]+\.part$", part.name)[0])
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    killed_at.append(time.monotonic())
                    return
            time.sleep(0.05)

    events: list[DownloadProgress] = []
    rows = DataInterface("proxied").query(recording_hash=rec.recording_hash)
    killer = threading.Thread(target=kill_the_writer)
    killer.start()
    paths = ursa.ray.download(
        "proxied", rows, dest, progress=events.append, progress_interval=0.1, part_size=MiB
    )
    killer.join()

    assert killed, "no worker was killed"
    assert not Path(f"/proc/{killed[0]}").exists()
    assert local_tree(dest) == store_tree(boto, [rec])
    assert sorted(paths) == sorted(
        p for p in dest.rglob("*") if p.is_file() and ".ursa" not in str(p.relative_to(dest))
    )
    assert temporaries(dest) == []
    assert_progress(events, rows)
    bytes_before_kill = [e.bytes_done for e in events if e.phase == "progress"]
    assert bytes_before_kill and max(bytes_before_kill) > 0


def test_a_shard_run_twice_at_once_never_mixes_files(
    driver: dict[str, str], recs: list[Recording], faulty: FaultProxy, boto: Any, tmp_path: Path
) -> None:
    rows = DataInterface("proxied").query(recording_hash=recs[0].recording_hash, status="all")
    (shard,) = plan_shards("proxied", rows, tmp_path, shards=1).shards
    faulty.add(Rule("slow", method="GET", chunk=16 * 1024, delay_s=0.02))
    twice = ray.remote(run_shard)
    refs = [twice.remote(shard), twice.remote(shard)]
    outcomes: list[object] = []
    for ref in refs:
        try:
            outcomes.append(ray.get(ref, timeout=60))
        except ray.exceptions.RayTaskError as exc:
            outcomes.append(exc.cause)
    assert any(not isinstance(o, BaseException) for o in outcomes), outcomes
    for o in outcomes:
        assert not isinstance(o, BaseException) or isinstance(o, FileExistsError), o
    assert local_tree(tmp_path) == store_tree(boto, recs[:1])
    assert temporaries(tmp_path) == []


def test_store_faults_are_ursas_retries_not_rays(
    driver: dict[str, str], recs: list[Recording], faulty: FaultProxy, tmp_path: Path
) -> None:
    rows = DataInterface("proxied").query(recording_hash=recs[1].recording_hash)
    faulty.add(Rule("status", method="GET", key=r"imu\.parquet", status=503, times=2))
    events: list[DownloadProgress] = []
    ursa.ray.download("proxied", rows, tmp_path / "ok", progress=events.append)
    assert events[-1].phase == "finish" and events[-1].retries == 2

    faulty.clear()
    faulty.add(Rule("status", method="GET", key=r"imu\.parquet", status=403))
    with pytest.raises(AccessDeniedError, match=r"imu\.parquet") as err:
        ursa.ray.download("proxied", rows, tmp_path / "denied")
    assert "\n" not in str(err.value) and SECRET_KEY not in str(err.value)
    gets = [r for r in faulty.records() if r.method == "GET" and "imu.parquet" in r.path]
    assert len(gets) == 1, "a 403 is final: neither ursa nor Ray may ask again"
    assert temporaries(tmp_path / "denied") == []


def test_a_profile_built_in_code_is_refused_before_any_task(
    driver: dict[str, str], recs: list[Recording], profile: Profile, tmp_path: Path
) -> None:
    rows = rows_of(recs[:1])
    with pytest.raises(ValueError, match="built in code") as err:
        ursa.ray.download(profile, rows, tmp_path / "dest")
    assert SECRET_KEY not in str(err.value) and ACCESS_KEY not in str(err.value)
    assert not (tmp_path / "dest").exists()
    with pytest.raises(ValueError, match="nothing to download"):
        ursa.ray.download("r2-test", QueryResult(), tmp_path / "dest")
    with pytest.raises(ValueError, match="layout"):
        ursa.ray.download("r2-test", rows, tmp_path / "dest", layout="sideways")
    with pytest.raises(TypeError, match="unexpected keyword argument 'resum'"):
        ursa.ray.download("r2-test", rows, tmp_path / "dest", resum=True)
    assert not (tmp_path / "dest").exists()


def test_local_disk_names_the_node_of_every_path(
    driver: dict[str, str], recs: list[Recording], boto: Any, tmp_path: Path
) -> None:
    rows = rows_of(recs[:2])
    paths = ursa.ray.download("r2-test", rows, tmp_path, local_disk=True, shards=2)
    node = ray.get_runtime_context().get_node_id()
    assert paths.by_node() == {node: list(paths)}
    assert local_tree(tmp_path) == store_tree(boto, recs[:2])


def test_the_cli_runs_on_the_cluster_with_the_same_events(
    cluster: dict[str, str], recs: list[Recording], boto: Any, tmp_path: Path
) -> None:
    env = {**os.environ, **{k: v for k, v in cluster.items() if k.isupper()}}
    child = subprocess.Popen(
        [
            *(sys.executable, "-m", "ursa.cli", "download", recs[2].recording_hash[:12]),
            *("--profile", "r2-test", "--status", "all", "--dest", str(tmp_path / "dest")),
            *("--ray", cluster["address"], "--json"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == 0, stderr
    events = [DownloadProgress(**json.loads(line)) for line in stdout.splitlines()]
    assert PHASE.fullmatch(" ".join(e.phase for e in events if e.phase != "progress"))
    assert events[-1].bytes_done == events[-1].bytes_total
    assert local_tree(tmp_path / "dest") == store_tree(boto, recs[2:3])
    # It was a driver of this cluster (Ray logs each driver by its pid).
    logs = Path(cluster["temp_dir"], "session_latest", "logs")
    assert list(logs.glob(f"python-core-driver-*_{child.pid}.log"))


def test_no_secret_in_shards_task_arguments_or_rays_logs(
    driver: dict[str, str], recs: list[Recording], tmp_path: Path
) -> None:
    rows = rows_of(recs)
    work = plan_shards("r2-test", rows, tmp_path, shards=4)
    for shard in work.shards:
        blob = pickle.dumps(shard)
        assert SECRET_KEY.encode() not in blob and ACCESS_KEY.encode() not in blob
    ursa.ray.download("r2-test", rows, tmp_path, shards=4)
    leaks = []
    for path in Path(driver["temp_dir"]).rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if SECRET_KEY.encode() in data or ACCESS_KEY.encode() in data:
                leaks.append(path)
    assert leaks == []
