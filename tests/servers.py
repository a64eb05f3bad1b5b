"""A real HTTP server on 127.0.0.1 for tests and benchmarks.

    with LocalServer() as server:
        server.url("/json")            # http://127.0.0.1:<port>/json
        server.requests                # every request received, in order
        server.connections             # TCP connections accepted so far

As a pytest fixture (in a test file, or in conftest.py)::

    from servers import serve
    http_server = pytest.fixture(serve)

Built-in routes (query parameters in brackets):

* ``/json`` — ``{"ok": true, "path", "query"}``; any path under ``/json/`` works too
* ``/item/<n>`` — ``{"n": n}`` [``delay`` seconds]; for ordering tests
* ``/text`` — text/plain [``body``, ``type``]
* ``/binary`` — deterministic bytes, image/png [``size``]
* ``/status/<code>`` — that status; JSON body ``{"error": ...}`` [``body``, ``type``]
* ``/delay/<seconds>`` — sleeps, then JSON
* ``/flaky/<key>`` — the first ``fail`` requests for ``key`` answer ``status`` (default 429)
  with ``Retry-After: <retry_after>`` (an HTTP date with ``date=1``), then 200 JSON
  ``{"attempt": n}``
* ``/redirect/<n>`` — a chain of ``n`` 302s ending at ``/json`` [``status``]
* ``/echo`` — the request back: ``method``, ``path``, ``query``, ``headers``, ``body``, ``json``
* ``/large`` — ``bytes`` bytes of text [``chunked=1`` drops Content-Length]
* ``/gzip`` — ``bytes`` bytes of text, gzip-encoded on the wire
* ``/drip`` — ``chunks`` chunks, ``interval`` seconds apart
* ``/problem`` — a 400 with ``application/problem+json``
* ``/nocontent`` — 204

``server.route(path, handler)`` adds a route: ``handler(request) -> Reply``.
``LocalServer(delay=0.1)`` makes every request wait first (the benchmark's server).

:class:`DribbleServer` is a hostile one: it answers every request with a valid
response sent one byte at a time, the status line and headers included.
"""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, Any]  # a single value as a string, a repeated key as a list
    headers: dict[str, str]  # names in lower case
    body: bytes
    connection: int  # which TCP connection carried it
    time: float  # time.monotonic() on arrival

    def arg(self, name: str, default: str = "") -> str:
        value = self.query.get(name, default)
        return value[-1] if isinstance(value, list) else value

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""  # str is sent as UTF-8; anything else but bytes as JSON
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] | None = None  # sent with chunked transfer encoding instead of body
    chunk_interval: float = 0.0

    def payload(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type or "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.content_type or "text/plain; charset=utf-8"
        return json.dumps(self.body).encode("utf-8"), self.content_type or "application/json"


Handler = Callable[[Request], Reply]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError | OSError):
            return  # a client that gave up (size cap, timeout, a refused certificate)
        super().handle_error(request, client_address)


