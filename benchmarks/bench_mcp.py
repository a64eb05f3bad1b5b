"""MCP tool node benchmark: a 200-item batch against a local stdio MCP server.

Run: python benchmarks/bench_mcp.py [--quick]

The server is tests/mcp_server.py (the official SDK's server API); each call
appends the server's pid to a file, so the table also says how many server
processes a run used. Measured in the same run:

* plait: `plait run` of a 200-item batch of `mcp-bench-echo` (parallel,
  max_concurrent 20, and sequential), through the real CLI; the batch's own
  duration (from the JSON result) and the whole command's wall time.
* floor: the SDK alone in one process: one session, the same 200 calls, 20 in
  flight (the calls only, then with start-up and handshake).
* one process per call, as pflow's MCP node does it: a few calls each with its own
  server process and session, extrapolated to 200.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, env, plait_cmd, table

QUICK = "--quick" in sys.argv
N = 200
CONCURRENCY = 20
SERVER = ROOT / "tests" / "mcp_server.py"


def _plait(home: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    e = env()
    e["PLAIT_HOME"] = str(home)
    t0 = time.perf_counter()
    proc = subprocess.run([*plait_cmd(), *args], capture_output=True, text=True, env=e, cwd=home)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"plait {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc


def plait_batch(home: Path, pids: Path, parallel: bool) -> tuple[float, float, int]:
    wf = home / f"wf-{parallel}.json"
    batch = {"items": list(range(N)), "parallel": parallel, "max_concurrent": CONCURRENCY}
    wf.write_text(
        json.dumps(
            {
                "nodes": [
                    {"id": "warm", "type": "mcp-bench-echo", "params": {"text": "first"}},
                    {"id": "many", "type": "mcp-bench-echo", "params": {"text": "n${item}"}, "batch": batch},
                ],
                "outputs": {"n": {"source": "${many.success_count}"}},
            }
        )
    )
    pids.unlink(missing_ok=True)
    wall, proc = _plait(home, "run", str(wf), "-q", "-o", "json")
    result = json.loads(proc.stdout)
    assert result["outputs"] == {"n": N}, result
    processes = len(set(pids.read_text().split()))
    return result["nodes"]["many"]["duration_ms"] / 1000, wall, processes


def _params() -> object:
    from mcp import StdioServerParameters

    return StdioServerParameters(command=sys.executable, args=[str(SERVER)])


async def sdk_floor() -> tuple[float, float]:
    from mcp import Client
    from mcp.client.stdio import stdio_client

    t0 = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        async with Client(stdio_client(_params(), errlog=quiet)) as client:  # type: ignore[arg-type]
            await client.list_tools()
            await client.call_tool("echo", {"text": "first"})
            started = time.perf_counter()
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(i: int) -> None:
                async with gate:
                    await client.call_tool("echo", {"text": f"n{i}"})

            await asyncio.gather(*(one(i) for i in range(N)))
            calls = time.perf_counter() - started
    return calls, time.perf_counter() - t0


async def process_per_call(k: int) -> float:
    from mcp import Client
    from mcp.client.stdio import stdio_client

    t0 = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        for i in range(k):
            async with Client(stdio_client(_params(), errlog=quiet)) as client:  # type: ignore[arg-type]
                await client.call_tool("echo", {"text": f"n{i}"})
    return (time.perf_counter() - t0) / k


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pids = home / "pids"
        config = {"command": sys.executable, "args": [str(SERVER)], "env": {"MCP_TEST_PIDS": str(pids)}}
        (home / "mcp-servers.json").write_text(json.dumps({"mcpServers": {"bench": config}}))
        _plait(home, "mcp", "sync")
        repeat = 1 if QUICK else 3
        par = min((plait_batch(home, pids, True) for _ in range(repeat)), key=lambda r: r[0])
        seq = min((plait_batch(home, pids, False) for _ in range(repeat)), key=lambda r: r[0])
    floor_calls, floor_total = min((asyncio.run(sdk_floor()) for _ in range(repeat)), key=lambda r: r[0])
    per_call = asyncio.run(process_per_call(2 if QUICK else 3))

    def row(name: str, batch_s: float, wall: str, processes: str) -> list[str]:
        return [name, f"{batch_s:.2f} s", f"{batch_s / N * 1e3:.2f} ms", f"{batch_s / floor_calls:.1f}x", wall, processes]

    table(
        f"MCP: {N} echo calls to one local stdio server ({CONCURRENCY} in flight when parallel)",
        ["run", "batch", "per call", "vs floor", "whole command", "server processes"],
        [
            row("plait, parallel batch", par[0], f"{par[1]:.2f} s", str(par[2])),
            row("plait, sequential batch", seq[0], f"{seq[1]:.2f} s", str(seq[2])),
            row("floor: SDK, one session", floor_calls, f"{floor_total:.2f} s (with start-up)", "1"),
            row("a process per call (pflow's way), est.", per_call * N, f"{per_call:.2f} s per call", str(N)),
        ],
    )


if __name__ == "__main__":
    main()
