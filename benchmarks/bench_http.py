"""How close a parallel batch of HTTP GETs comes to the ideal, through the real CLI.

    python benchmarks/bench_http.py [--repeat 3]

A local server answers every request after sleeping 100 ms, so N requests at
concurrency C cannot finish faster than N / C x 0.1 s (the ideal). Each case runs
``python -m plait run`` on a workflow with one parallel ``http`` batch; the time
compared with the ideal is the run's own ``duration_ms`` (interpreter start-up is
shown separately, as "process s"). The floor is the same requests made by a bare
ThreadPoolExecutor of httpx calls in a separate process: what any Python client
could do on this machine, with no engine at all.

The server (``_aioserver.py``, asyncio, keep-alive) runs in its own process, so
it shares no GIL with the clients and takes little CPU from them; ``--server
threads`` uses the tests' thread-per-connection server instead. Best of
``--repeat`` runs is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _aioserver import AioServer  # noqa: E402
from servers import LocalServer  # noqa: E402

DELAY = 0.1


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
        return f"{self.requests} GETs @ {self.concurrency}"


CASES = (Case(200, 50, 1.10), Case(200, 10, 1.05), Case(2000, 200, 1.20))

# The engine-free floor: a thread pool of httpx calls, nothing else. "shared" is the
# obvious version (one Client for every thread); "per-thread" gives each worker its
# own Client (one SSL context for all), which avoids contention on httpcore's pool
# lock at high concurrency. The better of the two is the floor.
FLOOR = """
import ssl, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import httpx
base, n, c, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
tls = ssl.create_default_context()
shared = httpx.Client(limits=limits, timeout=60, verify=tls)
local = threading.local()
clients = [shared]

def client():
    if mode == "shared":
        return shared
    if not hasattr(local, "client"):
        local.client = httpx.Client(timeout=60, verify=tls)
        clients.append(local.client)
    return local.client

def get(i):
    r = client().get(f"{base}/item/{i}")
    r.raise_for_status()
    return r.json()["n"]

start = time.perf_counter()
with ThreadPoolExecutor(max_workers=c) as pool:
    out = list(pool.map(get, range(n)))
elapsed = time.perf_counter() - start
for each in clients:
    each.close()
assert out == list(range(n))
print(elapsed)
"""


def child_env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def quiet_flag() -> list[str]:
    help_text = subprocess.run(
        [sys.executable, "-m", "plait", "run", "--help"],
        capture_output=True,
        text=True,
        env=child_env(),
    ).stdout
    return ["-q"] if "-q" in help_text else []


@dataclass
class PlaitRun:
    duration: float  # the run's own duration_ms, in seconds
    wall: float  # the whole command, interpreter start-up included
    connections: int  # TCP connections the server accepted
    error: str = ""


def run_plait(workdir: Path, server: Any, case: Case, quiet: list[str]) -> PlaitRun:
    workflow = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/item/${item}"},
                "batch": {
                    "items": list(range(case.requests)),
                    "parallel": True,
                    "max_concurrent": case.concurrency,
                },
            }
        ],
        "outputs": {"count": {"source": "${get.success_count}"}},
    }
    path = workdir / f"bench_{case.requests}_{case.concurrency}.json"
    path.write_text(json.dumps(workflow))
    cmd = [sys.executable, "-m", "plait", "run", str(path), f"base={server.base_url}"]
    server.reset()
    started = time.perf_counter()
    proc = subprocess.run(
        [*cmd, *quiet, "--output-format", "json"],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    wall = time.perf_counter() - started
    try:
        result = json.loads(proc.stdout)
        duration = result["duration_ms"] / 1000
    except (ValueError, KeyError, TypeError):
        return PlaitRun(wall, wall, server.connections, f"exit {proc.returncode}: no JSON result")
    error = ""
    if proc.returncode != 0:
        messages = [e.get("message", "") for e in result.get("errors") or []]
        error = f"exit {proc.returncode}: {'; '.join(messages)[:200]}"
    elif (result.get("outputs") or {}).get("count") != case.requests:
        error = f"expected {case.requests} successes, got {result.get('outputs')}"
    return PlaitRun(duration, wall, server.connections, error)


def run_floor(base: str, case: Case, mode: str) -> float:
    """Seconds for the engine-free version; inf when it failed (it can, when shared)."""
    proc = subprocess.run(
        [sys.executable, "-c", FLOOR, base, str(case.requests), str(case.concurrency), mode],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  (floor {mode} {case.name} failed: {last})", file=sys.stderr)
        return float("inf")
    return float(proc.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; best is kept")
    parser.add_argument("--server", choices=["asyncio", "threads"], default="asyncio")
    args = parser.parse_args()

    quiet = quiet_flag()
    rows = []
    failures = []
    with (
        (
            AioServer(DELAY)
            if args.server == "asyncio"
            else LocalServer(delay=DELAY, request_queue_size=4096)
        ) as server,
        tempfile.TemporaryDirectory(prefix="plait-bench-") as tmp,
    ):
        workdir = Path(tmp)
        run_plait(workdir, server, Case(20, 10, 0), quiet)  # warm the OS caches
        for case in CASES:
            runs = [run_plait(workdir, server, case, quiet) for _ in range(args.repeat)]
            shared = min(run_floor(server.base_url, case, "shared") for _ in range(args.repeat))
            per_thread = min(
                run_floor(server.base_url, case, "per-thread") for _ in range(args.repeat)
            )
            failures += [f"{case.name}: {r.error}" for r in runs if r.error]
            good = [r for r in runs if not r.error]
            floor = min(shared, per_thread)
            if good:
                best = min(good, key=lambda r: r.duration)
                ratio = best.duration / case.ideal
                plait_cells = [
                    f"{best.duration:.3f}",
                    f"{ratio:.3f}",
                    "yes" if ratio <= case.goal else "NO",
                    f"{best.duration / floor:.3f}",
                    f"{min(r.wall for r in good):.3f}",
                    str(max(r.connections for r in good)),
                ]
            else:
                plait_cells = ["FAILED", "-", "NO", "-", "-", "-"]
            rows.append(
                (
                    case.name,
                    plait_cells[0],
                    f"{case.ideal:.3f}",
                    plait_cells[1],
                    f"<= {case.goal:.2f}",
                    plait_cells[2],
                    f"{shared:.3f}",
                    f"{per_thread:.3f}",
                    plait_cells[3],
                    plait_cells[4],
                    plait_cells[5],
                )
            )

    header = (
        "measure",
        "wall s",
        "ideal s",
        "wall/ideal",
        "goal",
        "met",
        "floor shared s",
        "floor per-thread s",
        "plait/floor",
        "process s",
        "TCP conns",
    )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(
        f"http batch benchmark: server sleeps {DELAY * 1000:.0f} ms per request; "
        f"best of {args.repeat} runs"
    )
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    print(
        "\nwall s: the run's duration_ms (no interpreter start-up); process s: the whole "
        "`plait run` command.\nfloor: the same requests from a bare ThreadPoolExecutor of "
        "httpx calls, one Client shared by every thread\nor one Client per thread; "
        "plait/floor uses the better floor. TCP conns: connections the server accepted "
        "in one plait run."
    )
    if failures:
        print(f"\n{len(failures)} plait run(s) failed:")
        for line in failures:
            print(f"  {line}")


if __name__ == "__main__":
    main()
