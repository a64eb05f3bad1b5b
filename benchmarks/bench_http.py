"""How close a parallel batch of HTTP GETs comes to the ideal, through the real CLI,
on both of the http node's paths, beside a bare aiohttp loop.

    python benchmarks/bench_http.py [--repeat 3] [--cases 200x50,2000x200,10000x500]

A local server (``_aioserver.py``: asyncio, keep-alive, in its own process)
answers every request after sleeping 100 ms, so N requests at concurrency C
cannot finish faster than N / C x 0.1 s (the ideal). Each case runs ``python -m
plait run`` on a workflow with one parallel ``http`` batch, once with
``--executor async`` (aiohttp on the run's event loop) and once with
``--executor threads`` (httpx, a thread per slot). The time compared with the
ideal is the run's own ``duration_ms`` (interpreter start-up excluded); the
whole command's wall time (start-up and imports included) is shown beside it,
and the floor's process likewise (``python -c`` with ``import aiohttp``).

The floor is the same requests from a bare aiohttp loop in a separate process
(one session, a semaphore of C, nothing else): what any Python client could do
on this machine, with no engine at all.

A third row drives the http node's async path alone (prep, exec_async, post
on the run's loop, no batch driver, events or records), to show which part of
plait's cost is the node's and which the engine's.

CPU per request is the plait process's user+system time (``getrusage`` of the
finished child), minus that of the same workflow with one item (start-up,
imports, the session), divided by the other N-1 requests; the floor's is its
``process_time()`` around the requests. The server's CPU is not counted.

The machine may be shared: ``--repeat`` interleaves rounds and reports the best
run and the spread (best-worst) of each figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _aioserver import AioServer  # noqa: E402

DELAY = 0.1
PATHS = ("async", "threads")
LABELS = {"node": "node, no engine", "floor": "bare aiohttp"}


@dataclass(frozen=True)
class Case:
    requests: int
    concurrency: int
    goal: float

    @property
    def ideal(self) -> float:
        return self.requests / self.concurrency * DELAY

    @property
    def name(self) -> str:
        return f"{self.requests:,} GETs @ {self.concurrency}"


GOALS = {(200, 50): 1.10, (2000, 200): 1.20, (10000, 500): 2.0}
CPU_GOAL_MS = 0.4

FLOOR = """
import asyncio, sys, time
t_import = time.perf_counter()
import aiohttp
t_import = time.perf_counter() - t_import
base, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        limit = asyncio.Semaphore(c)

        async def get(i):
            async with limit:
                async with session.get(f"{base}/item/{i}") as r:
                    r.raise_for_status()
                    return (await r.json())["n"]

        t0, c0 = time.perf_counter(), time.process_time()
        out = await asyncio.gather(*(get(i) for i in range(n)))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert out == list(range(n))
    print(elapsed, cpu, t_import)

asyncio.run(main())
"""


# The http node's async path with no engine around it: prep and exec_async for
# every request on the run's loop, as the async executor calls them, without the
# batch driver, events, records or templates. It shows where CPU goes.
NODE_ONLY = """
import asyncio, sys, time
from plait.nodes.base import ItemContext
from plait.nodes.http import HttpNode
from plait.nodes.registry import Registry
from plait.runtime.services import RunServices
base, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
services = RunServices(Registry())
node = HttpNode("get")
defaults = {p.name: p.default for p in HttpNode.param_specs}

async def one(i, limit):
    async with limit:
        ctx = ItemContext("get", i, {**defaults, "url": f"{base}/item/{i}"}, services)
        prep = node.prep(ctx)
        out = await node.exec_async(prep)
        node.post(ctx, prep, out)
        return ctx.outputs["response"]["n"]

