"""A batch of 1,000,000 cheap items completes: wall time and peak RSS.

Run: python benchmarks/bench_million.py [N]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import env, plait_cmd, table

_WRAPPER = """
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:])
print("\\nPEAK_KB=%d" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, end="")
sys.exit(proc.returncode)
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    rows = []
    for parallel in (False, True):
        raw = {
            "nodes": [
                {"id": "gen", "type": "code", "params": {"code": f"result = list(range({n}))"}},
                {
                    "id": "e",
                    "type": "echo",
                    "params": {"v": "${item}"},
                    "batch": {"items": "${gen.result}", "parallel": parallel, "max_concurrent": 10},
                },
            ],
            "outputs": {"count": {"source": "${e.count}"}, "ok": {"source": "${e.success_count}"}},
        }
        with tempfile.TemporaryDirectory() as tmp:
            wf = Path(tmp) / "wf.json"
            wf.write_text(json.dumps(raw))
            # A fresh wrapper per run, so the peak RSS it reads is this run's alone.
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-c", _WRAPPER, *plait_cmd(), "run", str(wf), "-q", "-o", "json"],
                capture_output=True, text=True, env=env(), cwd=tmp,
            )
            wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        stdout, _, peak_kb = proc.stdout.rpartition("\nPEAK_KB=")
        out = json.loads(stdout)["outputs"]
        assert out == {"count": n, "ok": n}, out
        peak = f"{int(peak_kb) / 1024:.0f} MiB"
        rows.append([
            f"{n:,} echo items, {'parallel (10)' if parallel else 'sequential'}",
            f"{wall:.1f} s",
            f"{wall / n * 1e6:.1f} µs",
            peak,
        ])
    table("One batch of a million items (through the CLI, run records on)", ["measure", "wall", "per item", "peak RSS"], rows)


if __name__ == "__main__":
    main()
