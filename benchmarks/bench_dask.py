"""The dask executor on a real two-process cluster: overhead per item, a million
items with the scheduler's memory sampled, and CPU-bound items against the ideal.

The scheduler and the two workers (one thread each) are their own processes
(`dask scheduler`, `dask worker --nworkers 2`), as on a real cluster, so the
scheduler's RSS is its own and this process is only the driver. Each case has
a bare floor measured in the same run: `client.map` of the same function, one
Dask task per item, with no plait in between.

Run: python benchmarks/bench_dask.py [N_MILLION]   (default 1,000,000)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from _common import ROOT, table
from _dask_work import noop, run_code

CPU_ITEMS = 200
CPU_ITEM_S = 0.05


BURN_SOURCE = "x = 0\nfor i in range(n):\n    x += i\nresult = x"


class Cluster:
    """`dask scheduler` and `dask worker --nworkers 2 --nthreads 1`, as processes."""

    def __init__(self, folder: Path) -> None:
        dask_cli = str(Path(sys.executable).with_name("dask"))
        info = folder / "scheduler.json"
        paths = [str(ROOT / "src"), str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        self.scheduler = subprocess.Popen(
            [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(info)], env=env, **quiet,
        )
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            if time.monotonic() > deadline:
                raise SystemExit("the scheduler did not start")
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]
        self.workers = subprocess.Popen(
            [dask_cli, "worker", self.address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
             "--memory-limit", "0"], env=env, **quiet,
        )
        from distributed import Client

        self.client = Client(self.address, set_as_default=False)
        self.client.wait_for_workers(2, timeout=60)

    def scheduler_rss(self) -> int:
        import psutil

        return int(psutil.Process(self.scheduler.pid).memory_info().rss)

    def close(self) -> None:
        self.client.close()
        for proc in (self.workers, self.scheduler):
            proc.terminate()
        for proc in (self.workers, self.scheduler):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def run(wf: dict[str, Any]) -> tuple[float, float, Any]:
    import plait

    t0, c0 = time.perf_counter(), time.process_time()
    result = plait.run(wf, executor="dask")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if not result.ok:
        raise SystemExit(f"benchmark workflow failed: {result.errors}")
    return wall, cpu, result


def noop_batch(n: int) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "gen", "type": "code", "params": {"code": f"result = list(range({n}))"}},
            {"id": "e", "type": "echo", "params": {"v": "${item}"},
             "batch": {"items": "${gen.result}", "parallel": True, "max_concurrent": 100}},
        ],
        "outputs": {"count": {"source": "${e.success_count}"}},
    }


def bare_map(cluster: Cluster, fn: Any, args: list[Any]) -> float:
    t0 = time.perf_counter()
    futures = cluster.client.map(fn, args, pure=False)
    cluster.client.gather(futures)
    wall = time.perf_counter() - t0
    del futures
    return wall


def item_cpu(n: int, rounds: int = 5) -> float:
    """CPU seconds of one code item's work here (the least of a few: other
    processes on the machine slow the wall clock, not this)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.thread_time()
        run_code(BURN_SOURCE, n)
        best = min(best, time.thread_time() - t0)
    return best


def calibrate() -> int:
    """The loop count whose code item takes CPU_ITEM_S of CPU."""
    n = 100_000
    while True:
        took = item_cpu(n, rounds=2)
        if took > 0.02:
            return int(n * CPU_ITEM_S / took)
        n *= 2


