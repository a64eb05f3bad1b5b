"""Helpers shared by the benchmarks: run the real CLI, time it, print a table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def plait_cmd() -> list[str]:
    return [sys.executable, "-m", "plait"]


def run_workflow(raw: dict[str, Any], *args: str, cwd: str | None = None) -> tuple[float, dict[str, Any]]:
    """Run a workflow through the real CLI; return (wall seconds, JSON result)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "wf.json"
        path.write_text(json.dumps(raw))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [*plait_cmd(), "run", str(path), "-q", "-o", "json", *args],
            capture_output=True,
            text=True,
            env=env(),
            cwd=cwd or tmp,
        )
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark workflow failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, json.loads(proc.stdout)


def best_of(n: int, fn: Any) -> float:
    return min(fn() for _ in range(n))


def table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
