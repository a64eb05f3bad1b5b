"""The run's connection to an MCP server, through the official ``mcp`` SDK.

One :class:`ServerHandle` per server per run (the per-run async resource
``mcp.session.<server>``, closed when the run ends). It holds one live session
at a time; every call of every node and item that names the server goes through
it, so a 200-item batch is served by one server process, its calls in flight
together up to the batch's ``max_concurrent``.

The SDK is built on anyio, whose task groups (the stdio transport's pipe
readers, the HTTP transport's streams) must be left by the task that entered
them. So each session is owned by one long-lived task on the run's event loop
(:class:`Session`): it opens the transport and the session, lists the tools
once, then waits until it is told to close and closes both itself. Calls are
made from the items' own tasks; a request and its response are matched by the
SDK's dispatcher, so they need no ownership.

When the transport fails (the server process died, the HTTP endpoint went
away) the calls in flight get "connection closed"; the handle retires that
session, opens a new one (once, however many calls noticed) and sends each of
those calls again, up to the server's ``reconnects`` (default 2) per call. The
handle counts the sessions it opened and the reconnects among them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, REQUEST_TIMEOUT, Implementation

from plait import __version__
from plait.errors import PlaitError
from plait.nodes.base import NodeError, Services
from plait.nodes.mcp.config import ServerConfig, find_server

# The SDK logs a server's garbled output or a broken pipe itself; with no handler
# configured, Python would print those on the progress display. Errors reach the
# user as item failures instead; an application that configures logging still
# gets the records through propagation.
logging.getLogger("mcp").addHandler(logging.NullHandler())

_CLOSE_TIMEOUT_S = 4.0
_STDERR_TAIL_BYTES = 1500
# What a dead or unreachable server looks like from here, besides MCPError(CONNECTION_CLOSED).
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    anyio.ClosedResourceError,
    anyio.BrokenResourceError,
    anyio.EndOfStream,
    ConnectionError,
    httpx2.TransportError,
)


class TransportFailed(Exception):
    """The session's transport is gone; a new session may do better."""


def _reason(exc: BaseException) -> str:
    """The message of the error that matters, out of anyio's exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    if isinstance(exc, MCPError):
        return exc.message
    if isinstance(exc, PlaitError):
        return exc.message + (f" ({exc.hint})" if exc.hint else "")
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code} from {exc.request.url}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _auth_headers(cfg: dict[str, Any]) -> dict[str, str]:
    """``headers`` plus pflow's ``auth`` ({type: bearer|api_key|basic}), values already expanded."""
    import base64

    headers = {str(k): str(v) for k, v in (cfg.get("headers") or {}).items()}
    auth = cfg.get("auth") or {}
    kind = auth.get("type")
    if kind == "bearer" and auth.get("token"):
        headers["Authorization"] = f"Bearer {auth['token']}"
    elif kind == "api_key" and auth.get("key"):
        headers[str(auth.get("header") or "X-API-Key")] = str(auth["key"])
    elif kind == "basic" and auth.get("username"):
        pair = f"{auth['username']}:{auth.get('password', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    for name, value in headers.items():
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} holds a line break or NUL; check the config's value for it")
    return headers


@contextlib.asynccontextmanager
async def open_client(server: ServerConfig, errlog: Any) -> AsyncIterator[Client]:
    """A connected, initialised SDK client for SERVER (stdio: its process is started)."""
    cfg = server.expanded()
    info = Implementation(name="plait", version=__version__)
    if server.transport == "stdio":
        env = cfg.get("env")
        params = StdioServerParameters(
            command=str(cfg["command"]),
            args=[str(a) for a in cfg.get("args") or []],
            env={str(k): str(v) for k, v in env.items()} if env else None,
            cwd=cfg.get("cwd") or None,
        )
        async with Client(stdio_client(params, errlog=errlog), client_info=info) as client:
            yield client
        return
    read_s = cfg.get("sse_timeout")
    timeout = httpx2.Timeout(30.0, read=float(read_s) if isinstance(read_s, int | float) else 300.0)
    async with (
        httpx2.AsyncClient(headers=_auth_headers(cfg), timeout=timeout) as http,
        Client(streamable_http_client(str(cfg["url"]), http_client=http), client_info=info) as client,
    ):
        yield client


