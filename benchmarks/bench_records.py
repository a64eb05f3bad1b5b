"""What watching a run costs per item: the run record and the progress display.

    python benchmarks/bench_records.py [--items 100000] [--repeat 3]

A batch of trivial ``echo`` items (the runtime's own cost per item is a few
microseconds, so any cost of the subscribers shows) runs through the real CLI
four ways: with nothing listening (``-q --no-record``), with the run record
only (``-q``), with progress only (stderr to a pipe, ``--no-record``), and with
both (the default). The time is the batch node's own ``duration_ms`` from the
JSON output (interpreter start-up excluded); the best of ``--repeat`` runs.
"Extra per item" is the difference to nothing listening, divided by the item
count: it includes building the events, which any subscriber brings.

The run record keeps writing after the run (the last flush and the item
previews): "outside ms" is the wall time of the whole process minus the run's
own duration, that is start-up plus that tail; compare it across the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = [
    ("nothing listening", ["-q", "--no-record"]),
    ("run record", ["-q"]),
    ("progress (pipe)", ["--no-record"]),
    ("record + progress", []),
]


def workflow(items: int, parallel: bool) -> dict[str, object]:
    return {
        "nodes": [
            {
                "id": "make",
                "type": "shell",
                "params": {"command": f"{sys.executable} -c 'print(list(range({items})))'"},
            },
            {
                "id": "echo",
                "type": "echo",
                "params": {"value": "${item}"},
                "batch": {"items": "${make.stdout}", "parallel": parallel, "max_concurrent": 8},
            },
            {"id": "done", "type": "echo", "params": {"count": "${echo.count}"}},
        ]
    }


def run(path: Path, args: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "plait", "run", str(path), "-o", "json", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    wall = (time.perf_counter() - t0) * 1000.0
    out = json.loads(proc.stdout)
    return out["nodes"]["echo"]["duration_ms"], out["duration_ms"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PLAIT_HOME", None)
    print(f"{opts.items:,} echo items, best of {opts.repeat}\n")
    header = f"{'batch':<12}{'listening':<20}{'batch ms':>10}{'µs/item':>9}{'extra µs/item':>15}{'outside ms':>12}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for parallel in (False, True):
            path = Path(tmp) / f"bench_{parallel}.json"
            path.write_text(json.dumps(workflow(opts.items, parallel)))
            base = None
            for name, args in VARIANTS:
                best = min(run(path, args, tmp, env) for _ in range(opts.repeat))
                batch_ms, run_ms, wall = best
                per_item = batch_ms * 1000.0 / opts.items
                if base is None:
                    base = per_item
                close_ms = f"{wall - run_ms:.0f}"
                label = "parallel 8" if parallel else "sequential"
                print(
                    f"{label:<12}{name:<20}{batch_ms:>10.1f}{per_item:>9.2f}{per_item - base:>15.2f}{close_ms:>12}"
                )


if __name__ == "__main__":
    main()