class LocalServer:
    """A threaded HTTP/1.1 (keep-alive) server on a random port of 127.0.0.1."""

    def __init__(
        self,
        *,
        delay: float = 0.0,
        request_queue_size: int = 128,
        tls: tuple[str, str] | None = None,
    ) -> None:
        """``tls``: (certificate file, key file) to serve https instead of http."""
        self.delay = delay
        self.tls = tls
        self.request_queue_size = request_queue_size
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._connection_ids = itertools.count(1)
        self._connections = 0
        self._counters: dict[str, int] = {}
        self._routes: dict[str, Handler] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> LocalServer:
        queue_size = self.request_queue_size

        class Server(_Server):
            request_queue_size = queue_size

        self._server = Server(("127.0.0.1", 0), _RequestHandler)
        self._server.owner = self
        if self.tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far."""
        with self._lock:
            return self._connections

    def requests_to(self, path_prefix: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def route(self, path: str, handler: Handler) -> None:
        """Answer requests to exactly ``path`` with ``handler``."""
        self._routes[path] = handler

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._counters.clear()
            self._connections = 0

    # -- internals used by the handler

    def _new_connection(self) -> int:
        with self._lock:
            self._connections += 1
            return next(self._connection_ids)

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _bump(self, key: str) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + 1
            return self._counters[key]

    def _dispatch(self, req: Request) -> Reply:
        if self.delay:
            time.sleep(self.delay)
        if req.path in self._routes:
            return self._routes[req.path](req)
        head, _, rest = req.path.lstrip("/").partition("/")
        builtin = _BUILTIN.get(head)
        if builtin is None:
            return Reply(404, {"error": f"no route for {req.path}"})
        return builtin(self, req, rest)


def serve(**kwargs: Any) -> Iterator[LocalServer]:
    """A started server for the duration of a test; wrap with ``pytest.fixture``."""
    with LocalServer(**kwargs) as server:
        yield server


# ---------------------------------------------------------------------------
# built-in routes


def _json_route(server: LocalServer, req: Request, rest: str) -> Reply:
    return Reply(200, {"ok": True, "path": req.path, "query": req.query})


def _item_route(server: LocalServer, req: Request, rest: str) -> Reply:
    delay = float(req.arg("delay", "0") or 0)
    if delay:
        time.sleep(delay)
    try:
        n: Any = int(rest)
    except ValueError:
        n = rest
    return Reply(200, {"n": n})


def _text_route(server: LocalServer, req: Request, rest: str) -> Reply:
    return Reply(
        200,
        req.arg("body", "hello, world"),
        content_type=req.arg("type", "text/plain; charset=utf-8"),
    )


def binary_payload(size: int) -> bytes:
    """The bytes ``/binary?size=N`` sends: a PNG signature, then every byte value."""
    head = b"\x89PNG\r\n\x1a\n"
    pattern = bytes(range(256))
    body = head + pattern * (size // 256 + 1)
    return body[:size]


def _binary_route(server: LocalServer, req: Request, rest: str) -> Reply:
    size = int(req.arg("size", "1024"))
    return Reply(200, binary_payload(size), content_type=req.arg("type", "image/png"))


def _status_route(server: LocalServer, req: Request, rest: str) -> Reply:
    code = int(rest or "500")
    body: Any = req.arg("body", "") or {"error": f"status {code}", "detail": "as requested"}
    return Reply(code, body, content_type=req.arg("type") or None)


def _delay_route(server: LocalServer, req: Request, rest: str) -> Reply:
    seconds = float(rest or "1")
    time.sleep(seconds)
    return Reply(200, {"slept": seconds})


def _flaky_route(server: LocalServer, req: Request, rest: str) -> Reply:
    key = rest or "default"
    attempt = server._bump("flaky:" + key)
    fail = int(req.arg("fail", "1"))
    if attempt <= fail:
        status = int(req.arg("status", "429"))
        headers = {}
        retry_after = req.arg("retry_after")
        if retry_after:
            if req.arg("date") == "1":
                headers["Retry-After"] = formatdate(time.time() + float(retry_after), usegmt=True)
            else:
                headers["Retry-After"] = retry_after
        return Reply(status, {"error": "try again later", "attempt": attempt}, headers=headers)
    return Reply(200, {"ok": True, "attempt": attempt})


def _redirect_route(server: LocalServer, req: Request, rest: str) -> Reply:
    n = int(rest or "1")
    target = f"/redirect/{n - 1}" if n > 1 else "/json"
    status = int(req.arg("status", "302"))
    return Reply(status, f"see {target}", headers={"Location": target})


def _echo_route(server: LocalServer, req: Request, rest: str) -> Reply:
    try:
        parsed = req.json()
    except ValueError:
        parsed = None
    return Reply(
        200,
        {
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "headers": req.headers,
            "body": req.body.decode("utf-8", errors="replace"),
            "json": parsed,
        },
    )


def _large_route(server: LocalServer, req: Request, rest: str) -> Reply:
    size = int(req.arg("bytes", "1000000"))
    if req.arg("chunked") == "1":
        step = 64 * 1024
        chunks = [b"x" * min(step, size - i) for i in range(0, size, step)]
        return Reply(200, content_type="text/plain", chunks=chunks)
    return Reply(200, b"x" * size, content_type="text/plain")


def _gzip_route(server: LocalServer, req: Request, rest: str) -> Reply:
    size = int(req.arg("bytes", "1000000"))
    return Reply(
        200,
        gzip.compress(b"x" * size),
        content_type="text/plain",
        headers={"Content-Encoding": "gzip"},
    )


def _drip_route(server: LocalServer, req: Request, rest: str) -> Reply:
    count = int(req.arg("chunks", "10"))
    interval = float(req.arg("interval", "0.2"))
    return Reply(
        200, content_type="text/plain", chunks=[b"drip\n"] * count, chunk_interval=interval
    )


def _problem_route(server: LocalServer, req: Request, rest: str) -> Reply:
    return Reply(
        400,
        {"type": "about:blank", "title": "Bad input", "detail": "field 'x' is required"},
        content_type="application/problem+json",
    )


def _nocontent_route(server: LocalServer, req: Request, rest: str) -> Reply:
    return Reply(204, b"")


_BUILTIN: dict[str, Callable[[LocalServer, Request, str], Reply]] = {
    "json": _json_route,
    "item": _item_route,
    "text": _text_route,
    "binary": _binary_route,
    "status": _status_route,
    "delay": _delay_route,
    "flaky": _flaky_route,
    "redirect": _redirect_route,
    "echo": _echo_route,
    "large": _large_route,
    "gzip": _gzip_route,
    "drip": _drip_route,
    "problem": _problem_route,
    "nocontent": _nocontent_route,
}


# ---------------------------------------------------------------------------
# the handler


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be counted
    timeout = 30  # an idle keep-alive connection's thread ends after this
    # Headers and body leave in one segment; without these, Nagle's algorithm and delayed
    # ACKs can add tens of milliseconds to a response.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection_id = self.server.owner._new_connection()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _handle(self) -> None:
        owner = self.server.owner
        split = urlsplit(self.path)
        query: dict[str, Any] = {
            k: v[0] if len(v) == 1 else v
            for k, v in parse_qs(split.query, keep_blank_values=True).items()
        }
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = Request(
            method=self.command,
            path=split.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            connection=self.connection_id,
            time=time.monotonic(),
        )
        owner._record(req)
        try:
            reply = owner._dispatch(req)
        except Exception as exc:  # a broken test route should show up as a 500, not a hang
            reply = Reply(500, {"error": f"test route failed: {exc!r}"})
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload, content_type = reply.payload()
        self.send_response(reply.status)
        if reply.status != 204:
            self.send_header("Content-Type", content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunks is not None:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command == "HEAD":
                return
            try:
                for chunk in reply.chunks:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.flush()
                    if reply.chunk_interval:
                        time.sleep(reply.chunk_interval)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (size cap, timeout)
            return
        if reply.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and reply.status != 204:
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


# ---------------------------------------------------------------------------
# a hostile server


class DribbleServer:
    """Sends each response one byte every ``interval`` seconds, status line and
    headers first, so no single read of a client ever waits long.

    Bounded: a connection is given up after ``limit`` seconds, and ``stop()``
    (or leaving the ``with`` block) ends every connection within ``interval``.
    ``requested`` is set when a request has arrived; ``finished`` once a
    response was sent whole.
    """

    def __init__(self, *, interval: float = 0.05, pad: int = 200, limit: float = 30.0) -> None:
        self.interval = interval
        self.limit = limit
        body = b'{"ok": true}'
        self.response = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + b"X-Pad: " + b"p" * pad + b"\r\n"
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.requested = threading.Event()
        self.finished = threading.Event()
        self._stopping = threading.Event()
        self._sock: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> DribbleServer:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.settimeout(0.05)
        self._sock = sock
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        for t in list(self._threads):
            t.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def url(self, path: str = "/") -> str:
        assert self._sock is not None, "server not started"
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}{path}"

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        give_up = time.monotonic() + self.limit
        with conn:
            conn.settimeout(1.0)
            seen = b""
            try:
                while b"\r\n\r\n" not in seen and not self._stopping.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        return
                    seen += chunk
                self.requested.set()
                for i in range(len(self.response)):
                    if self._stopping.is_set() or time.monotonic() > give_up:
                        return
                    conn.sendall(self.response[i : i + 1])
                    time.sleep(self.interval)
                self.finished.set()
            except OSError:
                return  # the client hung up: what a deadline is for
