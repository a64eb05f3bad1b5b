"""Batch engine benchmarks (issue "Batch processing").

Run: python benchmarks/bench_batch.py [--quick]

Per-item engine overhead is measured end to end through the real CLI:
(wall of a batch of N items - wall of the same workflow with 0 items) / N, so
start-up is taken out and everything else (template resolution, retries
machinery, ordering, result building, JSON output) is in. The floor is a plain
Python loop calling the node's work directly.
"""

from __future__ import annotations

import subprocess
import sys
import time

from _common import best_of, run_workflow, table

QUICK = "--quick" in sys.argv


def echo_batch(n: int, parallel: bool) -> dict:
    return {
        "inputs": {"n": {"type": "integer"}},
        "nodes": [
            {"id": "gen", "type": "code", "params": {"code": "result = list(range(n))", "inputs": {"n": "${n}"}}},
            {
                "id": "e",
                "type": "echo",
                "params": {"value": "${item}", "index": "${__index__}"},
                "batch": {"items": "${gen.result}", "parallel": parallel, "max_concurrent": 10},
            },
        ],
        "outputs": {"count": {"source": "${e.count}"}},
    }


def per_item_us(raw: dict, n: int, repeat: int = 3) -> float:
    full = best_of(repeat, lambda: run_workflow(raw, f"n={n}")[0])
    empty = best_of(repeat, lambda: run_workflow(raw, "n=0")[0])
    return (full - empty) / n * 1e6


def echo_floor_us(n: int) -> float:
    from plait.nodes.echo import EchoNode

    node = EchoNode("e")
    t0 = time.perf_counter()
    for i in range(n):
        node.exec({"value": i, "index": i})
    return (time.perf_counter() - t0) / n * 1e6


def shell_batch(n: int) -> dict:
    return {
        "inputs": {"n": {"type": "integer"}},
        "nodes": [
            {"id": "gen", "type": "code", "params": {"code": "result = list(range(n))", "inputs": {"n": "${n}"}}},
            {"id": "s", "type": "shell", "params": {"command": "echo ${item}"}, "batch": {"items": "${gen.result}"}},
        ],
        "outputs": {"count": {"source": "${s.count}"}},
    }


def shell_floor_ms(n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        subprocess.run(["bash", "-c", f"echo {i}"], capture_output=True, check=True)
    return (time.perf_counter() - t0) / n * 1e3


def sleep_batch(items: int, concurrency: int) -> dict:
    return {
        "nodes": [
            {
                "id": "s",
                "type": "shell",
                "params": {"command": "sleep 0.1"},
                "batch": {"items": list(range(items)), "parallel": True, "max_concurrent": concurrency},
            }
        ],
        "outputs": {"count": {"source": "${s.count}"}},
    }


def main() -> None:
    sys.path.insert(0, str(__import__("_common").ROOT / "src"))
    n = 5_000 if QUICK else 20_000
    rows = []
    seq = per_item_us(echo_batch(n, False), n)
    par = per_item_us(echo_batch(n, True), n)
    floor = echo_floor_us(n)
    rows.append([f"echo, sequential, {n:,} items", f"{seq:.1f} µs", f"{floor:.2f} µs", f"{seq / floor:.0f}x", "~700 µs", "≤ 30 µs", "yes" if seq <= 30 else "NO"])
    rows.append([f"echo, parallel (10), {n:,} items", f"{par:.1f} µs", f"{floor:.2f} µs", f"{par / floor:.0f}x", "~1,000 µs", "≤ 60 µs", "yes" if par <= 60 else "NO"])
    ns = 300 if QUICK else 1_000
    shell = per_item_us(shell_batch(ns), ns, repeat=2) / 1000
    sfloor = shell_floor_ms(ns)
    rows.append([f"shell `echo`, sequential, {ns:,} items", f"{shell:.2f} ms", f"{sfloor:.2f} ms", f"{shell / sfloor:.2f}x", "2.4 ms", "≤ 1.5 ms", "yes" if shell <= 1.5 else "NO"])
    table(
        "Per-item cost (wall of N items minus wall of 0 items, through the CLI; best of 3)",
        ["measure", "plait", "floor (plain loop)", "÷ floor", "peer (pflow 0.16)", "goal", "met"],
        rows,
    )
    runs = [run_workflow(sleep_batch(200, 50)) for _ in range(3)]
    wall, out = min(runs, key=lambda r: r[1]["duration_ms"])
    run_s = out["duration_ms"] / 1000
    ideal = 200 / 50 * 0.1
    table(
        "Parallel shell: 200 × `sleep 0.1` at concurrency 50 (best of 3)",
        ["measure", "run", "ideal", "run ÷ ideal", "process wall", "peer", "goal", "met"],
        [[
            "200 × sleep 0.1 @ 50",
            f"{run_s:.3f} s",
            f"{ideal:.2f} s",
            f"{run_s / ideal:.2f}",
            f"{wall:.3f} s",
            "1.4",
            "≤ 1.25",
            "yes" if run_s / ideal <= 1.25 else "NO",
        ]],
    )
    print("run: the run's own duration_ms; process wall adds interpreter start-up (see bench_startup.py)")
    assert out["outputs"] == {"count": 200}, out["outputs"]


if __name__ == "__main__":
    main()
