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



@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_item_events_carry_the_item_key_and_a_key_follows_the_params(executor: str, tmp_path: Path) -> None:
    # The key is made only while the item events are listened to: a listener
    # that subscribes to them must get it on every success and failure alike.
    import plait

    seen: list[Event] = []
    raw = {
        "nodes": [
            {
                "id": "b",
                "type": "code",
                "params": {"code": "assert x != 2\nresult = x", "inputs": {"x": "${item}"}},
                "batch": {"items": [0, 1, 2, 1], "error_handling": "continue", "executor": executor,
                          "parallel": executor == "threads"},
            }
        ]
    }
    result = plait.run(raw, on_event=seen.append)
    assert result.status == "partial"
    done = {e.index: e for e in seen if e.kind in ("item_finished", "item_failed")}
    assert sorted(done) == [0, 1, 2, 3] and done[2].kind == "item_failed"
    keys = {i: e.key for i, e in done.items()}  # type: ignore[attr-defined]
    assert all(isinstance(k, str) and len(k) == 32 for k in keys.values())
    assert keys[1] == keys[3] and len({keys[0], keys[1], keys[2]}) == 3  # same params, same key


def test_an_interrupt_from_the_last_items_event_still_ends_the_batch_interrupted(tmp_path: Path) -> None:
    import threading

    import plait

    cancel = threading.Event()

    def on_event(ev: Event) -> None:
        if ev.kind == "item_finished" and ev.index == 2:  # type: ignore[attr-defined]
            cancel.set()

    raw = {"nodes": [{"id": "b", "type": "echo", "params": {"v": "${item}"}, "batch": {"items": [0, 1, 2]}}]}
    result = plait.run(raw, executor="sequential", on_event=on_event, cancel=cancel)
    assert result.status == "interrupted"
