"""Outcomes a user can trust (issue "Honest outcomes"): partial runs, one vocabulary
of statuses, runs that died, where the records live."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Result, popen_cli

Plait = Callable[..., Result]
Workflow = Callable[..., str]


def failing_batch(items: int = 4, fail_every: int = 1, **batch: Any) -> dict[str, Any]:
    command = f"[ $(( ${{item}} % {fail_every} )) -ne 0 ] || {{ echo 'bad item' >&2; exit 3; }}; echo ok"
    return {
        "nodes": [
            {
                "id": "work",
                "type": "shell",
                "params": {"command": command},
                "batch": {"items": list(range(items)), "error_handling": "continue", **batch},
            }
        ]
    }


# -- partial


def test_a_batch_whose_items_all_failed_is_partial_not_a_plain_success(plait: Plait, workflow: Workflow) -> None:
    wf = workflow(failing_batch())
    r = plait("run", wf)
    assert r.code == 0, r  # finished: exit 0 by default
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("⚠ partial: 4 of 4 items failed in 'work'"), r.stderr
    assert "plait show " in last
    assert "⚠ work  4 items, 4 failed" in r.stderr

    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0
    out = r.json
    assert out["status"] == "partial" and out["strict"] is False
    assert out["errors"] == [{"node_id": "work", "message": "4 of 4 items failed", "failed": 4, "index": 0}]
    node = out["nodes"]["work"]
    assert node["status"] == "partial"
    assert node["items"] == {"count": 4, "succeeded": 0, "failed": 4}
    assert [e["index"] for e in node["item_errors"]] == [0, 1, 2, 3]
    assert "bad item" in node["item_errors"][0]["error"]


def test_strict_or_fail_on_item_errors_makes_a_partial_run_exit_1(plait: Plait, workflow: Workflow) -> None:
    wf = failing_batch(items=6, fail_every=3)
    r = plait("run", workflow(wf), "--strict", "-q")
    assert r.code == 1, r
    assert "partial: 2 of 6 items failed in 'work' (exit 1: --strict" in r.stderr
    r = plait("run", workflow({**wf, "fail_on_item_errors": True}), "-o", "json", "-q")
    assert r.code == 1
    assert r.json["status"] == "partial" and r.json["strict"] is True
    r = plait("run", workflow({**wf, "fail_on_item_errors": "yes"}))
    assert r.code == 2 and "fail_on_item_errors must be true or false" in r.stderr


def test_a_batch_without_failures_is_a_success(plait: Plait, workflow: Workflow) -> None:
    wf = failing_batch(items=3, fail_every=1000)
    wf["nodes"][0]["batch"]["items"] = [1, 2, 3]
    r = plait("run", workflow(wf), "-o", "json", "-q")
    assert r.code == 0 and r.json["status"] == "success" and r.json["errors"] == []
    assert r.json["nodes"]["work"]["items"] == {"count": 3, "succeeded": 3, "failed": 0}


def test_a_partial_run_is_partial_in_the_records_and_in_show(plait: Plait, workflow: Workflow) -> None:
    r = plait("run", workflow(failing_batch(items=5, fail_every=2)), "-q", "-o", "json")
    run_id = r.json["run_id"]
    shown = plait("show", run_id).stdout
    assert f"run {run_id}  ⚠ partial" in shown
    assert "failed    3 of 5 items failed in 'work'" in shown
    listed = plait("runs", "--json").json
    assert listed[0]["status"] == "partial"
    record = plait("show", run_id, "--json").json
    assert record["nodes"][0]["status"] == "partial"


# -- one vocabulary


def test_an_interrupted_run_says_the_same_everywhere(tmp_path: Path, workflow: Workflow, plait: Plait) -> None:
    wf = {
        "nodes": [
            {"id": "slow", "type": "shell", "params": {"command": "touch started; sleep 30"}},
            {"id": "after", "type": "shell", "params": {"command": "echo after"}},
        ]
    }
    proc = popen_cli("run", workflow(wf), "-o", "json", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    payload = json.loads(out)
    assert payload["status"] == "interrupted"
    assert {k: v["status"] for k, v in payload["nodes"].items()} == {"slow": "interrupted", "after": "not_run"}
    record = plait("show", payload["run_id"], "--json").json
    assert record["run"]["status"] == "interrupted"
    assert {n["node_id"]: n["status"] for n in record["nodes"]} == {"slow": "interrupted", "after": "not_run"}
    shown = plait("show", payload["run_id"]).stdout
    assert "interrupted" in shown and "not run" in shown and "skipped" not in shown and "pending" not in shown
    page = tmp_path / "t.html"
    assert plait("timeline", payload["run_id"], "-o", str(page)).code == 0
    html = page.read_text()
    assert 'class="pill interrupted"' in html and 'class="pill not_run">not run<' in html


# -- a run that died


def test_a_killed_run_shows_as_died_with_its_last_known_duration(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    wf = {
        "nodes": [
            {
                "id": "work",
                "type": "shell",
                "params": {"command": "touch started-${item}; sleep 30"},
                "batch": {"items": [1, 2], "parallel": True},
            }
        ]
    }
    proc = popen_cli("run", workflow(wf), cwd=tmp_path)
    db = Path(os.environ["PLAIT_HOME"]) / "runs.db"
    try:
        deadline = time.monotonic() + 15
        while len(list(tmp_path.glob("started-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # one commit of the writer after the node started: the node is recorded as running
        while not _node_running(db) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    first = plait("show", "last", "--json").json
    assert first["run"]["status"] == "died"
    assert first["nodes"][0]["status"] == "died"
    duration = first["run"]["duration_ms"]
    assert duration is not None and duration > 0
    time.sleep(0.3)
    again = plait("show", "last", "--json").json
    assert again["run"]["duration_ms"] == duration  # the last known one, not one that keeps growing
    text = plait("show", "last").stdout
    assert "† died" in text and "work" in text
    assert "died" in plait("runs").stdout


def _node_running(db: Path) -> bool:
    if not db.exists():
        return False
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT status FROM nodes WHERE node_id = 'work'").fetchone()
        return row is not None and row[0] == "running"
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


@pytest.mark.parametrize("status", ["success", "partial", "failed", "interrupted", "not_run", "died"])
def test_the_timeline_styles_every_status(status: str) -> None:
    from plait.cli.timeline import _asset

    assert f".pill.{status}" in _asset("timeline.css")