class Session:
    """One session with the server, owned by one task on the run's loop."""

    def __init__(self, server: ServerConfig, number: int) -> None:
        self.server = server
        self.number = number
        self.client: Client | None = None
        self.alive = False
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._stderr = (
            tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed in close())
            if server.transport == "stdio"
            else None
        )

    async def start(self, timeout: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self._own(), name=f"plait-mcp-{self.server.name}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.close()
            raise NodeError(
                f"MCP server '{self.server.name}' did not answer its handshake within {timeout:g} s"
                + self.stderr_tail()
            )
        except asyncio.CancelledError:
            await self.close()
            raise
        except Exception as exc:
            tail = self.stderr_tail()
            await self.close()
            retryable = not isinstance(_leaf(exc), FileNotFoundError | PermissionError | PlaitError | ValueError)
            raise NodeError(
                f"cannot connect to MCP server '{self.server.name}' ({self._target()}): {_reason(exc)}{tail}",
                retryable=retryable,
            )

    def _target(self) -> str:
        raw = self.server.raw
        if self.server.transport == "stdio":
            return " ".join([str(raw.get("command", ""))] + [str(a) for a in raw.get("args") or []])
        return str(raw.get("url", ""))

    async def _own(self) -> None:
        try:
            async with open_client(self.server, self._stderr) as client:
                # Once per session: the SDK checks structured results against the
                # listed output schemas, and would otherwise list them per call.
                await client.list_tools()
                self.client = client
                self.alive = True
                self._ready.set_result(None)
                await self._stop.wait()
        except Exception as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
                self._ready.exception()  # retrieved: start() may have stopped waiting
        except BaseException:
            if not self._ready.done():
                self._ready.cancel()
            raise
        finally:
            self.alive = False

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> Any:
        client = self.client
        if client is None or not self.alive:
            raise TransportFailed("the session is closed")
        try:
            return await client.call_tool(tool, arguments, read_timeout_seconds=timeout)
        except MCPError as exc:
            # An HTTP server that restarted answers 404 for the old session id,
            # which the SDK spells as "Session terminated": a new session will do.
            if exc.code == CONNECTION_CLOSED or (exc.code == INVALID_REQUEST and exc.message == "Session terminated"):
                self.alive = False
                raise TransportFailed(exc.message) from None
            if exc.code == REQUEST_TIMEOUT:
                raise NodeError(
                    f"MCP tool '{tool}' of server '{self.server.name}' did not answer within {timeout:g} s"
                ) from None
            raise NodeError(
                f"MCP server '{self.server.name}' refused the call to '{tool}': {exc.message}", retryable=False
            ) from None
        except _TRANSPORT_ERRORS as exc:
            self.alive = False
            raise TransportFailed(_reason(exc)) from None
        except RuntimeError as exc:  # the SDK's check of structured content against the output schema
            raise NodeError(f"MCP tool '{tool}' of server '{self.server.name}': {exc}", retryable=False) from None

    async def list_tools(self, max_pages: int = 100) -> list[dict[str, Any]]:
        """Every tool the server lists, as plain data for the tool cache."""
        assert self.client is not None
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(max_pages):
            page = await self.client.list_tools(cursor=cursor, cache_mode="refresh")
            for tool in page.tools:
                tools.append(
                    {
                        "name": tool.name,
                        "title": getattr(tool, "title", None),
                        "description": tool.description,
                        "input_schema": tool.input_schema,
                        "output_schema": tool.output_schema,
                    }
                )
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    def server_info(self) -> dict[str, Any] | None:
        info = self.client.server_info if self.client is not None else None
        return {"name": info.name, "version": info.version} if info is not None else None

    def stderr_tail(self) -> str:
        """The end of what the server wrote to stderr, for an error message."""
        f = self._stderr
        if f is None or f.closed:
            return ""
        try:
            fd = f.fileno()
            size = os.fstat(fd).st_size
            start = max(0, size - _STDERR_TAIL_BYTES)
            # pread: the server writes through the same open file, so its offset must not move.
            text = os.pread(fd, size - start, start).decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [line for line in text.splitlines() if line.strip()][-6:]
        return ("\n  server stderr:\n    " + "\n    ".join(lines)) if lines else ""

    def stop(self) -> None:
        self.alive = False
        self._stop.set()

    async def close(self) -> None:
        self.stop()
        task = self._task
        if task is not None and not task.done():
            _, pending = await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT_S)
            if pending:
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        if self._stderr is not None:
            self._stderr.close()


class ServerHandle:
    """One server for one run: the live session, replaced when its transport fails."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        #: sessions opened in this run, and how many of them replaced a failed one
        self.sessions = 0
        self.reconnects = 0
        self._current: Session | None = None
        self._opening: asyncio.Future[Session] | None = None
        self._all: list[Session] = []

    async def _session(self) -> Session:
        current = self._current
        if current is not None and current.alive:
            return current
        if self._opening is None:
            # Every call that finds no session waits for this one attempt.
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, future: asyncio.Future[Session]) -> None:
        self._opening = None
        if not future.cancelled() and future.exception() is None:
            self._current = future.result()

    async def _open(self) -> Session:
        session = Session(self.server, self.sessions + 1)
        self._all.append(session)
        await session.start(self.server.timeout)
        self.sessions += 1
        if self.sessions > 1:
            self.reconnects += 1
        return session

    def _retire(self, session: Session) -> None:
        if self._current is session:
            self._current = None
        session.stop()  # its task closes the transport; the run's end waits for it

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        wait = timeout if timeout is not None else self.server.timeout
        failures = 0
        lost = ""
        while True:
            try:
                session = await self._session()
            except NodeError as exc:
                if not failures:
                    raise
                raise NodeError(
                    f"lost the connection to MCP server '{self.server.name}' while calling '{tool}' "
                    f"({lost}), and could not reconnect: {exc.message}",
                    retryable=exc.retryable,
                ) from None
            try:
                return await session.call(tool, arguments, wait)
            except TransportFailed as exc:
                failures += 1
                lost = str(exc)
                tail = session.stderr_tail()
                self._retire(session)
                if failures > self.server.reconnects:
                    raise NodeError(
                        f"lost the connection to MCP server '{self.server.name}' while calling '{tool}' "
                        f"{failures} time{'s' if failures > 1 else ''} (the run reconnected "
                        f"{self.reconnects} time{'s' if self.reconnects != 1 else ''}): {exc}{tail}",
                        retryable=False,
                    ) from None

    async def aclose(self) -> None:
        sessions, self._all = self._all, []
        self._current = None
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def server_handle(services: Services, name: str) -> ServerHandle:
    """The run's handle on server NAME, made (from its config) on first use."""

    def make() -> ServerHandle:
        try:
            server = find_server(name)
            server.check()
        except PlaitError as exc:
            raise NodeError(exc.message + (f" ({exc.hint})" if exc.hint else ""), retryable=False) from None
        return ServerHandle(server)

    return await services.async_resource(f"mcp.session.{name}", make, ServerHandle.aclose)
