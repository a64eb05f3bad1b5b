"""How long plait takes to start, through the real CLI, wall clock.

    python benchmarks/bench_startup.py [--runs 15]

Three cases: `plait --version`, `plait --help`, and a workflow of one shell
node (`echo hi`, run recorded as usual). Each is started ``--runs`` times as
``python -m plait ...``; the median and the fastest run are shown beside the
goal and the figures measured for pflow-cli (the peer that reads the same
workflow format) on this kind of machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    # name, args, goal (s), pflow-cli (s)
    ("plait --version", ["--version"], 0.10, 1.1),
    ("plait --help", ["--help"], 0.15, 1.2),
    ("one shell node", ["run", "{wf}", "-q"], 0.30, 1.4),
]


def timed(args: list[str], cwd: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "plait", *args],
        cwd=cwd,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    opts = parser.parse_args()
    env = dict(os.environ)
    # An installed plait has its .pyc files; without them every start compiles every module.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        wf = Path(tmp) / "hello.json"
        wf.write_text(json.dumps({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]}))
        rows = []
        for name, args, goal, peer in CASES:
            argv = [a.replace("{wf}", str(wf)) for a in args]
            timed(argv, tmp, env)  # warm the file cache and the .pyc files
            times = [timed(argv, tmp, env) for _ in range(opts.runs)]
            rows.append((name, statistics.median(times), min(times), goal, peer))
    print(f"start-up, wall clock, {opts.runs} runs each (python -m plait; {sys.version.split()[0]})\n")
    header = f"{'case':<18}{'median s':>10}{'min s':>9}{'goal s':>9}{'pflow-cli s':>13}  "
    print(header)
    print("-" * len(header))
    for name, median, fastest, goal, peer in rows:
        mark = "ok" if median <= goal else "OVER"
        print(f"{name:<18}{median:>10.3f}{fastest:>9.3f}{goal:>9.2f}{peer:>13.1f}  {mark}")


if __name__ == "__main__":
    main()
