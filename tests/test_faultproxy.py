"""The fault proxy itself: transparent for S3 clients, and each fault does what it says,
as seen by a plain HTTP client on the wire."""

from __future__ import annotations

import http.client
import random
import re
import socket
import socketserver
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, SECRET_KEY
from faultproxy import FaultProxy, RequestRecord, Rule
from ursa.testing.seaweed import SeaweedServer

pytestmark = pytest.mark.timeout(60)

BUCKET = "ursa-raw"
SIZE = 64 * 1024


def _boto(endpoint: str) -> Any:  # boto3 is untyped
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"mode": "standard", "total_max_attempts": 1},  # faults reach the test
        ),
    )


@pytest.fixture
def proxy(s3: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy(s3.endpoint, secret_key=SECRET_KEY) as p:
        yield p


@pytest.fixture
def via(proxy: FaultProxy) -> Any:
    """A boto3 client whose endpoint is the proxy (it signs for the proxy's host:port)."""
    return _boto(proxy.endpoint)


@pytest.fixture
def obj(boto: Any, request: pytest.FixtureRequest) -> tuple[str, bytes]:
    """A fresh random object, put straight into the server (not through the proxy)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name)
    data = random.Random(name).randbytes(SIZE)
    key = f"faultproxy/{name}.bin"
    boto.put_object(Bucket=BUCKET, Key=key, Body=data)
    return key, data


@pytest.fixture
def conn(proxy: FaultProxy) -> Iterator[http.client.HTTPConnection]:
    """One keep-alive connection to the proxy, for exact observation."""
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    yield c
    c.close()


def _url(client: Any, key: str, op: str = "get_object") -> str:
    """A SigV4-presigned path?query (it signs only the Host header)."""
    url = client.generate_presigned_url(op, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600)
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


def _get(conn: http.client.HTTPConnection, url: str, **headers: str) -> http.client.HTTPResponse:
    conn.request("GET", url, headers=headers)
    return conn.getresponse()


# ---- transparency ----


def test_objects_round_trip_unchanged(proxy: FaultProxy, via: Any) -> None:
    data = random.Random(1).randbytes(3 * 1024 * 1024 + 17)
    key = "faultproxy/dir/round trip+%.bin"
    via.put_object(Bucket=BUCKET, Key=key, Body=data)
    assert via.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    ranged = via.get_object(Bucket=BUCKET, Key=key, Range="bytes=100-199")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["Body"].read() == data[100:200]
    assert via.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == len(data)

    path = f"/{BUCKET}/{key}"
    assert [(r.method, r.path, r.range, r.status, r.fault) for r in proxy.records()] == [
        ("PUT", path, None, 200, None),
        ("GET", path, None, 200, None),
        ("GET", path, "bytes=100-199", 206, None),
        ("HEAD", path, None, 200, None),
    ]
    assert proxy.connections == 1  # boto3 kept its connection alive through the proxy


def test_the_object_store_client_signs_through_the_proxy(
    proxy: FaultProxy, obj: tuple[str, bytes]
) -> None:
    """ursa's engine uses Rust object_store, which signs Range too (obstore wraps it)."""
    obstore = pytest.importorskip("obstore")
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=proxy.endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    key, data = obj
    assert bytes(obstore.get(store, key).bytes()) == data
    assert bytes(obstore.get_range(store, key, start=10, end=20)) == data[10:20]
    proxy.add(Rule("ignore_range"))  # re-signed, so the server answers 200, not 403
    with pytest.raises(Exception, match="non-partial response"):
        obstore.get_range(store, key, start=10, end=20)
    assert [(r.range, r.status) for r in proxy.records()] == [
        (None, 200),
        ("bytes=10-19", 206),
        ("bytes=10-19", 200),
    ]


def test_the_server_checks_the_signed_host_so_the_proxy_keeps_it(
    s3: SeaweedServer, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    url = _url(via, key)  # signed for the proxy's host:port
    direct = http.client.HTTPConnection(s3.endpoint.split("//")[1], timeout=10)
    try:
        direct.request("GET", url)  # same URL, but Host is now the server's
        refused = direct.getresponse()
        assert refused.status == 403
        assert b"SignatureDoesNotMatch" in refused.read()
    finally:
        direct.close()
    assert _get(conn, url).read() == data


def test_chunked_request_bodies_are_forwarded(
    via: Any, boto: Any, conn: http.client.HTTPConnection
) -> None:
    key = "faultproxy/chunked-put.bin"
    conn.request("PUT", _url(via, key, "put_object"), body=iter([b"a" * 5000, b"b" * 7]))
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    assert boto.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"a" * 5000 + b"b" * 7


def test_keep_alive_serves_many_requests_on_one_connection(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    url = _url(via, key)
    assert _get(conn, url).read() == data
    first_socket = conn.sock
    for i in range(5):
        assert _get(conn, url, Range=f"bytes={i}-{i + 9}").read() == data[i : i + 10]
        assert conn.sock is first_socket
    conn.request("HEAD", _url(via, key, "head_object"))
    head = conn.getresponse()
    assert (head.status, head.read()) == (200, b"")  # a HEAD answer has no body to wait for
    assert proxy.connections == 1
    assert len(proxy.records()) == 7


def test_concurrent_connections(proxy: FaultProxy, via: Any, obj: tuple[str, bytes]) -> None:
    key, data = obj
    url = _url(via, key)

    def fetch_three(_: int) -> list[bytes]:
        c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            return [_get(c, url).read() for _ in range(3)]
        finally:
            c.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch_three, range(8)))
    assert all(body == data for bodies in results for body in bodies)
    assert proxy.connections == 8
    assert len(proxy.records()) == 24


# ---- faults, as a plain client sees them ----


def test_reset_before_any_response_byte(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    rule = proxy.add(Rule("reset_before", times=1))
    with pytest.raises(ConnectionResetError):
        _get(conn, _url(via, key))
    conn.close()
    assert _get(conn, _url(via, key)).read() == data  # only the first request was hit
    assert (rule.matched, rule.fired) == (2, 1)
    assert [(r.fault, r.status) for r in proxy.records()] == [("reset_before", None), (None, 200)]


def test_reset_mid_body(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    proxy.add(Rule("reset_mid_body", after_bytes=10_000))
    response = _get(conn, _url(via, key))
    assert (response.status, response.getheader("Content-Length")) == (200, str(SIZE))
    assert response.read(10_000) == data[:10_000]
    with pytest.raises(ConnectionResetError):
        response.read()
    assert proxy.records()[0].fault == "reset_mid_body"


def test_truncate_closes_cleanly_short_of_content_length(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    proxy.add(Rule("truncate", after_bytes=12_345))
    response = _get(conn, _url(via, key))
    assert response.getheader("Content-Length") == str(SIZE)
    with pytest.raises(http.client.IncompleteRead) as short:
        response.read()
    assert short.value.partial == data[:12_345]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, "InternalError"),
        (503, "SlowDown"),
        (429, "SlowDown"),
        (408, "RequestTimeout"),
        (403, "AccessDenied"),
        (404, "NoSuchKey"),
    ],
)
def test_status_answers_without_the_upstream(
    proxy: FaultProxy,
    via: Any,
    conn: http.client.HTTPConnection,
    status: int,
    code: str,
) -> None:
    url = _url(via, "faultproxy/no-such-object")  # the server would say 404
    proxy.add(Rule("status", status=status, retry_after="2", times=1))
    response = _get(conn, url)
    assert (response.status, response.getheader("Retry-After")) == (status, "2")
    assert f"<Error><Code>{code}</Code>".encode() in response.read()
    after = _get(conn, url)  # same connection: the error left it usable
    assert (after.status, b"<Code>NoSuchKey</Code>" in after.read()) == (404, True)
    assert [(r.fault, r.status) for r in proxy.records()] == [("status", status), (None, 404)]


def test_status_reaches_boto3_as_an_s3_error(proxy: FaultProxy, via: Any) -> None:
    proxy.add(Rule("status", status=503, method="GET"))
    with pytest.raises(ClientError) as error:
        via.get_object(Bucket=BUCKET, Key="faultproxy/anything")
    assert error.value.response["Error"]["Code"] == "SlowDown"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # boto3 sends PUT bodies after "Expect: 100-continue": the error comes instead.
    proxy.add(Rule("status", status=500, method="PUT", times=1))
    with pytest.raises(ClientError) as error:
        via.put_object(Bucket=BUCKET, Key="faultproxy/put-500", Body=b"x" * 100_000)
    assert error.value.response["Error"]["Code"] == "InternalError"
    via.put_object(Bucket=BUCKET, Key="faultproxy/put-500", Body=b"x" * 100_000)
    assert [(r.method, r.status) for r in proxy.records()] == [
        ("GET", 503),
        ("PUT", 500),
        ("PUT", 200),
    ]


def test_stall_after_headers_until_the_client_gives_up(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, _ = obj
    proxy.add(Rule("stall", after_bytes=100))
    response = _get(conn, _url(via, key))
    assert response.status == 200
    assert len(response.read(100)) == 100
    conn.sock.settimeout(0.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        response.read()
    assert 0.4 < time.monotonic() - started < 5


def test_stall_for_a_while_then_close(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, _ = obj
    proxy.add(Rule("stall", delay_s=1.0))
    response = _get(conn, _url(via, key))
    started = time.monotonic()
    with pytest.raises(http.client.IncompleteRead) as short:
        response.read()
    assert short.value.partial == b""
    assert 0.9 < time.monotonic() - started < 5


def test_stall_before_the_response(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, _ = obj
    proxy.add(Rule("stall", after_bytes=-1))
    conn.timeout = 0.5
    with pytest.raises(TimeoutError):
        _get(conn, _url(via, key))
    assert proxy.records()[0].status is None  # the upstream was never asked


def test_stop_is_prompt_while_a_client_waits_on_a_stall(
    s3: SeaweedServer, boto: Any, obj: tuple[str, bytes]
) -> None:
    others = set(threading.enumerate())  # the session's proxy may be running already
    proxy = FaultProxy(s3.endpoint).start()
    proxy.add(Rule("stall"))  # forever, as far as the client is concerned
    c = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        response = _get(c, _url(_boto(proxy.endpoint), obj[0]))
        started = time.monotonic()
        proxy.stop()
        assert time.monotonic() - started < 2
        assert "faultproxy" not in [t.name for t in set(threading.enumerate()) - others]
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            response.read()
    finally:
        c.close()
        proxy.stop()  # idempotent


def test_slow_body_is_complete_but_paced(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    proxy.add(Rule("slow", chunk=8192, delay_s=0.1))  # 8 chunks: 7 pauses
    started = time.monotonic()
    assert _get(conn, _url(via, key)).read() == data
    assert 0.65 < time.monotonic() - started < 3


def test_done_marks_answers_sent_whole_and_not_those_cut(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    proxy.add(Rule("slow", chunk=4096, delay_s=0.05))  # 16 chunks: 0.75 s
    assert _get(conn, _url(via, key)).read() == data
    (whole,) = proxy.records()
    assert whole.done is not None and whole.done - whole.time > 0.6
    response = _get(conn, _url(via, key))
    assert len(response.read(4096)) == 4096
    conn.close()  # a client giving up mid-body
    time.sleep(1.0)  # the whole answer would have been sent by now
    assert proxy.records()[1].done is None


def test_ignore_range_with_a_presigned_url(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    proxy.add(Rule("ignore_range"))
    response = _get(conn, _url(via, key), Range="bytes=10-19")
    assert (response.status, response.read()) == (200, data)
    assert proxy.records()[0].range == "bytes=10-19"  # what the client asked for


def test_ignore_range_re_signs_header_signed_requests(
    s3: SeaweedServer, proxy: FaultProxy, via: Any, obj: tuple[str, bytes]
) -> None:
    key, data = obj
    proxy.add(Rule("ignore_range"))
    whole = via.get_object(Bucket=BUCKET, Key=key, Range="bytes=10-19")
    assert whole["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert whole["Body"].read() == data
    # Without the secret the proxy cannot re-sign, and the server refuses the changed request.
    with FaultProxy(s3.endpoint) as keyless:
        keyless.add(Rule("ignore_range"))
        with pytest.raises(ClientError) as refused:
            _boto(keyless.endpoint).get_object(Bucket=BUCKET, Key=key, Range="bytes=10-19")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_flip_byte_changes_exactly_one_bit(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    proxy.add(Rule("flip_byte", after_bytes=40_000))
    got = _get(conn, _url(via, key)).read()
    assert len(got) == len(data)
    assert [i for i in range(len(data)) if got[i] != data[i]] == [40_000]
    assert bin(got[40_000] ^ data[40_000]).count("1") == 1


def test_replace_object_changes_the_etag_mid_download(
    proxy: FaultProxy, via: Any, boto: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    etag = boto.head_object(Bucket=BUCKET, Key=key)["ETag"]
    calls: list[float] = []

    def overwrite() -> None:
        calls.append(time.monotonic())
        boto.put_object(Bucket=BUCKET, Key=key, Body=b"new contents")

    # Runs before the second part is forwarded: the first part saw the old object.
    rule = proxy.add(Rule("replace_object", ranged=True, occurrences={2, 3}, action=overwrite))
    url = _url(via, key)
    assert _get(conn, url, Range="bytes=0-9", **{"If-Match": etag}).read() == data[:10]
    response = _get(conn, url, Range="bytes=10-19", **{"If-Match": etag})
    assert response.status == 412  # SeaweedFS enforces If-Match
    response.read()
    assert _get(conn, url, Range="bytes=0-2").read() == b"new"
    assert len(calls) == rule.fired == 1  # its action runs once, however many match
    records = proxy.records()
    assert [r.if_match for r in records] == [etag, etag, None]
    assert [(r.fault, r.status) for r in records] == [
        (None, 206),
        ("replace_object", 412),
        (None, 206),
    ]
    assert calls[0] >= records[1].time


def test_refuse_connections_then_listen_again(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, data = obj
    url = _url(via, key)
    assert _get(conn, url).read() == data
    proxy.refuse_connections(True)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    with pytest.raises(ConnectionError):  # the kept-alive connection went too
        _get(conn, url).read()
    conn.close()
    proxy.refuse_connections(False)
    assert _get(conn, url).read() == data  # same port, same presigned URL


# ---- choosing which requests a rule hits ----


def _statuses(conn: http.client.HTTPConnection, url: str, n: int, **headers: str) -> list[int]:
    out = []
    for _ in range(n):
        response = _get(conn, url, **headers)
        response.read()
        out.append(response.status)
    return out


def test_occurrences_pick_the_nth_matching_request(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    url = _url(via, obj[0])
    rule = proxy.add(Rule("status", occurrences={2}))
    assert _statuses(conn, url, 3) == [200, 503, 200]
    assert (rule.matched, rule.fired) == (3, 1)


def test_times_hits_the_first_n(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    url = _url(via, obj[0])
    rule = proxy.add(Rule("status", status=500, times=2))
    assert _statuses(conn, url, 3) == [500, 500, 200]
    assert (rule.matched, rule.fired) == (3, 2)


def test_method_key_and_range_filters_first_match_wins(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    key, _ = obj
    url = _url(via, key)
    heads = proxy.add(Rule("status", method="HEAD", status=404))
    ranged = proxy.add(Rule("status", ranged=True, status=500))
    other_key = proxy.add(Rule("status", key=r"/elsewhere/", status=502))
    also_ranged = proxy.add(Rule("status", ranged=True, status=429))
    conn.request("HEAD", _url(via, key, "head_object"))
    head = conn.getresponse()
    assert (head.status, head.read()) == (404, b"")
    assert _statuses(conn, url, 1, Range="bytes=0-0") == [500]
    assert _statuses(conn, url, 1) == [200]
    assert (heads.fired, ranged.fired, other_key.matched, also_ranged.matched) == (1, 1, 0, 0)


def test_probability_is_repeatable_with_a_seed(
    s3: SeaweedServer, via: Any, obj: tuple[str, bytes]
) -> None:
    def pattern(seed: int) -> list[int]:
        with FaultProxy(s3.endpoint, seed=seed) as p:
            p.add(Rule("status", probability=0.5))
            c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            try:
                url = _url(_boto(p.endpoint), obj[0])
                return _statuses(c, url, 20)
            finally:
                c.close()

    first = pattern(7)
    assert first == pattern(7)
    assert 0 < first.count(503) < 20


def test_clear_forgets_rules_and_records(
    proxy: FaultProxy, via: Any, obj: tuple[str, bytes], conn: http.client.HTTPConnection
) -> None:
    url = _url(via, obj[0])
    proxy.add(Rule("status"))
    assert _statuses(conn, url, 1) == [503]
    proxy.clear()
    assert proxy.records() == []
    assert _statuses(conn, url, 1) == [200]
    (record,) = proxy.requests
    assert isinstance(record, RequestRecord)
    assert (record.method, record.path, record.fault) == ("GET", f"/{BUCKET}/{obj[0]}", None)


def test_unknown_fault_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Rule("explode")


# ---- framing the real server never uses: a scripted upstream ----

_CANNED = {
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n",
    "/empty": b"HTTP/1.1 204 No Content\r\n\r\n",
    "/head": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
}


class _Scripted(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while line := self.rfile.readline():
            path = line.split()[1].decode()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.wfile.write(_CANNED[path])
            if path == "/close":
                return


@pytest.fixture
def scripted() -> Iterator[FaultProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Scripted)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with FaultProxy(f"http://127.0.0.1:{server.server_address[1]}") as p:
            yield p
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_chunked_empty_head_and_close_delimited_responses(scripted: FaultProxy) -> None:
    c = http.client.HTTPConnection("127.0.0.1", scripted.port, timeout=10)
    try:
        assert _get(c, "/chunked").read() == b"hello, world"
        empty = _get(c, "/empty")
        assert (empty.status, empty.read()) == (204, b"")
        c.request("HEAD", "/head")
        head = c.getresponse()
        assert (head.getheader("Content-Length"), head.read()) == ("1000", b"")
        assert _get(c, "/chunked").read() == b"hello, world"  # still the same connection
        assert scripted.connections == 1
        assert _get(c, "/close").read() == b"until the end"
        # Faults count payload bytes, not chunk framing.
        scripted.add(Rule("flip_byte", after_bytes=7, times=1))
        assert _get(c, "/chunked").read() == b"hello, vorld"
    finally:
        c.close()
    scripted.add(Rule("truncate", after_bytes=6))
    with socket.create_connection(("127.0.0.1", scripted.port), timeout=10) as raw:
        raw.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        wire = b"".join(iter(lambda: raw.recv(65536), b""))  # until the proxy's FIN
    assert wire.endswith(b"\r\n\r\n5\r\nhello\r\n1\r\n,\r\n")  # and no closing chunk
