"""A fault-injecting HTTP/1.1 proxy between an S3 client and a real S3 server.

Bytes pass through unchanged, the Host header included: a client whose endpoint is the
proxy signs (SigV4, or a presigned URL) for the proxy's ``host:port``, and SeaweedFS checks
the signature against the Host it receives, so rewriting Host would break every request.
Tests add :class:`Rule` objects that pick requests (method, key, Range, occurrence) and
break the exchange in one named way (see ``FAULTS`` and :class:`Rule`).

HTTP/1.1 keep-alive and concurrent connections are supported; bodies are framed by
Content-Length, chunked encoding or connection close. The proxy runs its own asyncio
loop in a daemon thread, listens on 127.0.0.1 only and uses the standard library only.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import hmac
import random
import re
import socket
import struct
import termios
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from types import TracebackType

FAULTS = frozenset(
    {"reset_before", "reset_mid_body", "truncate", "status", "stall", "slow"}
    | {"ignore_range", "flip_byte", "replace_object", "rewrite_body"}
)
_CUTS = ("reset_mid_body", "truncate", "stall")  # faults that stop a body after after_bytes
_ERROR_CODES = {400: "BadRequest", 403: "AccessDenied", 404: "NoSuchKey"}
_ERROR_CODES |= {408: "RequestTimeout", 412: "PreconditionFailed", 429: "SlowDown"}
_ERROR_CODES |= {500: "InternalError", 502: "BadGateway", 503: "SlowDown", 504: "GatewayTimeout"}
_PIECE = 64 * 1024

Framing = str | int | None  # None: no body; "chunked"; "close": until EOF; int: Content-Length


@dataclass
class Rule:
    """Which requests to break and how; the proxy fills in ``matched`` and ``fired``.

    Faults: ``reset_before`` RST before any response byte; ``reset_mid_body`` /
    ``truncate`` / ``stall``: the response head and ``after_bytes`` of payload, then an
    RST / a clean FIN / silence for ``delay_s`` (0: until the client closes) and a FIN
    (``stall`` with ``after_bytes < 0`` sends nothing, not even the head); ``status``: an
    S3-style XML error made by the proxy, the upstream never asked; ``slow``: the whole
    body in ``chunk``-byte writes ``delay_s`` apart; ``ignore_range``: Range removed (the
    server answers 200 with everything); ``flip_byte``: one bit flipped at payload offset
    ``after_bytes``; ``replace_object``: ``action()`` runs (in a worker thread) before the
    request is forwarded, at most once per rule; ``rewrite_body``: the whole response body
    is passed through ``rewrite`` (e.g. to plant hostile keys in a listing). A body shorter
    than ``after_bytes`` goes through whole before the fault. Faults count payload bytes,
    never chunk framing.
    """

    fault: str
    method: str | None = None
    key: str | None = None  # regex searched in the unquoted path, "/bucket/key"
    ranged: bool | None = None
    occurrences: set[int] | None = None  # 1-based among the requests this rule matches
    times: int | None = None  # the first N matching requests
    after_bytes: int = 0
    status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0
    chunk: int = 1024
    probability: float = 1.0  # drawn from the proxy's seeded random.Random
    action: Callable[[], None] | None = None
    rewrite: Callable[[bytes], bytes] | None = None  # for rewrite_body
    matched: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {sorted(FAULTS)}")


@dataclass(frozen=True)
class RequestRecord:
    time: float  # time.monotonic() when the request head arrived
    method: str
    path: str  # unquoted, without the query string
    range: str | None
    if_match: str | None
    fault: str | None
    status: int | None  # forwarded or made up; None if the client got no response head
    target: str = ""  # the request line's target as sent (path and query string)
    # time.monotonic() when the whole response was sent; None if it was not (yet): still
    # going, cut by a fault, or the client went away mid-answer
    done: float | None = None


@dataclass
class _Record:  # filled in while the exchange runs; records() hands out frozen copies
    time: float
    method: str
    path: str
    range: str | None
    if_match: str | None
    fault: str | None = None
    status: int | None = None
    target: str = ""
    done: float | None = None


@dataclass
class _Head:
    """A request or response head. The raw lines are kept so that an unchanged head is
    forwarded byte for byte."""

    lines: list[bytes]
    start: list[str]
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names

    @classmethod
    def parse(cls, raw: bytes) -> _Head:
        lines = raw.removesuffix(b"\r\n\r\n").split(b"\r\n")
        head = cls(lines, lines[0].decode("latin-1").split(" ", 2))
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            head.headers[name.strip().lower()] = value.strip()
        return head

    def raw(self) -> bytes:
        return b"\r\n".join(self.lines) + b"\r\n\r\n"

    def edited(self, name: str, value: str | None) -> _Head:
        """A copy without header ``name``, or with it set to ``value``."""
        prefix = name.lower().encode() + b":"
        lines = [ln for ln in self.lines if not ln.lower().startswith(prefix)]
        if value is not None:
            lines.append(f"{name}: {value}".encode("latin-1"))
        return _Head.parse(b"\r\n".join(lines))

    def framing(self, *, bodiless: bool = False) -> Framing:
        if bodiless:
            return None
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return "chunked"
        if "content-length" in self.headers:
            return int(self.headers["content-length"])
        return "close" if self.start[0].startswith("HTTP/") else None  # requests: no body

    def wants_close(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        version = self.start[0] if self.start[0].startswith("HTTP/") else self.start[-1]
        return "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)


class _Hangup(Exception):
    """End the client connection: a fault did, or a peer broke the exchange."""


async def _read_head(reader: asyncio.StreamReader) -> _Head | None:
    try:
        return _Head.parse(await reader.readuntil(b"\r\n\r\n"))
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise _Hangup from e
        return None  # closed between messages: the normal end of a keep-alive connection


async def _payload(
    reader: asyncio.StreamReader, framing: Framing, trailers: list[bytes]
) -> AsyncGenerator[bytes, None]:
    """A body's payload, chunked framing undone (its trailers are appended to ``trailers``)."""
    if isinstance(framing, int):
        left = framing
        while left:
            piece = await reader.read(min(left, _PIECE))
            if not piece:
                raise _Hangup("peer closed before Content-Length was reached")
            left -= len(piece)
            yield piece
    elif framing == "close":
        while piece := await reader.read(_PIECE):
            yield piece
    elif framing == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            yield await reader.readexactly(size)
            await reader.readexactly(2)
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            trailers.append(line)