async def main():
    limit = asyncio.Semaphore(c)
    await one(0, limit)  # imports, the session
    t0, c0 = time.perf_counter(), time.process_time()
    out = await asyncio.gather(*(one(i, limit) for i in range(n)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert out == list(range(n))
    return elapsed, cpu

elapsed, cpu = services.call_async(main())
services.close()
print(elapsed, cpu, 0.0)
"""


def child_env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    duration: float  # seconds: the run's own duration_ms, or the floor's loop
    cpu: float  # seconds of CPU of the whole process (plait) or of the loop (floor)
    wall: float = 0.0  # the whole command
    connections: int = 0
    error: str = ""
    import_s: float = 0.0  # the floor's `import aiohttp`, which its run time leaves out


def write_workflow(workdir: Path, requests: int, concurrency: int) -> Path:
    workflow = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/item/${item}"},
                "batch": {
                    "items": list(range(requests)),
                    "parallel": True,
                    "max_concurrent": concurrency,
                },
            }
        ],
        "outputs": {"count": {"source": "${get.success_count}"}},
    }
    path = workdir / f"bench_{requests}_{concurrency}.json"
    path.write_text(json.dumps(workflow))
    return path


def run_plait(path: Path, server: AioServer, requests: int, executor: str) -> Run:
    cmd = [sys.executable, "-m", "plait", "run", str(path), f"base={server.base_url}"]
    server.reset()
    cpu0 = children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "-q", "--executor", executor, "--output-format", "json"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    wall = time.perf_counter() - started
    cpu = children_cpu() - cpu0
    try:
        result = json.loads(proc.stdout)
        duration = result["duration_ms"] / 1000
    except (ValueError, KeyError, TypeError):
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return Run(wall, cpu, wall, 0, f"exit {proc.returncode}: no JSON result ({tail})")
    error = ""
    if proc.returncode != 0:
        messages = [e.get("message", "") for e in result.get("errors") or []]
        error = f"exit {proc.returncode}: {'; '.join(messages)[:200]}"
    elif (result.get("outputs") or {}).get("count") != requests:
        error = f"expected {requests} successes, got {result.get('outputs')}"
    return Run(duration, cpu, wall, server.connections, error)


def run_floor(base: str, case: Case, script: str = FLOOR) -> Run:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", script, base, str(case.requests), str(case.concurrency)],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return Run(float("inf"), float("inf"), error=f"floor failed: {last}")
    elapsed, cpu, import_s = (float(x) for x in proc.stdout.split())
    return Run(elapsed, cpu, wall, import_s=import_s)


def parse_cases(text: str) -> list[Case]:
    cases = []
    for part in text.split(","):
        n, _, c = part.strip().partition("x")
        key = (int(n), int(c))
        cases.append(Case(key[0], key[1], GOALS.get(key, 0.0)))
    return cases


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    if len(values) < 2:
        return fmt.format(values[0]) if values else "-"
    return f"{fmt.format(min(values))}-{fmt.format(max(values))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="rounds; best and spread are shown")
    parser.add_argument("--cases", default="200x50,2000x200,10000x500")
    args = parser.parse_args()
    cases = parse_cases(args.cases)

    runs: dict[tuple[Case, str], list[Run]] = {
        (c, p): [] for c in cases for p in (*PATHS, "node", "floor")
    }
    base_cpu: dict[str, list[float]] = {p: [] for p in PATHS}
    failures: list[str] = []
    with AioServer(DELAY) as server, tempfile.TemporaryDirectory(prefix="plait-bench-") as tmp:
        workdir = Path(tmp)
        one = write_workflow(workdir, 1, 1)
        paths = {c: write_workflow(workdir, c.requests, c.concurrency) for c in cases}
        for executor in PATHS:
            run_plait(one, server, 1, executor)  # warm the OS caches and the .pyc files
        for _ in range(args.repeat):
            for executor in PATHS:
                base_cpu[executor].append(run_plait(one, server, 1, executor).cpu)
            for case in cases:
                for executor in PATHS:
                    run = run_plait(paths[case], server, case.requests, executor)
                    runs[(case, executor)].append(run)
                    if run.error:
                        failures.append(f"{case.name} {executor}: {run.error}")
                for kind, script in (("node", NODE_ONLY), ("floor", FLOOR)):
                    floor = run_floor(server.base_url, case, script)
                    runs[(case, kind)].append(floor)
                    if floor.error:
                        failures.append(f"{case.name} {kind}: {floor.error}")

    header = (
        "measure",
        "path",
        "run s",
        "ideal s",
        "run/ideal",
        "spread",
        "goal",
        "met",
        "plait/floor",
        "CPU ms/req",
        "spread",
        "TCP conns",
        "floor+import/ideal",
        "process s",
        "process/ideal",
    )
    rows: list[tuple[str, ...]] = []
    for case in cases:
        floor_runs = [r for r in runs[(case, "floor")] if not r.error]
        floor_best = min((r.duration for r in floor_runs), default=float("inf"))
        for path in (*PATHS, "node", "floor"):
            good = [r for r in runs[(case, path)] if not r.error]
            if not good:
                rows.append((case.name, path, "FAILED", *["-"] * (len(header) - 3)))
                continue
            ratios = [r.duration / case.ideal for r in good]
            if path in ("node", "floor"):
                cpu_ms = [r.cpu / case.requests * 1000 for r in good]
            else:
                start = min(base_cpu[path])
                cpu_ms = [
                    max(0.0, r.cpu - start) / max(1, case.requests - 1) * 1000 for r in good
                ]
            best = min(ratios)
            is_plait = path in PATHS
            rows.append(
                (
                    case.name,
                    LABELS.get(path, f"plait {path}"),
                    f"{min(r.duration for r in good):.3f}",
                    f"{case.ideal:.3f}",
                    f"{best:.3f}",
                    spread(ratios),
                    f"<= {case.goal:.2f}" if is_plait and case.goal else "",
                    ("yes" if best <= case.goal else "NO") if is_plait and case.goal else "",
                    f"{min(r.duration for r in good) / floor_best:.3f}" if path != "floor" else "",
                    f"{min(cpu_ms):.3f}",
                    spread(cpu_ms),
                    str(max(r.connections for r in good)) if is_plait else "",
                    f"{min((r.duration + r.import_s) / case.ideal for r in good):.3f}"
                    if path == "floor"
                    else "",
                    f"{min(r.wall for r in good):.3f}",
                    f"{min(r.wall for r in good) / case.ideal:.3f}",
                )
            )

    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(
        f"http batch benchmark: server sleeps {DELAY * 1000:.0f} ms per request; "
        f"best of {args.repeat} rounds, spread = best-worst; {os.cpu_count()} cores"
    )
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        "\nrun s: the run's duration_ms (no interpreter start-up) or the floor's loop. "
        f"CPU ms/req: goal <= {CPU_GOAL_MS} for plait async;\nplait's is the process's "
        "CPU beyond a one-item run of the same workflow, per request. plait/floor: best "
        "against best.\nTCP conns: connections the server accepted in one plait run. "
        "floor+import: the floor with its `import aiohttp`,\nwhich plait's run time "
        "includes when the run starts before the import ends. process s: the whole command, "
        "interpreter start-up\nand imports included (the floor's: python -c with `import "
        "aiohttp`; the node row imports plait too)."
    )
    if failures:
        print(f"\n{len(failures)} run(s) failed:")
        for line in failures:
            print(f"  {line}")


if __name__ == "__main__":
    main()
