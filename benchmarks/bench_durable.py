"""What durability costs per item: the item records, the skip check on resume, the item cache.

    python benchmarks/bench_durable.py [--items 100000] [--plan-items 1000000] [--repeat 3]

Every row runs the real CLI in a fresh process on a batch of ``echo`` items
(a node whose own cost is a few microseconds, so the cost of durability
shows), with its own ``PLAIT_HOME``:

* **recording** — the batch with ``--no-record`` and with the run record (each
  item's final row holds its key, status and outputs, written by the
  background writer with group commit). The extra per item is the difference.
  Floor: the same rows inserted by a bare ``sqlite3`` loop (WAL, one
  transaction per 0.2 s window), which is what the writer must do at least.
* **skip check on resume** — a run of N items, then ``--resume`` of it with
  one item more: N items are found in the old record and reused, one runs.
  The check (the goal's measure): plait's own lookup (runtime/resume.py) of
  every recorded key in input order, in process; beside it, the same with each
  item's params resolved and keyed first (what the driver does for every item
  of a recorded run, resumed or not, so the recording row counts it too); and
  a reused item whole: the resumed batch's duration ÷ N (resolving, keying,
  checking, recording the reused row into the new run and putting its result,
  as a resume must). Floor: reading the N recorded rows in index order with
  ``sqlite3`` and comparing each key.
* **cache hit** — a node with ``"cache": true`` run twice; the second run
  answers every item from the cache. Per item: its batch duration ÷ N.
  Floor: one primary-key ``SELECT`` per item on a bare SQLite table of N rows.
* **resume plan at scale** — a recorded run of ``--plan-items`` items, then its
  resume with one item more: wall time and the peak RSS of the resuming process
  (``os.wait4``), against a fresh unrecorded run of the same items.

The durations are the batch node's own ``duration_ms`` from ``-o json``
(interpreter start-up excluded); best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import env, plait_cmd, table

GOALS = {
    "recording": 20.0,
    "skip": 5.0,
    "cache": 50.0,
}


def workflow(cache: bool = False) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "echo",
        "type": "echo",
        "params": {"value": "${item}", "label": "item ${item}"},
        "batch": {"items": "${make.stdout}", "parallel": False},
    }
    if cache:
        node["cache"] = True
    return {
        "inputs": {"n": {"type": "integer", "required": True}},
        "nodes": [
            {
                "id": "make",
                "type": "shell",
                "params": {"command": f"{sys.executable} -c 'import sys; print(list(range(int(sys.argv[1]))))' ${{n}}"},
            },
            node,
            {"id": "done", "type": "echo", "params": {"count": "${echo.count}"}},
        ],
    }


class Runner:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.counter = 0

    def home(self) -> Path:
        self.counter += 1
        home = self.tmp / f"home{self.counter}"
        home.mkdir()
        return home

    def run(self, wf: Path, home: Path, *args: str) -> tuple[dict[str, Any], float, float]:
        """(JSON result, wall s, peak RSS MB) of one real CLI run."""
        return popen_rss([*plait_cmd(), "run", str(wf), "-q", "-o", "json", *args], home, self.tmp)


def batch_ms(result: dict[str, Any]) -> float:
    return float(result["nodes"]["echo"]["duration_ms"])


def popen_rss(cmd: list[str], home: Path, cwd: Path) -> tuple[dict[str, Any], float, float]:
    """Like Runner.run, but reaps the child itself so its own peak RSS is known."""
    e = env()
    e["PLAIT_HOME"] = str(home)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, env=e, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark run failed ({proc.returncode}):\n{out.decode()[-2000:]}\n{err.decode()[-2000:]}")
    return json.loads(out), wall, usage.ru_maxrss / 1024


def floor_insert(n: int, tmp: Path) -> float:
    """µs per row: the rows a recorded item needs, inserted by a bare loop with group commit."""
    db = tmp / f"floor-insert-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE items (run INTEGER, node TEXT, idx INTEGER, key TEXT, status TEXT, attempt INTEGER,"
        " outputs TEXT, started REAL, ended REAL, PRIMARY KEY (run, node, idx, attempt))"
    )
    t0 = time.perf_counter()
    window = time.perf_counter()
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        outputs = json.dumps({"value": i, "label": f"item {i}"})
        key = hashlib.blake2b(outputs.encode(), digest_size=16).hexdigest()
        now = time.time()
        rows.append((1, "echo", i, key, "success", 1, outputs, now, now))
        if time.perf_counter() - window >= 0.2:
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)", rows)
            conn.execute("COMMIT")
            rows.clear()
            window = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed / n * 1e6


def floor_scan(n: int, tmp: Path) -> float:
    """µs per row: reading N recorded rows in index order and comparing each one's key."""
    db = tmp / f"floor-scan-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE items (run INTEGER, idx INTEGER, key TEXT, status TEXT, outputs TEXT)")
    conn.executemany(
        "INSERT INTO items VALUES (1, ?, ?, 'success', ?)",
        ((i, f"k{i}", json.dumps({"value": i})) for i in range(n)),
    )
    conn.execute("CREATE INDEX items_run ON items(run, idx)")
    conn.commit()
    t0 = time.perf_counter()
    matched = 0
    cursor = conn.execute("SELECT idx, key, status, outputs FROM items WHERE run = 1 ORDER BY idx")
    for i, row in enumerate(cursor):
        if row[1] == f"k{i}" and row[2] == "success":
            json.loads(row[3])
            matched += 1
    elapsed = time.perf_counter() - t0
    conn.close()
    assert matched == n
    return elapsed / n * 1e6


