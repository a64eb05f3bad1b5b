"""A resumed run's own record of the items it reused (copied from the earlier
run's rows by SQLite): every reused item once, at its new index, with its
outputs, status, attempts, key and ``reused_from``; its preview is the new
item's; outputs holding a secret this run knows are masked. Through the real
CLI and the real records database.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Result, popen_cli

Plait = Callable[..., Result]
Workflow = Callable[..., str]

_COLUMNS = "idx, attempt, slot, status, error, preview, key, outputs, outputs_ref, outputs_masked, action, reused_from"


def records() -> sqlite3.Connection:
    conn = sqlite3.connect(Path(os.environ["PLAIT_HOME"]) / "runs.db")
    conn.row_factory = sqlite3.Row
    return conn


def item_rows(run_id: str, node: str = "echo") -> list[dict[str, Any]]:
    conn = records()
    try:
        rows = conn.execute(
            f"SELECT {_COLUMNS}, started, ended FROM items WHERE run = (SELECT id FROM runs WHERE run_id = ?)"
            " AND node_id = ? ORDER BY idx, rowid",
            (run_id, node),
        ).fetchall()
    finally:
        conn.close()
    return [dict(r) for r in rows]


def echo_batch(**batch: Any) -> dict[str, Any]:
    # the key holds only item.v: an item whose note changed is the same item, with a new preview
    return {
        "inputs": {"items": {"type": "array"}},
        "nodes": [
            {"id": "echo", "type": "echo", "params": {"value": "${item.v}", "label": "item ${item.v}"},
             "batch": {"items": "${items}", "parallel": False, "error_handling": "continue", **batch}},
        ],
        "outputs": {"results": {"source": "${echo.results}"}},
    }


def test_a_resumed_run_records_each_reused_item_once_as_it_was_and_a_resume_of_it_reuses_them(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    path = workflow(echo_batch())
    before = [{"v": i, "note": "n"} for i in range(300)]
    first = plait("run", path, f"items={json.dumps(before)}", "-o", "json", "-q")
    assert first.code == 0, first
    # rows 0-99 unchanged, 100-149 moved to the end, 150 deleted, a new item, and
    # item 200's note changed (the same key: reused, but its preview is the new one)
    after = before[:100] + before[151:] + [{"v": 1000, "note": "new"}] + before[100:150]
    after = [dict(x, note="edited") if x["v"] == 200 else x for x in after]
    second = plait("run", path, f"items={json.dumps(after)}", "--resume", first.json["run_id"], "-o", "json", "-q")
    assert second.code == 0, second
    assert second.json["resumed_from"]["reused"] == len(after) - 1
    expected = [{"index": i, "item": x, "attempts": 1, "value": x["v"], "label": f"item {x['v']}"}
                for i, x in enumerate(after)]
    assert second.json["outputs"]["results"] == expected  # in the new input order, outputs included

    old = {r["key"]: r for r in item_rows(first.json["run_id"])}
    rows = item_rows(second.json["run_id"])
    assert [r["idx"] for r in rows] == list(range(len(after)))  # every item once
    for row, item in zip(rows, after, strict=True):
        assert row["preview"] == json.dumps(item)
        if item["v"] == 1000:
            assert row["reused_from"] is None and row["key"] not in old
            continue
        was = old[row["key"]]
        assert row["reused_from"] == first.json["run_id"]
        assert json.loads(row["outputs"]) == {"value": item["v"], "label": f"item {item['v']}"}
        for column in ("attempt", "status", "error", "key", "outputs", "outputs_ref", "outputs_masked", "action"):
            assert row[column] == was[column], (column, row, was)
        assert row["started"] == row["ended"] and row["started"] >= was["ended"]
    times = [r["started"] for r in rows if r["reused_from"]]
    assert times == sorted(times)  # reused in input order, each at its moment

    conn = records()
    try:
        run = conn.execute("SELECT status, items_ok, items_failed FROM runs WHERE run_id = ?",
                           (second.json["run_id"],)).fetchone()
        node = conn.execute("SELECT nodes.items_ok, nodes.items_total FROM nodes JOIN runs ON runs.id = nodes.run"
                            " WHERE run_id = ? AND node_id = 'echo'", (second.json["run_id"],)).fetchone()
    finally:
        conn.close()
    assert tuple(run) == ("success", len(after), 0)
    assert tuple(node) == (len(after), len(after))

    shown = plait("show", second.json["run_id"], "--json")
    assert shown.code == 0, shown
    assert second.json["run_id"] in shown.stdout

    # A resume of the resumed run finds every item in that run's record (the copied rows too).
    third = plait("run", path, f"items={json.dumps(after)}", "--resume", second.json["run_id"], "-o", "json", "-q")
    assert third.code == 0, third
    assert third.json["resumed_from"]["reused"] == len(after)
    assert third.json["outputs"]["results"] == expected
    again = item_rows(third.json["run_id"])
    assert [r["reused_from"] for r in again] == [second.json["run_id"]] * len(after)
    assert [(r["idx"], r["key"], r["outputs"], r["preview"]) for r in again] == [
        (r["idx"], r["key"], r["outputs"], r["preview"]) for r in rows
    ]


def test_reused_outputs_holding_a_secret_this_run_knows_are_recorded_masked(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    secret = "s3cr3t-value-9d8c7b6a"
    path = workflow(echo_batch())
    items = [{"v": i, "note": "n"} for i in range(5)]
    items[2]["v"] = secret
    first = plait("run", path, f"items={json.dumps(items)}", "-o", "json", "-q")
    assert first.code == 0, first
    assert secret in {json.loads(r["outputs"])["value"] for r in item_rows(first.json["run_id"])}
    # this run holds the value as a secret (an environment variable with a secret-looking name)
    second = plait("run", path, f"items={json.dumps(items)}", "--resume", first.json["run_id"], "-o", "json", "-q",
                   env={"MY_SERVICE_TOKEN": secret})
    assert second.code == 0, second
    rows = item_rows(second.json["run_id"])
    assert len(rows) == 5
    assert all(secret not in (r["outputs"] or "") and secret not in (r["preview"] or "") for r in rows)
    assert [r["outputs_masked"] for r in rows] == [None, None, 1, None, None]
    assert [r["reused_from"] for r in rows] == [first.json["run_id"]] * 5


def _committed(run_id: str) -> int:
    try:
        conn = records()
        try:
            row = conn.execute("SELECT count(*) FROM items JOIN runs ON runs.id = items.run"
                               " WHERE run_id = ? AND node_id = 'work' AND items.status = 'success'",
                               (run_id,)).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0
    return int(row[0])


def _last_run_id() -> str | None:
    try:
        conn = records()
        try:
            row = conn.execute("SELECT run_id FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def test_a_resume_killed_mid_batch_resumed_again_reuses_what_both_runs_finished(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    items = list(range(60))
    # items under 30 succeed at once; the others fail until 'fixed' exists, then take 0.15 s
    command = ("echo ${item} >> ran.log; [ ${item} -lt 30 ] || { [ -e fixed ] || exit 3; sleep 0.15; };"
               " echo done-${item}")
    wf = {
        "inputs": {"items": {"type": "array"}},
        "nodes": [{"id": "work", "type": "shell", "params": {"command": command},
                   "batch": {"items": "${items}", "parallel": True, "max_concurrent": 2,
                             "error_handling": "continue"}}],
        "outputs": {"results": {"source": "${work.results}"}},
    }
    path = workflow(wf)
    first = plait("run", path, f"items={json.dumps(items)}", "-o", "json", "-q")
    assert first.code == 0 and first.json["status"] == "partial", first
    (tmp_path / "fixed").touch()
    proc = popen_cli("resume", first.json["run_id"], "-q", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        killed: str | None = None
        while time.monotonic() < deadline:
            run_id = _last_run_id()
            if run_id != first.json["run_id"] and run_id is not None and _committed(run_id) >= 34:
                killed = run_id
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    assert killed is not None
    held = item_rows(killed, "work")
    assert [r["idx"] for r in held if r["reused_from"]] == list(range(30))  # the copied rows were committed
    assert len({r["idx"] for r in held}) == len(held)

    r = plait("resume", "last", "-o", "json", "-q")
    assert r.code == 0 and r.json["status"] == "success", r
    assert [x["stdout"] for x in r.json["outputs"]["results"]] == [f"done-{i}" for i in items]
    ran = Counter(map(int, (tmp_path / "ran.log").read_text().split()))
    assert all(ran[i] == 1 for i in range(30))  # reused twice, never run again
    finished = {row["idx"] for row in held if row["status"] == "success"}
    assert all(ran[i] == 2 for i in finished if i >= 30)  # failed once, then run once: reused after the kill
    rows = item_rows(r.json["run_id"], "work")
    assert [row["idx"] for row in rows] == items  # exactly one recorded outcome per item
    assert all(row["reused_from"] == killed for row in rows if row["idx"] in finished)
    assert all(json.loads(row["outputs"])["stdout"] == f"done-{row['idx']}" for row in rows)
