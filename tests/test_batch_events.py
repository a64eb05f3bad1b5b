"""Item events: what the progress display and run records subscribe to."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from plait.nodes.registry import Registry
from plait.runtime.compile import compile_raw
from plait.runtime.engine import Runner
from plait.runtime.events import Event, EventBus
from plait.runtime.services import RunServices


def run_with_events(raw: dict, cwd: Path) -> tuple[list[Event], object]:
    registry = Registry()
    compiled = compile_raw(raw, registry)
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    result = Runner(compiled, RunServices(registry, bus, str(cwd))).run({})
    return events, result


@pytest.mark.parametrize("parallel", [False, True])
def test_every_item_reports_started_finished_retried_and_failed(tmp_path, monkeypatch, parallel):
    monkeypatch.chdir(tmp_path)
    # item 3 fails once then succeeds; item 7 always fails
    command = (
        'if [ "${item}" = 3 ] && [ ! -e seen ]; then touch seen; exit 1; fi; '
        '[ "${item}" != 7 ] || exit 2; echo ${item}'
    )
    raw = {
        "nodes": [
            {
                "id": "b",
                "type": "shell",
                "params": {"command": command},
                "batch": {
                    "items": list(range(10)),
                    "parallel": parallel,
                    "max_concurrent": 4,
                    "max_retries": 2,
                    "retry_wait": 0,
                    "error_handling": "continue",
                },
            }
        ]
    }
    events, result = run_with_events(raw, tmp_path)
    kinds = Counter(e.kind for e in events)
    assert kinds["item_started"] == 12  # 10 items + one retry of 3 + one retry of 7
    assert kinds["item_finished"] == 9
    assert kinds["item_retried"] == 2
    assert kinds["item_failed"] == 1
    assert [e.kind for e in events][:2] == ["run_started", "node_started"]
    assert [e.kind for e in events][-2:] == ["node_finished", "run_finished"]
    by_index = Counter(e.index for e in events if e.kind == "item_started")
    assert by_index[3] == 2 and by_index[7] == 2 and by_index[0] == 1
    failed = next(e for e in events if e.kind == "item_failed")
    assert failed.index == 7 and failed.attempt == 2 and "code 2" in (failed.error or "")
    slots = {e.slot for e in events if e.kind == "item_started"}
    assert slots <= set(range(4)) and (len(slots) > 1) == parallel
    for e in events:
        if e.kind.startswith("item_") and e.kind != "item_started":
            assert e.duration_ms is not None and e.duration_ms >= 0
    assert result.status == "partial"  # type: ignore[attr-defined]  # item 7 failed

