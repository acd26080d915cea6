"""Session fixtures: a real SeaweedFS S3 server on loopback with enforced credentials,
a profile pointing at it, and a recording built into it by ``ursa.testing``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faultproxy import FaultProxy
from ursa import Profile
from ursa.testing import Recording, build_recording
from ursa.testing.seaweed import SeaweedServer, start_seaweed

ACCESS_KEY = "ursa-test-access"
# Distinctive, so tests can assert it never leaks into logs, messages or reprs.
SECRET_KEY = "S3cr3t-ursa-never-print-9f2c41"
BUCKETS = ("ursa-catalog", "ursa-raw", "ursa-assets")


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = start_seaweed(
        tmp_path_factory.mktemp("seaweed"), access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY
    )
    try:
        for bucket in BUCKETS:
            server.create_bucket(bucket)
        yield server
    finally:
        server.stop()


def profile_for(endpoint: str, **overrides: Any) -> Profile:
    fields: dict[str, Any] = {
        "name": "r2-test",
        "endpoint": endpoint,
        "allow_http": True,
        "catalog": "s3://ursa-catalog/catalog.lance",
        "raw_bucket": "ursa-raw",
        "assets_bucket": "ursa-assets",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }
    return Profile(**(fields | overrides))


def subprocess_env(endpoint: str, tmp_path: Path) -> dict[str, str]:
    """The environment a child process needs to use profile ``r2-test`` at ``endpoint``:
    a config file, and the credentials in environment variables (never in argv)."""
    config = tmp_path / "ursa-config.toml"
    config.write_text(
        f"""
[profiles.r2-test]
endpoint = "{endpoint}"
allow_http = true
catalog = "s3://ursa-catalog/catalog.lance"
raw_bucket = "ursa-raw"
assets_bucket = "ursa-assets"
"""
    )
    return {
        **os.environ,
        "URSA_CONFIG": str(config),
        "URSA_R2_TEST_ACCESS_KEY_ID": ACCESS_KEY,
        "URSA_R2_TEST_SECRET_ACCESS_KEY": SECRET_KEY,
    }


@pytest.fixture(scope="session")
def profile(s3: SeaweedServer) -> Profile:
    return profile_for(s3.endpoint)


@pytest.fixture(scope="session")
def proxy(s3: SeaweedServer) -> Iterator[FaultProxy]:
    """Our fault-injecting proxy in front of the server; tests arm it and clear it."""
    with FaultProxy(s3.endpoint, seed=7) as p:
        yield p


@pytest.fixture(scope="session")
def recording(profile: Profile) -> Recording:
    """The default recording: every asset format, two camera workers, raw, ingesting and
    failed rows."""
    return build_recording(profile, seed=0)


@pytest.fixture
def faulty(proxy: FaultProxy) -> Iterator[FaultProxy]:
    """The session's proxy with no rules and no records, cleared again after the test."""
    proxy.clear()
    yield proxy
    proxy.clear()


def temporaries(root: Path) -> list[Path]:
    """ursa's temporaries (parts, journals, stages) under ``root``. A download may be
    running: a stage published mid-walk makes the walk start again."""
    while True:
        try:
            return [p for p in root.rglob("*") if ".ursa-" in p.name]
        except FileNotFoundError:
            continue


def boto_client(endpoint: str, **config: Any) -> Any:
    """An independent S3 client (boto3), to check bytes against the store."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, **config),
    )


@pytest.fixture(scope="session")
def boto(s3: SeaweedServer) -> Any:
    """An independent S3 client, to check downloaded bytes against the store."""
    return boto_client(s3.endpoint)


@pytest.fixture
def local_profile(tmp_path: Path) -> Profile:
    """A throwaway file:// profile (raw and assets on the local filesystem)."""
    root = tmp_path / "store"
    return Profile(name="scratch", root=str(root), assets_bucket=f"file://{root}/assets/")


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's own ~/.config/ursa or URSA_* settings."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in [v for v in os.environ if v.startswith("URSA_")]:
        monkeypatch.delenv(var)