def check_alone(db: Path, run_id: str) -> float:
    """µs per item: plait's own skip check (runtime/resume.py) for every recorded key, in input order."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from plait.runtime.resume import NodeReuse, ReuseSource

    conn = sqlite3.connect(db)
    run = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
    keys = [k for (k,) in conn.execute(
        "SELECT key FROM items WHERE run = ? AND node_id = 'echo' AND status = 'success' ORDER BY idx", (run,))]
    conn.close()
    source = ReuseSource(db, {"run_id": run_id, "id": run})
    t0 = time.perf_counter()
    reuse = NodeReuse(source, "echo")
    found = sum(1 for i, key in enumerate(keys) if reuse.lookup(i, i, key) is not None)
    elapsed = time.perf_counter() - t0
    reuse.close()
    assert found == len(keys), (found, len(keys))
    return elapsed / len(keys) * 1e6


def check_with_key(db: Path, run_id: str, n: int) -> float:
    """µs per item: the check with each item's key made first (its params resolved and
    keyed, as the driver does for every item of a recorded run), in input order."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from plait.api import _compile, _registry
    from plait.runtime.items import Attempt, resolve
    from plait.runtime.resume import NodeReuse, ReuseSource

    conn = sqlite3.connect(db)
    run = conn.execute("SELECT id FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
    conn.close()
    cn = _compile(workflow(), _registry(())).nodes["echo"]
    attempts = [Attempt(i, i, 1) for i in range(n)]
    source = ReuseSource(db, {"run_id": run_id, "id": run})
    t0 = time.perf_counter()
    reuse = NodeReuse(source, "echo")
    found = sum(1 for a in attempts if reuse.lookup(a.index, a.item, resolve(cn, {}, a)[1]) is not None)
    elapsed = time.perf_counter() - t0
    reuse.close()
    assert found == n, (found, n)
    return elapsed / n * 1e6


def floor_lookup(n: int, tmp: Path) -> float:
    """µs per item: one primary-key SELECT of a cached entry, and decoding it."""
    db = tmp / f"floor-lookup-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, outputs TEXT)")
    conn.executemany("INSERT INTO entries VALUES (?, ?)", ((f"k{i}", json.dumps({"value": i})) for i in range(n)))
    conn.commit()
    t0 = time.perf_counter()
    for i in range(n):
        row = conn.execute("SELECT outputs FROM entries WHERE key = ?", (f"k{i}",)).fetchone()
        json.loads(row[0])
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--plan-items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    n, repeat = opts.items, opts.repeat

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        runner = Runner(tmp)
        wf = tmp / "wf.json"
        wf.write_text(json.dumps(workflow()))
        wf_cache = tmp / "wf_cache.json"
        wf_cache.write_text(json.dumps(workflow(cache=True)))

        bare = min(batch_ms(runner.run(wf, runner.home(), "--no-record", f"n={n}")[0]) for _ in range(repeat))
        recorded = min(batch_ms(runner.run(wf, runner.home(), f"n={n}")[0]) for _ in range(repeat))
        rec_us = (recorded - bare) / n * 1000
        rec_floor = min(floor_insert(n, tmp) for _ in range(repeat))

        skip_ms = []
        home = tmp
        for _ in range(repeat):
            home = runner.home()
            first, _, _ = runner.run(wf, home, f"n={n}")
            again, _, _ = runner.run(wf, home, "--resume", first["run_id"], f"n={n + 1}")
            meta = again["nodes"]["echo"]
            skip_ms.append(batch_ms(again))
        skip_us = min(skip_ms) / n * 1000
        check_us = min(check_alone(home / "runs.db", first["run_id"]) for _ in range(repeat))
        keyed_us = min(check_with_key(home / "runs.db", first["run_id"], n) for _ in range(repeat))
        skip_floor = min(floor_scan(n, tmp) for _ in range(repeat))

        hit_ms = []
        for _ in range(repeat):
            home = runner.home()
            runner.run(wf_cache, home, "--no-record", f"n={n}")
            second, _, _ = runner.run(wf_cache, home, "--no-record", f"n={n}")
            hit_ms.append(batch_ms(second))
        hit_us = min(hit_ms) / n * 1000
        hit_floor = min(floor_lookup(n, tmp) for _ in range(repeat))

        rows = [
            ["recording, per item", f"{rec_us:.1f} µs", f"{rec_floor:.1f} µs", _ratio(rec_us, rec_floor),
             f"≤ {GOALS['recording']:.0f} µs"],
            ["skip check per reused item (in process)", f"{check_us:.1f} µs", f"{skip_floor:.1f} µs",
             _ratio(check_us, skip_floor), f"≤ {GOALS['skip']:.0f} µs"],
            ["  the same, each item's key made first", f"{keyed_us:.1f} µs", f"{skip_floor:.1f} µs",
             _ratio(keyed_us, skip_floor), "-"],
            ["a reused item whole (resumed batch ÷ N)", f"{skip_us:.1f} µs", f"{skip_floor:.1f} µs",
             _ratio(skip_us, skip_floor), "-"],
            ["cache hit, per item", f"{hit_us:.1f} µs", f"{hit_floor:.1f} µs", _ratio(hit_us, hit_floor),
             f"≤ {GOALS['cache']:.0f} µs"],
        ]
        table(
            f"durability per item ({n:,} echo items, sequential, best of {repeat}; "
            f"unrecorded batch: {bare / n * 1000:.1f} µs/item)",
            ["measure", "plait", "bare floor", "÷ floor", "goal"],
            rows,
        )
        print(f"(the resumed run reused {meta.get('count', n):,} items' node entry; its batch took {min(skip_ms):.0f} ms)")

        m = opts.plan_items
        home = runner.home()
        cmd = [*plait_cmd(), "run", str(wf), "-q", "-o", "json"]
        _fresh, fresh_wall, fresh_rss = popen_rss([*cmd, "--no-record", f"n={m}"], runner.home(), tmp)
        first, first_wall, first_rss = popen_rss([*cmd, f"n={m}"], home, tmp)
        resumed, res_wall, res_rss = popen_rss([*cmd, "--resume", first["run_id"], f"n={m + 1}"], home, tmp)
        plan = (resumed.get("resumed_from") or {}).get("plan", "?")
        table(
            f"resume at scale ({m:,} items; plan: {plan})",
            ["run", "wall", "peak RSS", "goal"],
            [
                ["fresh, unrecorded (floor)", f"{fresh_wall:.1f} s", f"{fresh_rss:.0f} MB", ""],
                ["first run, recorded", f"{first_wall:.1f} s", f"{first_rss:.0f} MB", ""],
                ["resume with one item more", f"{res_wall:.1f} s", f"{res_rss:.0f} MB", "≤ 30 s, ≤ 150 MB"],
            ],
        )


def _ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}×" if floor > 0 else "-"


if __name__ == "__main__":
    main()
