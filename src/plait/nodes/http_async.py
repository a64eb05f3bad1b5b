"""The http node's asynchronous path: aiohttp on the run's event loop.

One ``ClientSession`` (and its connector) per run, made on the run's loop with
``services.async_resource`` and closed there when the run ends. The session
adds nothing of its own: no cookie jar (each request stands alone, as on the
sync path), no redirects (followed here, by the rules in
:func:`plait.nodes.http.next_hop`), no timeouts (the whole exchange runs under
one ``asyncio.timeout``: a server that dribbles its headers cannot stretch it),
no default Content-Type for a raw body (httpx sends none either), no
per-request reading of the environment (proxies are read once).

Cancellation is the task's: the async executor cancels the tasks in flight
when the run is interrupted, and the ``CancelledError`` goes up untouched.

Imported by ``HttpNode.exec_async`` only: it imports aiohttp.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from typing import Any

import aiohttp
from yarl import URL

from plait.nodes.base import NodeError
from plait.nodes.http import (
    REDIRECT_STATUSES,
    BodyCap,
    PreparedRequest,
    could_not_connect,
    finish,
    first_hop,
    next_hop,
    reason,
    timed_out,
    tls_context,
)

_SESSION_KEY = "http.aiohttp"
_NO_CONTENT_TYPE = ("Content-Type",)
# What the request in this task is waiting for, for the timeout's message; the
# connector moves it on once it holds a connection.
_phase: contextvars.ContextVar[list[str]] = contextvars.ContextVar("plait_http_phase")
_CONNECTING = "while connecting"
_WAITING = "waiting for the response"
_READING = "while reading the response body"


class _Connector(aiohttp.TCPConnector):
    async def connect(self, *args: Any, **kwargs: Any) -> Any:
        conn = await super().connect(*args, **kwargs)
        phase = _phase.get(None)
        if phase is not None:
            phase[0] = _WAITING
        return conn


async def _open_session() -> aiohttp.ClientSession:
    connector = _Connector(
        # The batch's max_concurrent bounds what is in flight; a second limit
        # here (aiohttp's default is 100) would queue requests behind it.
        limit=0,
        enable_cleanup_closed=False,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None, sock_connect=None),
        auto_decompress=True,
        # aiohttp's trust_env reads ~/.netrc and the environment again for
        # every request, in a thread (a sixth of the CPU of a batch); the
        # proxies are read once instead (see _Proxies).
        trust_env=False,
        # httpx reads up to 100 KiB of response headers; aiohttp's default is 8 KiB a line
        max_line_size=64 * 1024,
        max_field_size=64 * 1024,
        max_headers=1024,
    )


class _Proxies:
    """HTTP_PROXY / HTTPS_PROXY / ALL_PROXY and NO_PROXY, read once per run (httpx honours them)."""

    def __init__(self) -> None:
        from urllib.request import getproxies_environment

        self.by_scheme = {
            k: v for k, v in getproxies_environment().items() if k in ("http", "https", "all", "no")
        }

    def for_url(self, url: str) -> str | None:
        if not self.by_scheme:
            return None
        import urllib.request
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        proxy = self.by_scheme.get(parts.scheme.lower()) or self.by_scheme.get("all")
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if proxy is None or bypass(parts.hostname or "", self.by_scheme):
            return None
        return proxy


class _Client:
    __slots__ = ("proxies", "session", "tls")

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.proxies = _Proxies()
        # The run's SSL context, loaded at the first https request (in a thread,
        # ~50 ms for the CA bundle): a run of plain http never loads it.
        self.tls: Any = None

    async def load_tls(self, services: Any) -> Any:
        if self.tls is None:
            self.tls = await asyncio.get_running_loop().run_in_executor(None, tls_context, services)
        return self.tls


def _is_https(url: str) -> bool:
    return url[:6].lower() == "https:"


async def _close_session(client: _Client) -> None:
    await client.session.close()


# The run's loop is the run's own, so the session found through it is the
# run's: a dict look-up per request instead of a trip through async_resource.
_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Client] = (
    weakref.WeakKeyDictionary()
)


async def session(req: PreparedRequest) -> _Client:
    loop = asyncio.get_running_loop()
    client = _by_loop.get(loop)
    if client is not None and not client.session.closed:
        return client

    async def make() -> _Client:
        return _Client(await _open_session())

    client = await req.services.async_resource(_SESSION_KEY, make, _close_session)
    _by_loop[loop] = client
    return client


async def send(req: PreparedRequest) -> dict[str, Any]:
    client = _by_loop.get(asyncio.get_running_loop())  # the common case without a coroutine
    if client is None or client.session.closed:
        client = await session(req)
    if client.tls is None and _is_https(req.url):
        await client.load_tls(req.services)  # before the request's deadline starts
    started = time.perf_counter()
    phase = [_CONNECTING]
    token = _phase.set(phase)
    try:
        async with asyncio.timeout(req.timeout):
            resp = await _send_following(client, req, phase)
            try:
                status = resp.status
                headers = _headers(resp)
                phase[0] = _READING
                data = await _read_body(resp, req, status, headers)
            except BaseException:
                resp.close()  # an unread or oversized body: the connection cannot be reused
                raise
            resp.release()
    except TimeoutError as exc:
        # asyncio.timeout's own (aiohttp's timeouts are off), or a
        # ServerTimeoutError, which is also a TimeoutError
        raise timed_out(req, phase[0]) from exc
    except aiohttp.ClientConnectorError as exc:
        raise could_not_connect(req, reason(exc.os_error)) from exc
    except (aiohttp.InvalidURL, ValueError) as exc:
        raise NodeError(f"{req.what}: invalid request: {reason(exc)}", retryable=False) from exc
    except aiohttp.ClientPayloadError as exc:
        text = reason(exc)
        if "decode" in text.lower() or "encoding" in text.lower():
            raise NodeError(
                f"{req.what}: could not decode the response body: {text}", retryable=False
            ) from exc
        raise NodeError(f"{req.what} failed: {text}", retryable=True) from exc
    except aiohttp.ClientError as exc:
        # ServerDisconnectedError, a bad status line and friends: the server
        # hung up or spoke something other than HTTP.
        raise NodeError(f"{req.what} failed: {_client_error(exc)}", retryable=True) from exc
    finally:
        _phase.reset(token)
    return finish(req, status, headers, data, time.perf_counter() - started)


async def _send_following(
    client: _Client, req: PreparedRequest, phase: list[str]
) -> aiohttp.ClientResponse:
    hop, hops = first_hop(req), 0
    while True:
        phase[0] = _CONNECTING
        resp = await client.session.request(
            hop.method,
            URL(hop.url),
            headers=hop.headers,
            data=hop.content,
            allow_redirects=False,
            proxy=client.proxies.for_url(hop.url),
            # True (aiohttp's default) is never used: a plain http request has no TLS
            ssl=(client.tls or await client.load_tls(req.services)) if _is_https(hop.url) else True,
            # a raw body without a Content-Type goes without one (aiohttp would
            # say application/octet-stream); asked per request, because
            # aiohttp's path for skipped headers costs every request otherwise
            skip_auto_headers=_NO_CONTENT_TYPE if hop.content is not None else None,
        )
        location = resp.headers.get("Location")
        if not (req.follow_redirects and resp.status in REDIRECT_STATUSES and location):
            return resp
        resp.close()
        hops += 1
        hop = next_hop(req, hop, resp.status, location, hops)


def _headers(resp: aiohttp.ClientResponse) -> dict[str, str]:
    """Names in lower case, repeated headers joined with ", " (as httpx's ``dict(headers)``)."""
    out: dict[str, str] = {}
    for name, value in resp.headers.items():
        low = name.lower()
        out[low] = f"{out[low]}, {value}" if low in out else value
    return out


async def _read_body(
    resp: aiohttp.ClientResponse, req: PreparedRequest, status: int, headers: dict[str, str]
) -> bytes:
    if req.method == "HEAD":
        return b""
    cap = BodyCap(req, status, headers)
    if cap.check_declared() is not None:
        return await resp.read()  # exactly Content-Length bytes, already checked
    chunks: list[bytes] = []
    async for chunk in resp.content.iter_any():
        cap.add(len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


def _client_error(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientResponseError) and exc.message:
        return str(exc.message)
    return reason(exc)
