"""A light HTTP/1.1 keep-alive server for the HTTP benchmark, on asyncio.

Every GET /item/N answers {"n": N} after sleeping DELAY seconds. A thread per
connection (http.server) costs several times more CPU per request, and on a
2-core machine the server's CPU is taken from the client being measured; this
server keeps its share small. GET /__stats returns the TCP connections
accepted since the last GET /__reset (not counting its own).

Run: python _aioserver.py DELAY  → prints the port, then serves until killed.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from typing import Any

STATE = {"connections": 0}


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    STATE["connections"] += 1
    counted = True
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, rest = head.partition(b"\r\n")
            _method, path, _ = request_line.decode("latin-1").split(" ", 2)
            length = 0
            for line in rest.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            if path == "/__stats":
                if counted:
                    STATE["connections"] -= 1
                    counted = False
                body = json.dumps(STATE).encode()
            elif path == "/__reset":
                STATE["connections"] = 0
                counted = False
                body = b"{}"
            elif path.startswith("/item/"):
                await asyncio.sleep(delay)
                body = json.dumps({"n": int(path.rsplit("/", 1)[1])}).encode()
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(delay: float) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, delay), "127.0.0.1", 0, backlog=4096
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class AioServer:
    """Runs the server in a child process; a context manager."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> AioServer:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(self.delay)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.base_url = f"http://127.0.0.1:{self.proc.stdout.readline().strip()}"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=5) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        self._get("/__reset")

    @property
    def connections(self) -> int:
        return int(self._get("/__stats")["connections"])


if __name__ == "__main__":
    asyncio.run(serve(float(sys.argv[1])))