async def _relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    framing: Framing,
    rule: Rule | None = None,
) -> None:
    """Copy one body, applying the rule's body fault. Chunked bodies are re-framed around
    the (possibly changed) payload; a cut one never gets its closing chunk."""
    fault = rule.fault if rule else None
    trailers: list[bytes] = []
    offset, writes, pending = 0, 0, b""

    async def send(part: bytes) -> None:
        nonlocal writes
        if rule and fault == "slow" and writes:
            await asyncio.sleep(rule.delay_s)
        writer.write(b"%x\r\n%s\r\n" % (len(part), part) if framing == "chunked" else part)
        await writer.drain()
        writes += 1

    async with contextlib.aclosing(_payload(reader, framing, trailers)) as body:
        async for piece in body:
            if rule and fault in _CUTS:
                piece = piece[: max(0, rule.after_bytes - offset)]
            elif rule and fault == "flip_byte" and 0 <= rule.after_bytes - offset < len(piece):
                i = rule.after_bytes - offset
                piece = piece[:i] + bytes([piece[i] ^ 0x01]) + piece[i + 1 :]
            offset += len(piece)
            pending += piece
            # "slow" writes whole chunk-sized pieces however the upstream's bytes arrived.
            step = max(1, rule.chunk) if rule and fault == "slow" else len(pending)
            while pending and len(pending) >= step:
                await send(pending[:step])
                pending = pending[step:]
            if rule and fault in _CUTS and offset >= rule.after_bytes:
                return
    if pending:
        await send(pending)
    if fault in _CUTS:
        return
    if framing == "chunked":
        writer.write(b"0\r\n" + b"".join(trailers) + b"\r\n")
        await writer.drain()


