"""Streaming items and results: JSONL file → item source → result sink → JSONL file.

Throughput (items/s) and peak RSS of the source and sink modules alone (a
passthrough: no engine, no node), beside a bare floor measured in the same run:
``for line in f: x = json.loads(line); out.write(json.dumps(x) + "\\n")``.
Each case runs in a fresh child process, which reports its own peak RSS
(``resource.getrusage``), so one case's memory never shows in another's.

Run: python benchmarks/bench_streams.py [--quick] [--n N] [--repeat R]
(10,000,000 items by default, 1,000,000 with --quick)
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
from pathlib import Path

from _common import ROOT, env, table

GOAL_RSS_MB = 100
GOAL_RATE = 50_000  # for the whole engine later; this part must cost far less


def _make_input(path: Path, n: int) -> None:
    with open(path, "w") as f:
        step = 100_000
        for start in range(0, n, step):
            f.write("".join(f'{{"id": {i}}}\n' for i in range(start, min(n, start + step))))


def _case(name: str, inp: str, out: str) -> dict[str, float]:
    """Runs in the child process."""
    if name != "floor":  # imported before the clock starts, so their cost is not the items'
        from plait.runtime.sinks import ResultSink
        from plait.runtime.sources import BadItem, open_source
    t0 = time.perf_counter()
    count = 0
    if name == "floor":
        with open(inp) as f, open(out, "w") as o:
            for line in f:
                x = json.loads(line)
                o.write(json.dumps(x) + "\n")
                count += 1
    elif name == "count":
        with open_source({"from": inp}) as src:
            count = src.total or 0
    elif name == "source":
        with open_source({"from": inp}) as src:
            for _ in src:
                count += 1
    elif name in ("input", "completion"):
        with open_source({"from": inp}) as src, ResultSink({"to": out, "order": name}) as sink:
            can_accept, write = sink.can_accept, sink.write
            for i, item in src:
                if not can_accept(i):  # sequential: never; the call is what a driver pays
                    raise AssertionError("the reorder buffer is full in a sequential run")
                if type(item) is BadItem:
                    write(i, {"index": i, "item": None, "error": item.message})
                else:
                    write(i, {"index": i, "item": item})
                count += 1
            ref = sink.close(success=True)
        assert ref["count"] == count, ref
    elif name != "idle":
        raise SystemExit(f"unknown case {name}")
    seconds = time.perf_counter() - t0
    if name in ("floor", "input", "completion"):
        with open(out, "rb") as f:  # the output is whole: every line is there
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        assert lines == count, (lines, count)
    return {"seconds": seconds, "items": count, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def _run_child(name: str, inp: Path, out: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", name, "--input", str(inp), "--output", str(out)],
        capture_output=True,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {name} failed:\n{proc.stdout}\n{proc.stderr}")
    if out.exists():
        out.unlink()
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1,000,000 items instead of 10,000,000")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="rounds; each case keeps its fastest")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(_case(args.case, args.input, args.output)))
        return
    n = args.n or (1_000_000 if args.quick else 10_000_000)
    small = max(1, n // 10)
    with tempfile.TemporaryDirectory() as tmp:
        inp, inp_small, out = Path(tmp) / "items.jsonl", Path(tmp) / "small.jsonl", Path(tmp) / "out.jsonl"
        _make_input(inp, n)
        _make_input(inp_small, small)
        size_mb = os.path.getsize(inp) / 1e6
        cases = [
            ("python + plait's source and sink modules, no items", "idle", inp),
            ("floor: json.loads + json.dumps loop", "floor", inp),
            ("count the items (byte scan)", "count", inp),
            ("source only: read every item", "source", inp),
            ("source → sink, input order", "input", inp),
            ("source → sink, completion order", "completion", inp),
            (f"source → sink, input order, {small:,} items", "input", inp_small),
        ]
        # Rounds interleave the cases, so a busy spell on the machine hits
        # them alike; each case keeps its fastest round and its highest peak.
        best: dict[int, dict[str, float]] = {}
        for _ in range(args.repeat):
            for k, (_label, name, path) in enumerate(cases):
                r = _run_child(name, path, out)
                if k in best:
                    r["peak_kb"] = max(r["peak_kb"], best[k]["peak_kb"])
                    if best[k]["seconds"] < r["seconds"]:
                        r["seconds"] = best[k]["seconds"]
                best[k] = r
        results = [(label, name, best[k]) for k, (label, name, _) in enumerate(cases)]
    floor = next(r for _, name, r in results if name == "floor")
    floor_rate = floor["items"] / floor["seconds"]
    rows = []
    for label, name, r in results:
        if name == "idle":
            rows.append([label, "-", "-", "-", "-", f"{r['peak_kb'] / 1024:.0f} MiB"])
            continue
        rate = r["items"] / r["seconds"] if r["seconds"] else 0.0
        rows.append(
            [
                label,
                f"{int(r['items']):,}",
                f"{r['seconds']:.2f} s",
                f"{rate:,.0f}",
                f"{floor_rate / rate:.2f}" if name not in ("floor", "count") else "-",
                f"{r['peak_kb'] / 1024:.0f} MiB",
            ]
        )
    table(
        f"Streaming {n:,} tiny JSONL items (best of {args.repeat}) "
        f"({size_mb:.0f} MB) through sources and sinks, no engine",
        ["case", "items", "wall", "items/s", "× floor time", "peak RSS"],
        rows,
    )
    stream = next(r for _, name, r in results if name == "input")
    rate = stream["items"] / stream["seconds"]
    print(
        f"\nsource → sink costs {1e6 / rate:.1f} µs per item ({1e6 / floor_rate:.1f} µs for the floor); "
        f"the engine's goal of {GOAL_RATE:,} items/s leaves {1e6 / GOAL_RATE:.0f} µs per item in all. "
        f"Peak RSS {stream['peak_kb'] / 1024:.0f} MiB against a goal of ≤ {GOAL_RSS_MB} MB for the whole run."
    )


if __name__ == "__main__":
    main()
