"""Concurrent branches benchmark (issue 13, point 3).

Run: python benchmarks/bench_branches.py [--quick]

A fan-out of independent `sleep S` shell branches between a start node and a
join, through the real CLI. "run" is the run's own duration as `-o json`
reports it (start-up left out); "wall" is the whole command. The floor is the
same work done bare in this process, measured in the same run: one thread per
branch, at most max_parallel_nodes at a time, each running
``subprocess.run(["sleep", S])``. Ideal = S * ceil(branches / limit).
Best of 3 for each figure.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _common import run_workflow, table

QUICK = "--quick" in sys.argv
SLEEP = 0.3 if QUICK else 1.0
REPEAT = 3


def fan_out(branches: int, seconds: float) -> dict[str, Any]:
    ids = [f"b{k}" for k in range(branches)]
    return {
        "nodes": [
            {"id": "start", "type": "echo", "params": {"go": True}},
            *({"id": b, "type": "shell", "params": {"command": f"sleep {seconds}"}} for b in ids),
            {"id": "join", "type": "echo", "params": {"done": True}},
        ],
        "edges": [{"from": "start", "to": b} for b in ids] + [{"from": b, "to": "join"} for b in ids],
    }


def plait_run(branches: int, limit: int) -> tuple[float, float]:
    """(run seconds as reported, wall seconds), best of REPEAT."""
    runs, walls = [], []
    for _ in range(REPEAT):
        wall, out = run_workflow(fan_out(branches, SLEEP), "--max-parallel-nodes", str(limit))
        assert out["status"] == "success", out
        runs.append(out["duration_ms"] / 1000.0)
        walls.append(wall)
    return min(runs), min(walls)


def floor(branches: int, limit: int) -> float:
    """The bare floor: threads running the same sleeps, ``limit`` at a time."""
    best = math.inf
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=limit) as pool:
            list(pool.map(lambda _: subprocess.run(["sleep", str(SLEEP)], check=True), range(branches)))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    cases = [(2, 4), (2, 1), (8, 4), (8, 8)]
    rows = []
    for branches, limit in cases:
        run_s, wall_s = plait_run(branches, limit)
        floor_s = floor(branches, min(limit, branches))
        ideal = SLEEP * math.ceil(branches / limit)
        rows.append(
            [
                f"{branches} × sleep {SLEEP:g}",
                str(limit),
                f"{ideal:.2f} s",
                f"{floor_s:.3f} s",
                f"{run_s:.3f} s",
                f"{wall_s:.3f} s",
                f"{run_s / ideal:.3f}",
                f"{run_s / floor_s:.3f}",
            ]
        )
    table(
        "independent branches (run = the run's reported duration; floor = bare threads running the same sleeps)",
        ["branches", "max_parallel_nodes", "ideal", "floor", "run", "wall", "run ÷ ideal", "run ÷ floor"],
        rows,
    )
    print(f"\ngoal: 2 branches of sleep {SLEEP:g} in ≤ {1.1 * SLEEP:.2f} s (ideal {SLEEP:g} s)")


if __name__ == "__main__":
    main()