def sample_rss(cluster: Cluster, stop: threading.Event, into: list[tuple[float, int]]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        into.append((time.monotonic() - t0, cluster.scheduler_rss()))
        stop.wait(0.5)


def main() -> None:
    million = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    mib = 1024 * 1024
    load_before = os.getloadavg()[0]
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        os.environ["PLAIT_DASK_SCHEDULER"] = cluster.address
        try:
            run(noop_batch(1000))  # the workers import plait once

            # 1. The driver's cost per item, no-op items.
            n = 200_000
            wall, cpu, _ = min((run(noop_batch(n)) for _ in range(2)), key=lambda r: r[0])
            floor_n = 20_000
            floor = bare_map(cluster, noop, list(range(floor_n))) / floor_n
            rows.append([
                f"no-op items ({n:,}): driver CPU per item", f"{cpu / n * 1e6:.1f} µs", "—",
                f"{floor * 1e6:.0f} µs/task", f"{cpu / n / floor:.3f}", "≤ 100 µs",
            ])
            rows.append([
                f"no-op items ({n:,}): wall per item", f"{wall / n * 1e6:.1f} µs", "—",
                f"{floor * 1e6:.0f} µs/task", f"{wall / n / floor:.3f}", "—",
            ])

            # 2. A million no-op items; the scheduler's RSS sampled throughout.
            samples: list[tuple[float, int]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=sample_rss, args=(cluster, stop, samples), daemon=True)
            sampler.start()
            try:
                wall, cpu, result = run(noop_batch(million))
            finally:
                stop.set()
                sampler.join()
            assert result.outputs == {"count": million}, result.outputs
            rss = [r for _, r in samples]
            settled = rss[len(rss) // 10 :] or rss  # after the first tenth of the run
            growth = (max(settled) - settled[0]) / mib
            rows.append([
                f"{million:,} no-op items: wall", f"{wall:.1f} s ({million / wall:,.0f}/s)", "—",
                f"{floor * million:.0f} s (est.)", f"{wall / (floor * million):.3f}", "completes",
            ])
            rows.append([
                "  scheduler RSS start / peak / end", f"{rss[0] / mib:.0f} / {max(rss) / mib:.0f} / "
                f"{rss[-1] / mib:.0f} MiB", "—", "—", "—", "flat",
            ])
            rows.append([
                "  scheduler RSS growth after the first tenth", f"{growth:+.1f} MiB", "—", "—", "—", "≈ 0",
            ])
            # What holding one task per item would cost the scheduler instead.
            before = cluster.scheduler_rss()

            held = cluster.client.map(noop, range(50_000), pure=False)
            cluster.client.gather(held)
            per_task = (cluster.scheduler_rss() - before) / 50_000
            del held
            rows.append([
                "  (bare: scheduler RSS per task held)", f"{per_task:,.0f} B", "—",
                f"{per_task * million / mib:,.0f} MiB for {million:,}", "—", "—",
            ])

            # 3. CPU-bound code items on two single-threaded workers.
            loops = calibrate()
            item = item_cpu(loops)
            ideal = CPU_ITEMS * item / 2
            wf = {
                "nodes": [
                    {"id": "c", "type": "code", "params": {"code": BURN_SOURCE, "inputs": {"n": "${item}"}},
                     "batch": {"items": [loops] * CPU_ITEMS, "parallel": True, "max_concurrent": 8}},
                ],
            }
            walls, floors = [], []
            for _ in range(3):  # interleaved: a busy moment of the machine hits both
                walls.append(run(wf)[0])
                floors.append(bare_map(cluster, partial(run_code, BURN_SOURCE), [loops] * CPU_ITEMS))
            wall, floor_wall = min(walls), min(floors)
            rows.append([
                f"CPU-bound code items, {CPU_ITEMS} × {item * 1000:.0f} ms", f"{wall:.2f} s",
                f"{wall / ideal:.3f} (ideal {ideal:.2f} s)", f"{floor_wall:.2f} s ({floor_wall / ideal:.3f})",
                f"{wall / floor_wall:.3f}", "≤ 1.15 × ideal",
            ])
        finally:
            cluster.close()
    # Wall figures move with whatever else the machine runs; the load says how busy it was.
    table(
        f"dask executor, 2 worker processes × 1 thread, scheduler in its own process "
        f"({os.cpu_count()} cores; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)",
        ["case", "plait", "ratio to ideal", "bare client.map", "plait / bare", "goal"],
        rows,
    )


if __name__ == "__main__":
    main()
