"""The http node's synchronous path: httpx, one client per worker thread.

httpx's timeouts are per socket operation: a server that sends its status line
and headers one byte a second never trips a 2-second read timeout, and a
thread blocked in ``recv`` does not see the run being cancelled. So the
clients here get a network backend of their own (:class:`DeadlineBackend`):
every connect, TLS handshake, read and write waits at most
:data:`~plait.nodes.http.CANCEL_POLL_S` at a time and, between waits, checks
the request's total deadline and the run's cancel flag. The request in flight
on a thread is known through a thread-local, because sync httpx does its I/O
on the calling thread.

Imported by ``HttpNode.exec`` only: it imports httpx and httpcore.
"""

from __future__ import annotations

import errno as errno_codes
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from http.cookiejar import CookieJar
from typing import Any

import httpcore
import httpx

from plait.nodes.base import NodeError, Services
from plait.nodes.http import (
    CANCEL_POLL_S,
    REDIRECT_STATUSES,
    BodyCap,
    PreparedRequest,
    cancelled,
    could_not_connect,
    finish,
    first_hop,
    next_hop,
    reason,
    timed_out,
    tls_context,
)

_current = threading.local()


class RequestCancelled(Exception):
    """The run was cancelled while this thread's request waited on the network."""


class _NoCookies(CookieJar):
    """Each request stands alone: a cookie one item's response sets is not sent
    with another item's request (which client a thread gets is chance)."""

    def set_cookie(self, cookie: Any) -> None:
        pass

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


# ---------------------------------------------------------------------------
# the clients


class _Lease:
    """A thread's hold on a client. The thread's locals go when it ends, and
    with them the lease, which hands the client back."""

    __slots__ = ("client", "idle")

    def __init__(self, client: Any, idle: list[Any]) -> None:
        self.client = client
        self.idle = idle

    def __del__(self) -> None:
        self.idle.append(self.client)  # atomic; a closed pool's list is never read again


class ClientPool:
    """One ``httpx.Client`` per worker thread, made on first use.

    Each keeps its connections alive from item to item. A single client shared
    by many threads serialises them on httpcore's pool lock (200 threads: 14x
    slower, and a known race). All share one SSL context. When a thread ends,
    its client goes to ``_idle`` for the next thread, so a run that starts new
    workers again and again (each item of a parallel batch of sub-workflows)
    holds clients and sockets for the threads alive at once, not for every
    thread it ever started.
    """

    def __init__(self, tls: ssl.SSLContext) -> None:
        self._local = threading.local()
        self._clients: list[Any] = []
        self._idle: list[Any] = []
        self._tls = tls
        self._lock = threading.Lock()

    def client(self) -> httpx.Client:
        lease = getattr(self._local, "lease", None)
        if lease is None:
            with self._lock:
                client = self._idle.pop() if self._idle else None
            if client is None:
                client = _new_client(self._tls)
                with self._lock:
                    self._clients.append(client)
            lease = self._local.lease = _Lease(client, self._idle)
        return lease.client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def _new_client(tls: ssl.SSLContext) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=tls)
    # The one seam httpx leaves for the socket layer is httpcore's network
    # backend; HTTPTransport does not take one, so its pool is rebuilt with
    # the same settings and ours.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=tls,
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        network_backend=DeadlineBackend(),
    )
    return httpx.Client(transport=transport, timeout=30.0, cookies=_NoCookies())


def pool(services: Services) -> ClientPool:
    return services.resource(
        "http.clients", lambda: ClientPool(tls_context(services)), ClientPool.close
    )


# ---------------------------------------------------------------------------
# the network backend: every wait bounded by the deadline, cancellable


class _Budget:
    __slots__ = ("cancel", "deadline")

    def __init__(self, deadline: float, cancel: threading.Event | None) -> None:
        self.deadline = deadline
        self.cancel = cancel


