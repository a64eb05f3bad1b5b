"""A real MCP server for the tests, built on the official SDK's server API.

Run it as ``python tests/mcp_server.py`` (stdio, what a ``command`` server in
``mcp-servers.json`` starts) or ``python tests/mcp_server.py --http PORTFILE``
(streamable HTTP on 127.0.0.1, on a free port written to PORTFILE).

Every call appends this process's pid to ``$MCP_TEST_PIDS`` (when set), so a
test can count how many server processes served a batch. The process stops by
itself: on stdin EOF (stdio), and in any case after ``$MCP_TEST_LIFETIME``
seconds (default 120), so a test that dies never leaves it behind.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import Literal, TypedDict

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, TextContent

server = MCPServer("plait-test")

_in_flight = 0
_arrived = 0
_gate: anyio.Event | None = None


def _note_call() -> None:
    pids = os.environ.get("MCP_TEST_PIDS")
    if pids:
        # One short O_APPEND write per call: lines from parallel calls never interleave.
        fd = os.open(pids, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{os.getpid()}\n".encode())
        finally:
            os.close(fd)


class Echoed(TypedDict):
    text: str
    times: int
    shout: str


@server.tool()
def echo(text: str, times: int = 1, style: Literal["plain", "upper"] = "plain") -> Echoed:
    """Repeat a text; structured output."""
    _note_call()
    said = text * times
    return {"text": text, "times": times, "shout": said.upper() if style == "upper" else said}


@server.tool()
def add(a: int, b: int) -> int:
    """A + B; a plain return value, which the SDK wraps as {"result": ...}."""
    _note_call()
    return a + b


@server.tool()
def fail(message: str) -> str:
    """Always fails, as a tool error (isError) carrying MESSAGE."""
    _note_call()
    raise ToolError(message)


@server.tool(structured_output=False)
def as_text(value: str) -> str:
    """Answers with text content only: a JSON object holding VALUE."""
    _note_call()
    return '{"value": "' + value + '", "kind": "text"}'


@server.tool(structured_output=False)
def mixed(caption: str) -> list[TextContent | ImageContent]:
    """Answers with two content blocks: plain text, then a tiny image."""
    _note_call()
    return [
        TextContent(type="text", text=caption),
        ImageContent(type="image", data="aGk=", mime_type="image/png"),
    ]


class Seen(TypedDict):
    sent: list[str]
    nulls: list[str]
    header: str


@server.tool()
def seen(ctx: Context, maybe: str | None = None, count: int = 0, note: str = "") -> Seen:
    """Which arguments the call carried, which of them were null, and its X-Test header."""
    _note_call()
    params = ctx.request_context.params or {}
    args = params.get("arguments") or {}
    headers = ctx.headers or {}
    return {
        "sent": sorted(args),
        "nulls": sorted(k for k, v in args.items() if v is None),
        "header": headers.get("x-test", ""),
    }


class Rendezvous(TypedDict):
    tag: str
    peers: int


@server.tool()
async def rendezvous(tag: str, peers: int) -> Rendezvous:
    """Waits until PEERS calls are in flight at once in this process (10 s at most).

    Succeeds only when the client really multiplexes calls on one session.
    """
    global _arrived, _gate, _in_flight
    _note_call()
    _in_flight += 1
    _arrived += 1
    if _gate is None:
        _gate = anyio.Event()
    gate = _gate
    if _arrived >= peers:
        gate.set()
    try:
        with anyio.move_on_after(10) as scope:
            await gate.wait()
        if scope.cancelled_caught:
            raise ToolError(f"only {_in_flight} of {peers} calls were in flight together")
        return {"tag": tag, "peers": peers}
    finally:
        _in_flight -= 1


@server.tool()
async def slow(seconds: float, tag: str = "") -> Rendezvous:
    """Sleeps SECONDS, then answers."""
    _note_call()
    await anyio.sleep(seconds)
    return {"tag": tag, "peers": 0}


@server.tool()
def crash(marker: str) -> Echoed:
    """Kills this server process the first time MARKER (a file path) is seen, then succeeds."""
    _note_call()
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(3)
    return {"text": "survived", "times": 1, "shout": "SURVIVED"}


def _watchdog() -> None:
    lifetime = float(os.environ.get("MCP_TEST_LIFETIME", "120"))
    timer = threading.Timer(lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()


def _serve_http(port_file: str) -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # before the port is published: a client may connect at once
    app = server.streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    tmp = Path(port_file + ".tmp")
    tmp.write_text(str(sock.getsockname()[1]))
    tmp.replace(port_file)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    _watchdog()
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        _serve_http(sys.argv[2])
    else:
        server.run()
        # The interpreter's own teardown would take a second or two more; the
        # client's shutdown waits for the process, so end it now.
        sys.stdout.flush()
        os._exit(0)
