"""The SeaweedFS helper starts a real S3 server that enforces the keys it was given."""

from __future__ import annotations

import os
import secrets
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from ursa.testing import seaweed
from ursa.testing.seaweed import SeaweedServer, find_weed, start_seaweed

ACCESS_KEY_ID = "URSATEST" + secrets.token_hex(4).upper()
SECRET_ACCESS_KEY = secrets.token_urlsafe(24)


def _client(server: SeaweedServer, key_id: str, secret: str) -> Any:  # boto3 is untyped
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    workdir = tmp_path_factory.mktemp("seaweed")
    with start_seaweed(
        workdir, access_key_id=ACCESS_KEY_ID, secret_access_key=SECRET_ACCESS_KEY
    ) as s:
        yield s


def test_put_and_get_with_the_right_keys(server: SeaweedServer) -> None:
    server.create_bucket("ursa-put-get")
    server.create_bucket("ursa-put-get")  # already ours: not an error
    s3 = _client(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    s3.put_object(Bucket="ursa-put-get", Key="a/b.bin", Body=b"hello seaweed")
    got = s3.get_object(Bucket="ursa-put-get", Key="a/b.bin")["Body"].read()
    assert got == b"hello seaweed"


@pytest.mark.parametrize(
    ("key_id", "secret"),
    [(ACCESS_KEY_ID, "wrong-secret"), ("WRONGKEYID", SECRET_ACCESS_KEY)],
    ids=["wrong-secret", "unknown-key-id"],
)
def test_wrong_keys_are_refused(server: SeaweedServer, key_id: str, secret: str) -> None:
    server.create_bucket("ursa-refused")
    _client(server, ACCESS_KEY_ID, SECRET_ACCESS_KEY).put_object(
        Bucket="ursa-refused", Key="x", Body=b"x"
    )
    with pytest.raises(ClientError) as refused:
        _client(server, key_id, secret).get_object(Bucket="ursa-refused", Key="x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_anonymous_requests_are_refused(server: SeaweedServer) -> None:
    server.create_bucket("ursa-anonymous")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.endpoint}/ursa-anonymous/", timeout=10)
    assert refused.value.code == 403
    refused.value.close()


def test_keys_travel_in_the_environment_not_the_command_line(server: SeaweedServer) -> None:
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    assert b"mini" in cmdline
    assert SECRET_ACCESS_KEY.encode() not in cmdline
    assert ACCESS_KEY_ID.encode() not in cmdline
    environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
    assert f"AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}".encode() in environ
    assert SECRET_ACCESS_KEY not in repr(server)


def test_log_is_written_to_the_workdir(server: SeaweedServer) -> None:
    assert server.log_path.parent == server.workdir
    assert server.log_path.stat().st_size > 0


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    server = start_seaweed(tmp_path, access_key_id="AKSTOP", secret_access_key="stop-secret")
    pid, port = server.pid, int(server.endpoint.rsplit(":", 1)[1])
    assert Path(f"/proc/{pid}").exists()
    server.stop()
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    server.stop()  # idempotent


def test_start_retries_when_a_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_free_port_pairs = seaweed._free_port_pairs
    taken = real_free_port_pairs(1)[0]
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        calls = []

        def first_offer_includes_a_taken_port(n: int) -> list[int]:
            calls.append(n)
            ports = real_free_port_pairs(n)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(seaweed, "_free_port_pairs", first_offer_includes_a_taken_port)
        with start_seaweed(tmp_path, access_key_id="AKRETRY", secret_access_key="retry") as s:
            assert len(calls) == 2
            assert not s.endpoint.endswith(f":{taken}")


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    fake = tmp_path / "fake-weed"
    fake.write_text("#!/bin/sh\necho 'fake weed cannot start'\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="fake weed cannot start"):
        start_seaweed(tmp_path, access_key_id="AK", secret_access_key="SK", weed=str(fake))


def test_find_weed_finds_an_executable() -> None:
    weed = Path(find_weed())
    assert weed.name == "weed"
    assert os.access(weed, os.X_OK)
