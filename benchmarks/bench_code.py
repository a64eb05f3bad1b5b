"""The ``code`` node's own per-item cost (issue 12.7).

Run: python benchmarks/bench_code.py [--quick] [--n N] [--repeat R]

End to end through ``plait.run`` (in this process, so interpreter start-up is
not in it): per item = (wall of a batch of N items - wall of the same
workflow with 0 items) / N, the best of R rounds in which the cases take
turns. Beside it, measured in the same run:

- the floor: a bare loop of ``exec(compiled, namespace)`` over the same items;
- the engine's own cost: the same batch with the ``echo`` node, which does
  nothing, so ``code - echo`` is what the code node adds;
- the same work with a call in it (``int(x) * 2``), which runs on a worker
  thread: ``x * 2`` is straight-line code and runs in the item's own thread.

A second table times the pieces of one item's trip one by one, each in a
loop of its own, so the sum is only a rough guide to the whole (the
hand-offs depend on how the OS schedules the two threads).
"""

from __future__ import annotations

import argparse
import builtins
import contextvars
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import ROOT, table

sys.path.insert(0, str(ROOT / "src"))

import plait
from plait.nodes import _code_worker as worker

SOURCE = "result = x * 2"
# The same work with a call in it: code that calls runs on a worker thread
# (straight-line code like SOURCE runs in the item's own thread).
WORKER_SOURCE = "result = int(x) * 2"
GOAL_US = 30.0
# The code node before issue 12.7 (a thread per item), run as a custom node type
# beside today's, when the git history is at hand.
BEFORE_COMMIT = "c7db088"


def before_node_file(tmp: str) -> str | None:
    """The code node as it was, renamed `code_before`, written to a file; None without git."""
    import subprocess

    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{BEFORE_COMMIT}:src/plait/nodes/code.py"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = os.path.join(tmp, "code_before.py")
    with open(path, "w") as f:
        f.write(source.replace('type_name = "code"', 'type_name = "code_before"'))
    return path


def batch(node_type: str, n: int, parallel: int = 0, source: str = SOURCE) -> dict[str, Any]:
    if node_type.startswith("code"):
        params: dict[str, Any] = {"code": source, "inputs": {"x": "${item}"}}
    else:
        params = {"value": "${item}"}
    node: dict[str, Any] = {"id": "n", "type": node_type, "params": params, "batch": {"items": list(range(n))}}
    if parallel:
        node["batch"].update(parallel=True, max_concurrent=parallel)
    return {"nodes": [node], "outputs": {"count": {"source": "${n.count}"}}}


NODES: list[str] = []  # custom node files for plait.run