def _retrying(op: Any, timeout: float | None, on_timeout: type[Exception]) -> Any:
    """``op(wait)`` again and again until it returns, the time is up (the
    operation's own ``timeout`` or the request's deadline, whichever is first)
    or the run is cancelled. ``op`` raises :class:`TimeoutError` when its wait
    ran out."""
    end = None if timeout is None else time.monotonic() + timeout
    budget: _Budget | None = getattr(_current, "budget", None)
    cancel = None
    if budget is not None:
        end = budget.deadline if end is None else min(end, budget.deadline)
        cancel = budget.cancel
    while True:
        if cancel is not None and cancel.is_set():
            raise RequestCancelled()
        wait = None
        if end is not None:
            wait = end - time.monotonic()
            if wait <= 0:
                raise on_timeout("timed out")
        if cancel is not None:
            wait = CANCEL_POLL_S if wait is None else min(wait, CANCEL_POLL_S)
        try:
            return op(wait)
        except (TimeoutError, BlockingIOError):
            continue


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        sock = self._sock

        def recv(wait: float | None) -> bytes:
            sock.settimeout(wait)
            return sock.recv(max_bytes)

        try:
            data: bytes = _retrying(recv, timeout, httpcore.ReadTimeout)
            return data
        except OSError as exc:
            raise httpcore.ReadError(reason(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        sock = self._sock
        left = [memoryview(buffer)]

        def send(wait: float | None) -> int:
            sock.settimeout(wait)
            return sock.send(left[0])

        try:
            while left[0]:
                sent: int = _retrying(send, timeout, httpcore.WriteTimeout)
                left[0] = left[0][sent:]
        except OSError as exc:
            raise httpcore.WriteError(reason(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        if isinstance(self._sock, ssl.SSLSocket):
            raise httpcore.ConnectError("TLS inside TLS (an HTTPS proxy) is not supported")
        try:
            tls = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )

            def handshake(wait: float | None) -> None:
                tls.settimeout(wait)
                tls.do_handshake()

            _retrying(handshake, timeout, httpcore.ConnectTimeout)
        except RequestCancelled:
            self.close()
            raise
        except (httpcore.ConnectTimeout, OSError) as exc:
            self.close()
            if isinstance(exc, httpcore.ConnectTimeout):
                raise
            raise httpcore.ConnectError(reason(exc)) from exc
        return DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        sock = self._sock
        if info == "ssl_object":
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return sock
        if info == "is_readable":
            return _readable(sock)
        return None


def _readable(sock: socket.socket) -> bool:
    """An idle keep-alive connection that reads as readable has been closed by the server."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class DeadlineBackend(httpcore.NetworkBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(reason(exc)) from exc
        last: OSError | None = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                if local_address is not None:
                    sock.bind((local_address, 0))
                _connect(sock, address, timeout)
                sock.setblocking(True)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return DeadlineStream(sock)
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        raise httpcore.ConnectError(reason(last) if last else f"no address found for {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _connect(sock, path, timeout)
            sock.setblocking(True)
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(reason(exc)) from exc
        return DeadlineStream(sock)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def _connect(sock: socket.socket, address: Any, timeout: float | None) -> None:
    """A non-blocking connect, waited for in slices (a blocking one cannot be cancelled)."""
    sock.setblocking(False)
    code = sock.connect_ex(address)
    if code == 0:
        return
    if code not in (errno_codes.EINPROGRESS, errno_codes.EWOULDBLOCK, errno_codes.EALREADY):
        raise OSError(code, os.strerror(code))

    def writable(wait: float | None) -> None:
        _, ready, _ = select.select([], [sock], [], wait)
        if not ready:
            raise TimeoutError
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, os.strerror(code))

    _retrying(writable, timeout, httpcore.ConnectTimeout)


# ---------------------------------------------------------------------------
# one request


def send(req: PreparedRequest) -> dict[str, Any]:
    client = pool(req.services).client()
    started = time.perf_counter()
    deadline = time.monotonic() + req.timeout
    _current.budget = _Budget(deadline, req.cancelled)
    phase = "waiting for the response"
    try:
        hop, hops = first_hop(req), 0
        timeout = httpx.Timeout(req.timeout)
        while True:
            request = client.build_request(
                hop.method, hop.url, headers=hop.headers, content=hop.content, timeout=timeout
            )
            resp = client.send(request, stream=True, follow_redirects=False)
            location = resp.headers.get("location")
            if not (req.follow_redirects and resp.status_code in REDIRECT_STATUSES and location):
                break
            resp.close()
            hops += 1
            hop = next_hop(req, hop, resp.status_code, location, hops)
        try:
            status = resp.status_code
            headers = dict(resp.headers)
            phase = "while reading the response body"
            data = _read_body(resp, req, status, headers)
        finally:
            resp.close()
    except RequestCancelled:
        raise cancelled(req) from None
    except httpx.TimeoutException as exc:
        raise timed_out(req, _timeout_phase(exc, phase)) from exc
    except httpx.ConnectError as exc:
        raise could_not_connect(req, reason(exc)) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        raise NodeError(f"{req.what}: invalid request: {reason(exc)}", retryable=False) from exc
    except httpx.DecodingError as exc:
        raise NodeError(
            f"{req.what}: could not decode the response body: {reason(exc)}", retryable=False
        ) from exc
    except httpx.HTTPError as exc:
        # ReadError, RemoteProtocolError and friends: the server hung up mid-exchange.
        raise NodeError(f"{req.what} failed: {reason(exc)}", retryable=True) from exc
    finally:
        _current.budget = None
    return finish(req, status, headers, data, time.perf_counter() - started)


def _timeout_phase(exc: Exception, phase: str) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "while connecting"
    if isinstance(exc, httpx.PoolTimeout):
        return "waiting for a free connection in the pool"
    if isinstance(exc, httpx.WriteTimeout):
        return "while sending the request"
    return phase


def _read_body(resp: Any, req: PreparedRequest, status: int, headers: dict[str, str]) -> bytes:
    if req.method == "HEAD":
        return b""
    cap = BodyCap(req, status, headers)
    cap.check_declared()
    chunks: list[bytes] = []
    for chunk in resp.iter_bytes():
        cap.add(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)