def _resign(req: _Head, secret_key: str | None) -> _Head:
    """Sign a header-signed SigV4 request again after a header was removed: boto3 and
    object_store sign Range, so without this the server refuses the changed request (403).
    Presigned URLs sign only Host and need nothing. Without the secret, nothing is done."""
    auth = re.match(
        r"(AWS4-HMAC-SHA256 Credential=[^/]+/([^,]+)), ?SignedHeaders=([^,]+), ?Signature=",
        req.headers.get("authorization", ""),
    )
    if auth is None or secret_key is None:
        return req
    credential, scope = auth[1], auth[2]
    signed = [h for h in auth[3].split(";") if h in req.headers]
    path, _, query = req.start[1].partition("?")
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    canonical = [
        req.start[0],
        path,  # S3 signs the path as sent, not encoded again
        "&".join(f"{_quote(k)}={_quote(v)}" for k, v in pairs),
        "".join(f"{h}:{' '.join(req.headers[h].split())}\n" for h in signed),
        ";".join(signed),
        req.headers.get("x-amz-content-sha256", hashlib.sha256(b"").hexdigest()),
    ]
    digest = hashlib.sha256("\n".join(canonical).encode()).hexdigest()
    to_sign = f"AWS4-HMAC-SHA256\n{req.headers['x-amz-date']}\n{scope}\n{digest}"
    key = ("AWS4" + secret_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    value = f"{credential}, SignedHeaders={';'.join(signed)}, Signature={signature}"
    return req.edited("Authorization", value)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")  # SigV4's URI encoding


def _unsent(sock: socket.socket) -> int:
    """Bytes still in the kernel's send queue (Linux); 0 where that cannot be asked."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0])
    except (OSError, AttributeError):
        return 0


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with a TCP RST (SO_LINGER 0). An RST discards unsent data, so what was written
    first is flushed and given up to a second to leave the kernel: the client is promised
    those bytes."""
    with contextlib.suppress(OSError):
        writer.transport.set_write_buffer_limits(0)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        deadline = time.monotonic() + 1.0
        while _unsent(sock) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _stall(rule: Rule, creader: asyncio.StreamReader) -> None:
    """Send nothing for ``delay_s`` (0: until the client closes its end)."""
    with contextlib.suppress(asyncio.TimeoutError, OSError):
        await asyncio.wait_for(creader.read(), rule.delay_s or None)


class _Upstream:
    """The client connection's own keep-alive connection to the server, opened lazily."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.streams and self.streams[0].at_eof():  # the server closed it while idle
            self.drop()
        if self.streams is None:
            self.streams = await asyncio.open_connection(*self.address)
        return self.streams

    def drop(self) -> None:
        if self.streams:
            self.streams[1].transport.abort()
            self.streams = None


class FaultProxy:
    """A proxy to ``upstream`` ("http://127.0.0.1:8333") on a free 127.0.0.1 port.

    ``secret_key`` lets ``ignore_range`` re-sign header-signed requests. Connection
    refused: ``refuse_connections(True)`` (alias ``stop_listening()``) closes the listening
    socket, so new connections get ECONNREFUSED from the kernel, and resets the open ones
    (a server that went away drops kept-alive connections too); ``refuse_connections(False)``
    (alias ``start_listening()``) listens again on the same port.
    """

    def __init__(self, upstream: str, *, seed: int = 0, secret_key: str | None = None) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self._upstream = (parts.hostname, parts.port or 80)
        self._rng = random.Random(seed)
        self._secret_key = secret_key
        self._lock = threading.Lock()  # rules and records are shared with the test thread
        self._rules: list[Rule] = []
        self._records: list[_Record] = []
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # made by start(), closed by stop()
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self.port = 0
        self.endpoint = ""
        self.connections = 0  # client connections accepted so far

    # ---- control, from the test thread ----

    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._loop = loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name="faultproxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or not self.port:
            raise RuntimeError("fault proxy did not start")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and wait for the loop thread to end."""
        if self._thread is None or self._loop is None:
            return
        if self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._records.clear()

    def records(self) -> list[RequestRecord]:
        """Every request seen, in arrival order (a snapshot)."""
        with self._lock:
            return [RequestRecord(**vars(r)) for r in self._records]

    @property
    def requests(self) -> list[RequestRecord]:
        return self.records()

    def refuse_connections(self, refuse: bool) -> None:
        if self._loop is None or self._thread is None:
            raise RuntimeError("the proxy is not running")
        coro = self._stop_listening() if refuse else self._listen()
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def stop_listening(self) -> None:
        self.refuse_connections(True)

    def start_listening(self) -> None:
        self.refuse_connections(False)

    # ---- the loop thread ----

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        try:
            loop.run_until_complete(self._main(ready))
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _main(self, ready: threading.Event) -> None:
        self._stopping = asyncio.Event()
        await self._listen()
        ready.set()
        await self._stopping.wait()
        await self._stop_listening()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        conns = list(self._conns.items())
        for task, writer in conns:
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*(task for task, _ in conns), return_exceptions=True)

    async def _serve(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = cwriter
        self.connections += 1
        upstream = _Upstream(self._upstream)
        try:
            while await self._exchange(creader, cwriter, upstream):
                pass
        except (_Hangup, OSError, ValueError, asyncio.IncompleteReadError):
            pass  # a fault, a peer gone, or a malformed message: end this connection
        except asyncio.CancelledError:
            pass  # only stopping cancels; re-raising would make asyncio log it as an error
        finally:
            del self._conns[task]
            upstream.drop()
            cwriter.close()  # a FIN after whatever is still buffered (truncate relies on it)
            with contextlib.suppress(OSError):
                await cwriter.wait_closed()

    def _match(self, record: _Record) -> Rule | None:
        """Record the request; return the first rule that matches it and whose occurrence
        applies. A rule counts a request only if no earlier rule fired on it."""
        with self._lock:
            self._records.append(record)
            for rule in self._rules:
                if (
                    (rule.method is not None and rule.method.upper() != record.method)
                    or (rule.key is not None and not re.search(rule.key, record.path))
                    or (rule.ranged is not None and rule.ranged != (record.range is not None))
                ):
                    continue
                rule.matched += 1
                if (
                    (rule.occurrences is None or rule.matched in rule.occurrences)
                    and (rule.times is None or rule.matched <= rule.times)
                    and not (rule.fault == "replace_object" and rule.fired)
                    and (rule.probability >= 1 or self._rng.random() < rule.probability)
                ):
                    rule.fired += 1
                    record.fault = rule.fault
                    return rule
            return None

    async def _exchange(
        self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter, upstream: _Upstream
    ) -> bool:
        """Relay one request and its response; return whether the client connection stays."""
        req = await _read_head(creader)
        if req is None:
            return False
        if len(req.start) != 3:
            raise _Hangup("malformed request line")
        method, target = req.start[0], req.start[1]
        record = _Record(
            time.monotonic(),
            method,
            urllib.parse.unquote(urllib.parse.urlsplit(target).path),
            req.headers.get("range"),
            req.headers.get("if-match"),
            target=target,
        )
        rule = self._match(record)
        fault = rule.fault if rule else None
        if rule and fault == "reset_before":
            await _reset(cwriter)
            raise _Hangup
        if rule and fault == "status":
            return await self._answer_status(rule, req, record, creader, cwriter)
        if rule and fault == "stall" and rule.after_bytes < 0:
            await _stall(rule, creader)
            raise _Hangup
        if rule and fault == "replace_object" and rule.action is not None:
            await asyncio.to_thread(rule.action)  # blocking test code must not block the loop
        req_framing = req.framing()
        if fault == "ignore_range" and record.range is not None:
            req = _resign(req.edited("Range", None), self._secret_key)

        ureader, uwriter = await upstream.open()
        uwriter.write(req.raw())
        # The body goes up concurrently, so that an interim "100 Continue" can come back.
        body_up = asyncio.create_task(_relay(creader, uwriter, req_framing))
        try:
            while (resp := await _read_head(ureader)) is not None:
                if not 100 <= int(resp.start[1]) < 200:
                    break
                cwriter.write(resp.raw())  # an interim response: pass it on, wait for more
            if resp is None:
                raise _Hangup("the server closed without answering")
            record.status = status = int(resp.start[1])
            framing = resp.framing(bodiless=method == "HEAD" or status in (204, 304))
            if rule and fault == "rewrite_body" and rule.rewrite is not None:
                body = b"".join([piece async for piece in _payload(ureader, framing, [])])
                body = await asyncio.to_thread(rule.rewrite, body)
                resp = resp.edited("Transfer-Encoding", None).edited(
                    "Content-Length", str(len(body))
                )
                cwriter.write(resp.raw() + body)
                await cwriter.drain()
            else:
                cwriter.write(resp.raw())
                await _relay(ureader, cwriter, framing, rule)
            if fault not in _CUTS:
                record.done = time.monotonic()
            if rule and fault == "reset_mid_body":
                await _reset(cwriter)
            if rule and fault == "stall":
                await cwriter.drain()
                await _stall(rule, creader)
            if fault in _CUTS:
                raise _Hangup
            # The answer is complete but the body is still not all up a second later: the
            # server answered without reading it, and the client may never send it.
            if not (await asyncio.wait({body_up}, timeout=1.0))[0]:
                raise _Hangup
            await body_up
        finally:
            body_up.cancel()  # a no-op if it is done; its error, if any, is already handled
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await body_up
        if framing == "close" or resp.wants_close():
            upstream.drop()
        return not (framing == "close" or resp.wants_close() or req.wants_close())

    async def _answer_status(
        self,
        rule: Rule,
        req: _Head,
        record: _Record,
        creader: asyncio.StreamReader,
        cwriter: asyncio.StreamWriter,
    ) -> bool:
        """Answer with an S3-style error made here; the server never sees the request."""
        # A client waiting for "100 Continue" will not send its body: answer, then hang up.
        keep = "100-continue" not in req.headers.get("expect", "").lower()
        keep = keep and not req.wants_close()
        if keep:
            async with contextlib.aclosing(_payload(creader, req.framing(), [])) as rest:
                async for _ in rest:
                    pass
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>'
            f"{_ERROR_CODES.get(rule.status, 'InjectedFault')}</Code><Message>injected by "
            f"faultproxy</Message><Resource>{record.path}</Resource></Error>"
        ).encode()
        head = [
            f"HTTP/1.1 {rule.status} Injected Fault",
            "Content-Type: application/xml",
            f"Content-Length: {len(body)}",
            "x-amz-request-id: faultproxy",
        ]
        head += [f"Retry-After: {rule.retry_after}"] if rule.retry_after is not None else []
        head += [] if keep else ["Connection: close"]
        cwriter.write("\r\n".join(head).encode() + b"\r\n\r\n")
        if req.start[0] != "HEAD":
            cwriter.write(body)
        await cwriter.drain()
        record.status = rule.status
        record.done = time.monotonic()
        return keep