def wall(raw: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    result = plait.run(raw, nodes=NODES)
    elapsed = time.perf_counter() - t0
    if not result.ok:
        raise SystemExit(f"benchmark workflow failed: {result}")
    return elapsed


def per_item_us(cases: dict[str, tuple[str, int, str]], n: int, repeat: int) -> dict[str, float]:
    """Per-item µs of each case (node type, parallel slots, source). The cases take turns,
    round after round, so a busy moment of the machine hits them all alike."""
    full = {name: batch(t, n, par, src) for name, (t, par, src) in cases.items()}
    empty = {name: batch(t, 0, par, src) for name, (t, par, src) in cases.items()}
    for raw in full.values():
        wall(raw)  # warm: imports, the first worker
    best_full = dict.fromkeys(cases, float("inf"))
    best_empty = dict.fromkeys(cases, float("inf"))
    for _ in range(repeat):
        for name in cases:
            best_full[name] = min(best_full[name], wall(full[name]))
            best_empty[name] = min(best_empty[name], wall(empty[name]))
    return {name: (best_full[name] - best_empty[name]) / n * 1e6 for name in cases}


def loop_us(n: int, fn: Callable[[int], Any], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def exec_floor_us(n: int) -> float:
    compiled = compile(SOURCE, "<floor>", "exec")
    return loop_us(n, lambda i: exec(compiled, {"__builtins__": builtins, "__name__": "__main__", "x": i}))


def pieces(n: int) -> list[tuple[str, float]]:
    compiled = compile(SOURCE, "<pieces>", "exec")
    out: list[tuple[str, float]] = []

    def thread_per_item(i: int) -> None:  # what every item paid before
        t = threading.Thread(target=exec, args=(compiled, {"x": i}), daemon=True)
        t.start()
        t.join()

    out.append(("a fresh thread per item, start + join (the old design)", loop_us(max(n // 10, 200), thread_per_item, 3)))

    go, done = threading.Lock(), threading.Lock()
    go.acquire()
    done.acquire()
    box: list[dict[str, Any] | None] = [None]

    def lock_worker() -> None:
        while True:
            go.acquire()
            ns = box[0]
            if ns is None:
                return
            exec(compiled, ns)
            done.release()

    t = threading.Thread(target=lock_worker, daemon=True)
    t.start()

    def lock_handoff(i: int) -> None:
        box[0] = {"x": i}
        go.release()
        done.acquire(True, 1.0)

    out.append(("hand-off to a worker: a lock each way", loop_us(n, lock_handoff)))
    box[0] = None
    go.release()
    t.join()

    pool = worker.WorkerPool()
    cancel = threading.Event()
    out.append((
        "hand-off as used: pool.run (pipe in, lock back, with the pieces below)",
        loop_us(n, lambda i: pool.run(worker.Task(compiled, {"x": i}), 30.0, cancel)),
    ))
    pool.close()

    def router(i: int) -> None:
        worker.router.enter()
        worker.router.leave()

    out.append(("stdout/stderr router, installed and removed", loop_us(n, router)))
    out.append(("a fresh contextvars.Context for the exec", loop_us(n, lambda i: contextvars.Context().run(int))))
    fd = os.open(".", getattr(os, "O_PATH", os.O_RDONLY))
    out.append(("working directory put back (fchdir)", loop_us(n, lambda i: os.fchdir(fd))))
    os.close(fd)
    out.append(("the Task and reading its (empty) output", loop_us(n, lambda i: worker.Task(compiled, {}).text())))
    out.append(("exec of the compiled code itself", exec_floor_us(n)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, help="items per batch")
    parser.add_argument("--repeat", type=int, help="rounds; the best one counts")
    args = parser.parse_args()
    # Many short rounds rather than a few long ones: a two-thread hand-off is at
    # the mercy of the scheduler, and on a busy machine only short rounds
    # find its quiet moments.
    n = args.n or (1_000 if args.quick else 3_000)
    repeat = args.repeat or (5 if args.quick else 15)

    floor = exec_floor_us(n)
    cases = {
        "echo": ("echo", 0, SOURCE),
        "code": ("code", 0, SOURCE),
        "worker": ("code", 0, WORKER_SOURCE),
        "echo_par": ("echo", 8, SOURCE),
        "code_par": ("code", 8, SOURCE),
        "worker_par": ("code", 8, WORKER_SOURCE),
    }
    with tempfile.TemporaryDirectory() as tmp:
        before_file = before_node_file(tmp)
        if before_file is not None:
            NODES.append(before_file)
            cases["before"] = ("code_before", 0, SOURCE)
        us = per_item_us(cases, n, repeat)
    echo, code, echo_par, code_par = us["echo"], us["code"], us["echo_par"], us["code_par"]
    before = us.get("before")

    def row(what: str, us: float, goal: str = "", met: str = "") -> list[str]:
        return [what, f"{us:.1f} µs", f"{us / floor:.0f}x", f"{us / echo:.2f}x", goal, met]

    table(
        f"code node `{SOURCE}`, per item, through plait.run ({n:,} items, best of {repeat})",
        ["measure", "per item", "÷ exec floor", "÷ echo", "goal", "met"],
        [
            ["floor: bare exec(compiled, namespace) loop", f"{floor:.2f} µs", "1x", "", "", ""],
            row("engine: echo node, sequential", echo),
            row("code node, sequential", code, f"≤ {GOAL_US:.0f} µs", "yes" if code <= GOAL_US else "NO"),
            row("  of which the code node's own (code - echo)", code - echo),
            row(f"code node `{WORKER_SOURCE}` (a call: on a worker), sequential", us["worker"]),
            *(
                [row(f"code node before ({BEFORE_COMMIT}: a thread per item), sequential", before)]
                if before is not None
                else []
            ),
            row("engine: echo node, parallel (8 threads)", echo_par),
            row("code node, parallel (8 threads)", code_par),
            row("  of which the code node's own (code - echo)", code_par - echo_par),
            row(f"code node `{WORKER_SOURCE}` (on a worker), parallel (8 threads)", us["worker_par"]),
        ],
    )
    print("issue 12.7: ~209 µs sequential before, on the machine it was measured on; pflow: ~1,190 µs")

    table(
        "The pieces of one item, each timed alone",
        ["piece", "per item"],
        [[what, f"{us:.2f} µs"] for what, us in pieces(n)],
    )
    print(f"cpus: {os.cpu_count()}; load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
