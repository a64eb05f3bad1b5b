"""The executor conformance suite: every executor gives the same batch semantics.

Each test runs a real workflow through ``plait.run`` with the executor under
test. The batch driver above the seam owns ordering, retries, the error
policy, the limits and interrupts; these tests show that no executor changes
any of them. A new executor is added to ``EXECUTORS`` (with whatever set-up it
needs) and must pass unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import plait
from plait.runtime.events import Event, ItemFinished, ItemStarted

PROBE = str(Path(__file__).with_name("probe_nodes.py"))


@dataclass(frozen=True)
class Setup:
    executor: str  # the name given to plait.run(executor=...)
    node_type: str = "probe"  # "aprobe" has an exec_async


@contextlib.contextmanager
def _plain(setup: Setup) -> Iterator[Setup]:
    yield setup


@contextlib.contextmanager
def _dask(setup: Setup) -> Iterator[Setup]:
    # A real LocalCluster (two workers, two threads each), started once for the session.
    pytest.importorskip("distributed")
    import dask_cluster

    with dask_cluster.scheduler(dask_cluster.shared_threads().scheduler_address):
        yield setup


@pytest.fixture(scope="session", autouse=True)
def _dask_cluster_closed() -> Iterator[None]:
    yield
    import dask_cluster

    dask_cluster.close_shared()


# id -> a context manager that makes the executor available and yields how to use it
EXECUTORS: dict[str, Callable[[], contextlib.AbstractContextManager[Setup]]] = {
    "sequential": lambda: _plain(Setup("sequential")),
    "threads": lambda: _plain(Setup("threads")),
    "async-sync-node": lambda: _plain(Setup("async")),
    "async": lambda: _plain(Setup("async", "aprobe")),
    "dask": lambda: _dask(Setup("dask")),
}

_current = threading.local()


@pytest.fixture(params=sorted(EXECUTORS))
def executor(request: pytest.FixtureRequest) -> Iterator[str]:
    with EXECUTORS[request.param]() as setup:
        _current.node_type = setup.node_type
        yield setup.executor


def probe_batch(tmp: Path, items: list[Any], parallel: bool = True, **batch: Any) -> dict[str, Any]:
    params = batch.pop("params", {})
    return {
        "nodes": [
            {
                "id": "p",
                "type": getattr(_current, "node_type", "probe"),
                "params": {"value": "${item}", "log": str(tmp / "log.txt"), **params},
                "batch": {"items": items, "parallel": parallel, "max_concurrent": 4, **batch},
            }
        ]
    }


def run(wf: dict[str, Any], executor: str, **kw: Any) -> plait.RunResult:
    return plait.run(wf, executor=executor, nodes=[PROBE], **kw)


def started(tmp: Path) -> list[str]:
    log = tmp / "log.txt"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split(" ", 1)[1] for line in lines if line.startswith("start ")]


@pytest.mark.parametrize("parallel", [False, True])
def test_results_come_back_in_input_order(executor: str, tmp_path: Path, parallel: bool) -> None:
    # later items finish first
    items = [{"v": i, "s": 0.05 * (5 - i)} for i in range(6)]
    wf = probe_batch(tmp_path, items, parallel, params={"value": "${item.v}", "sleep": "${item.s}"})
    result = run(wf, executor)
    assert result.ok, result.errors
    out = result.outputs
    assert [r["value"] for r in out["results"]] == list(range(6))
    assert [r["index"] for r in out["results"]] == list(range(6))
    assert out["count"] == out["success_count"] == 6


def test_a_failure_is_retried_up_to_max_retries_attempts(executor: str, tmp_path: Path) -> None:
    wf = probe_batch(
        tmp_path,
        ["a", "b"],
        max_retries=3,
        params={"fail_times": 2, "marker": str(tmp_path / "${item}.count")},
    )
    result = run(wf, executor)
    assert result.ok, result.errors
    assert [r["attempts"] for r in result.outputs["results"]] == [3, 3]
    assert (tmp_path / "a.count").read_text() == "3"


def test_retries_stop_at_max_retries_and_the_item_fails(executor: str, tmp_path: Path) -> None:
    wf = probe_batch(
        tmp_path,
        ["a"],
        max_retries=2,
        error_handling="continue",
        params={"fail_times": 5, "marker": str(tmp_path / "a.count")},
    )
    result = run(wf, executor)
    assert result.status == "partial"  # finished, with failed items
    assert result.outputs["errors"] == [
        {"index": 0, "item": "a", "error": "flaky a (attempt 2)", "attempts": 2}
    ]
    assert (tmp_path / "a.count").read_text() == "2"


def test_sequential_fail_fast_starts_nothing_after_the_failure(executor: str, tmp_path: Path) -> None:
    items = [{"v": i, "f": i == 2} for i in range(5)]
    wf = probe_batch(tmp_path, items, parallel=False, params={"value": "${item.v}", "fail": "${item.f}"})
    result = run(wf, executor)
    assert result.status == "failed"
    assert result.errors[0]["index"] == 2
    assert started(tmp_path) == ["0", "1", "2"]


def test_parallel_fail_fast_stops_launching_and_reports_the_lowest_failed_index(
    executor: str, tmp_path: Path
) -> None:
    items = [{"v": i, "f": i in (3, 5), "s": 0.2 if i in (3, 5) else 0.02} for i in range(40)]
    wf = probe_batch(tmp_path, items, params={"value": "${item.v}", "fail": "${item.f}", "sleep": "${item.s}"})
    result = run(wf, executor)
    assert result.status == "failed"
    assert result.errors[0]["index"] == 3
    assert len(started(tmp_path)) < 40  # the window stopped filling at the first failure


def test_continue_runs_every_item_and_collects_the_failures(executor: str, tmp_path: Path) -> None:
    items = [{"v": i, "f": i % 3 == 0} for i in range(9)]
    wf = probe_batch(tmp_path, items, error_handling="continue", params={"value": "${item.v}", "fail": "${item.f}"})
    result = run(wf, executor)
    assert result.status == "partial"  # finished, with failed items
    out = result.outputs
    assert [e["index"] for e in out["errors"]] == [0, 3, 6]
    assert out["success_count"] == 6 and out["error_count"] == 3
    assert sorted(started(tmp_path), key=int) == [str(i) for i in range(9)]
    assert [r["index"] for r in out["results"]] == list(range(9))


@pytest.mark.parametrize(("limit", "value"), [("max_failures", 2), ("max_failure_rate", 0.1)])
def test_failure_limits_abort_the_batch(executor: str, tmp_path: Path, limit: str, value: float) -> None:
    items = [{"v": i, "f": True} for i in range(30)]
    wf = probe_batch(
        tmp_path, items, parallel=False, error_handling="continue", params={"value": "${item.v}", "fail": "${item.f}"}
    )
    wf["nodes"][0]["batch"][limit] = value
    result = run(wf, executor)
    assert result.status == "failed"
    assert "batch aborted" in result.errors[0]["message"]
    assert len(started(tmp_path)) == 3 if limit == "max_failures" else 4  # 3 > 2; 4/30 > 10%


def test_an_interrupt_stops_launching_and_ends_the_run_as_interrupted(executor: str, tmp_path: Path) -> None:
    cancel = threading.Event()
    finished = 0

    def on_event(ev: Event) -> None:
        nonlocal finished
        if isinstance(ev, ItemFinished):
            finished += 1
            if finished == 3:
                cancel.set()

    items = [{"v": i, "s": 0.02} for i in range(50)]
    wf = probe_batch(tmp_path, items, params={"value": "${item.v}", "sleep": "${item.s}"})
    result = run(wf, executor, on_event=on_event, cancel=cancel)
    assert result.status == "interrupted"
    assert 3 <= len(started(tmp_path)) < 50


def test_a_node_that_raises_fails_its_item_not_the_run(executor: str, tmp_path: Path) -> None:
    items = [{"v": i, "b": i == 1} for i in range(3)]
    wf = probe_batch(tmp_path, items, error_handling="continue", params={"value": "${item.v}", "boom": "${item.b}"})
    result = run(wf, executor)
    assert result.status == "partial"  # finished, with failed items
    assert result.outputs["errors"][0]["index"] == 1
    assert result.outputs["errors"][0]["error"] == "RuntimeError: boom 1"


def test_a_node_calling_sys_exit_fails_its_item_not_the_run(executor: str, tmp_path: Path) -> None:
    items = [{"v": i, "x": i == 0} for i in range(3)]
    wf = probe_batch(tmp_path, items, error_handling="continue", params={"value": "${item.v}", "exit": "${item.x}"})
    result = run(wf, executor)
    assert result.status == "partial"  # finished, with failed items
    assert result.outputs["errors"][0]["index"] == 0
    assert "SystemExit" in result.outputs["errors"][0]["error"]
    assert result.outputs["success_count"] == 2


def test_every_attempt_is_an_event_with_its_slot(executor: str, tmp_path: Path) -> None:
    events: list[Event] = []
    wf = probe_batch(tmp_path, list(range(8)))
    result = run(wf, executor, on_event=events.append)
    assert result.ok
    starts = [e for e in events if isinstance(e, ItemStarted)]
    ends = [e for e in events if isinstance(e, ItemFinished)]
    assert sorted(e.index for e in starts) == sorted(e.index for e in ends) == list(range(8))  # type: ignore[type-var]
    assert all(0 <= e.slot < 4 for e in starts)
