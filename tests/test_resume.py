"""Durable runs: a finished item is never paid for twice (issue "Durable runs").

Every test goes through the real CLI; items append to a log file, so the log
shows how often each one really ran.
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

import pytest

from conftest import Result, popen_cli

Plait = Callable[..., Result]
Workflow = Callable[..., str]


def runs_log(tmp_path: Path) -> Counter[str]:
    log = tmp_path / "ran.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def logging_batch(items: list[Any], *, seconds: float = 0.0, fail_marker: str | None = None,
                  concurrency: int = 4, command: str | None = None) -> dict[str, Any]:
    body = command or f"echo ${{item}} >> ran.log; sleep {seconds}"
    if fail_marker:
        body += f"; [ ${{item}} != {fail_marker} ] || [ -e fixed ] || exit 3"
    body += "; echo done-${item}"
    return {
        "inputs": {"items": {"type": "array"}},
        "nodes": [
            {
                "id": "work",
                "type": "shell",
                "params": {"command": body},
                "batch": {"items": "${items}", "parallel": True, "max_concurrent": concurrency,
                          "error_handling": "continue"},
            },
            {"id": "report", "type": "code", "params": {"code": "result = [r['stdout'] for r in rs]",
                                                        "inputs": {"rs": "${work.results}"}}},
        ],
        "outputs": {"lines": {"source": "${report.result}"}},
    }


def db(tmp_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(Path(os.environ["PLAIT_HOME"]) / "runs.db")


def committed(tmp_path: Path) -> int:
    path = Path(os.environ["PLAIT_HOME"]) / "runs.db"
    if not path.exists():
        return 0
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT count(*) FROM items WHERE node_id = 'work' AND status = 'success'").fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


@pytest.mark.parametrize("killed_after", [3, 11, 22])
def test_a_run_killed_mid_batch_resumes_running_each_item_once_plus_the_window(
    tmp_path: Path, workflow: Workflow, plait: Plait, killed_after: int
) -> None:
    items = list(range(40))  # the last kill still leaves 18 items (0.7 s) to go, even on a loaded machine
    path = workflow(logging_batch(items, seconds=0.15))
    proc = popen_cli("run", path, f"items={json.dumps(items)}", "-q", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while committed(tmp_path) < killed_after and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)  # right after a commit: what it holds is durable
        proc.wait(timeout=10)
    finally:
        proc.kill()
    first = runs_log(tmp_path)
    assert killed_after <= sum(first.values()) < len(items)
    r = plait("resume", "last", "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"]["lines"] == [f"done-{i}" for i in items]  # in input order, all of them
    ran = runs_log(tmp_path)
    assert set(ran) == {str(i) for i in items}
    twice = [k for k, n in ran.items() if n > 1]
    assert all(n <= 2 for n in ran.values())
    # at-least-once: only what was in flight (4 at a time) and what ended in the moments
    # between the last commit and the kill run again
    assert len(twice) <= 4 + 2, twice
    assert r.json["resumed_from"]["reused"] >= killed_after


def test_ctrl_c_then_resume_finishes_the_rest(tmp_path: Path, workflow: Workflow, plait: Plait) -> None:
    items = list(range(16))
    path = workflow(logging_batch(items, seconds=0.1, concurrency=2))
    proc = popen_cli("run", path, f"items={json.dumps(items)}", "-o", "json", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while sum(runs_log(tmp_path).values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    payload = json.loads(out)
    assert payload["status"] == "interrupted"
    assert payload["resume"] == f"plait resume {payload['run_id']}"
    assert f"resume:  plait resume {payload['run_id']}" in err
    r = plait("resume", payload["run_id"], "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"]["lines"] == [f"done-{i}" for i in items]
    ran = runs_log(tmp_path)
    assert set(ran) == {str(i) for i in items}
    assert sum(ran.values()) <= len(items) + 2  # the two in flight at Ctrl-C may run again
    assert r.json["resumed_from"]["run_id"] == payload["run_id"]


def test_resume_reruns_failed_items_or_keeps_them_with_only_unfinished(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    items = list(range(8))
    path = workflow(logging_batch(items, fail_marker="5"))
    first = plait("run", path, f"items={json.dumps(items)}", "-o", "json", "-q")
    assert first.json["status"] == "partial"
    kept = plait("resume", first.json["run_id"], "--only-unfinished", "-o", "json", "-q")
    assert kept.json["status"] == "partial"
    assert sum(runs_log(tmp_path).values()) == 8  # nothing ran again
    (tmp_path / "fixed").touch()
    fixed = plait("resume", first.json["run_id"], "-o", "json")
    assert fixed.code == 0 and fixed.json["status"] == "success", fixed
    assert "resuming run" in fixed.stderr and "rerun 1 failed" in fixed.stderr
    assert runs_log(tmp_path)["5"] == 2 and sum(runs_log(tmp_path).values()) == 9
    forced = plait("resume", fixed.json["run_id"], "--rerun", "work", "-o", "json", "-q")
    assert forced.json["status"] == "success"
    assert sum(runs_log(tmp_path).values()) == 17  # --rerun ran every item of 'work' again
    wrong = plait("resume", fixed.json["run_id"], "--rerun", "wrk")
    assert wrong.code == 2 and "did you mean 'work'?" in wrong.stderr


def test_items_are_matched_by_content_when_the_input_is_reordered_or_changed(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    path = workflow(logging_batch([], seconds=0))
    before = ["a", "b", "c", "d", "e"]
    first = plait("run", path, f"items={json.dumps(before)}", "-o", "json", "-q")
    assert first.code == 0
    after = ["e", "x", "c", "a", "a", "d"]  # reordered, b deleted, x inserted, a duplicated
    r = plait("run", path, f"items={json.dumps(after)}", "--resume", first.json["run_id"], "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"]["lines"] == [f"done-{i}" for i in after]
    ran = runs_log(tmp_path)
    # e, c, a, d reused; x is new; the second a is a second occurrence: it runs
    assert ran == Counter({"a": 2, "b": 1, "c": 1, "d": 1, "e": 1, "x": 1})


def test_an_edited_node_and_what_follows_it_run_again_the_rest_is_reused(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    def wf(prompt: str) -> dict[str, Any]:
        return {
            "nodes": [
                {"id": "fetch", "type": "shell", "params": {"command": "echo fetch >> ran.log; echo '[1, 2, 3]'"}},
                {"id": "ask", "type": "shell",
                 "params": {"command": f"echo ask-${{item}} >> ran.log; echo '{prompt} ${{item}}'"},
                 "batch": {"items": "${fetch.stdout}"}},
                {"id": "other", "type": "shell", "params": {"command": "echo other >> ran.log; echo side"}},
                {"id": "join", "type": "shell",
                 "params": {"command": "echo join >> ran.log; echo ${ask.results[0].stdout}"}},
            ]
        }

    path = tmp_path / "flow.json"
    path.write_text(json.dumps(wf("rate")))
    first = plait("run", str(path), "-o", "json", "-q")
    assert first.code == 0, first
    path.write_text(json.dumps(wf("score")))  # the prompt of 'ask' changes
    r = plait("resume", first.json["run_id"], "-o", "json")
    assert r.code == 0, r
    assert "1 node changed (ask)" in r.stderr
    assert r.json["outputs"]["stdout"] == "score 1"
    ran = runs_log(tmp_path)
    assert ran == Counter({"fetch": 1, "other": 1, "ask-1": 2, "ask-2": 2, "ask-3": 2, "join": 2})


def test_resuming_a_run_that_still_runs_is_refused(tmp_path: Path, workflow: Workflow, plait: Plait) -> None:
    path = workflow({"nodes": [{"id": "slow", "type": "shell", "params": {"command": "touch started; sleep 30"}}]})
    proc = popen_cli("run", path, "-q", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        r = plait("resume", "last")
        assert r.code == 2, r
        assert "is still running" in r.stderr
    finally:
        proc.kill()
        proc.wait()


def test_secret_inputs_are_not_recorded_and_must_be_given_again(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    wf = {
        "inputs": {"api_token": {"type": "string"}, "region": {"type": "string"}},
        "nodes": [{"id": "use", "type": "shell", "params": {"command": "echo ${region} >> ran.log; exit 4"}}],
    }
    path = workflow(wf)
    first = plait("run", path, "api_token=sk-very-secret-123", "region=eu", "-q", "-o", "json")
    assert first.code == 1
    r = plait("resume", first.json["run_id"])
    assert r.code == 2 and "secret inputs that were not recorded: api_token" in r.stderr
    assert "api_token=..." in r.stderr
    r = plait("resume", first.json["run_id"], "api_token=sk-very-secret-123", "-q")
    assert r.code == 1 and runs_log(tmp_path)["eu"] == 2  # region came from the record


def test_outputs_of_every_node_are_recorded_large_ones_as_files(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    wf = {
        "nodes": [
            {"id": "big", "type": "code", "params": {"code": "result = 'x' * 200000"}},
            {"id": "small", "type": "echo", "params": {"v": "${big.result}", "n": 3}},
        ]
    }
    r = plait("run", workflow(wf), "-o", "json", "-q")
    assert r.code == 0
    conn = db(tmp_path)
    try:
        rows = dict(
            conn.execute(
                "SELECT node_id, coalesce(outputs, 'ref:' || outputs_ref) FROM items i JOIN runs r ON i.run = r.id"
                " WHERE r.run_id = ?",
                (r.json["run_id"],),
            ).fetchall()
        )
    finally:
        conn.close()
    assert rows["big"].startswith("ref:")
    blob = Path(os.environ["PLAIT_HOME"]) / "blobs" / rows["big"][4:6] / rows["big"][4:]
    assert json.loads(blob.read_text())["result"] == "x" * 200000
    assert rows["small"].startswith("ref:")  # it holds the big value too


def test_item_key_and_attempt_are_templates_for_idempotency(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    wf = {
        "nodes": [
            {
                "id": "send",
                "type": "shell",
                "params": {"command": "echo ${item} ${__item_key__} ${__attempt__} >> sent.log; "
                           "[ -e again-${item} ] || { touch again-${item}; exit 1; }"},
                "batch": {"items": ["a", "b", "a"], "max_retries": 2},
            }
        ]
    }
    r = plait("run", workflow(wf), "-q")
    assert r.code == 0, r
    lines = [line.split() for line in (tmp_path / "sent.log").read_text().splitlines()]
    keys = {item: key for item, key, _ in lines}
    assert len(keys["a"]) == 32 and keys["a"] != keys["b"]
    assert [(item, attempt) for item, _, attempt in lines[:3]] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert len({key for _, key, _ in lines}) == 2  # the same item has the same key on every attempt


def test_items_whose_outputs_held_secrets_run_again_on_resume(
    tmp_path: Path, workflow: Workflow, plait: Plait
) -> None:
    wf = {
        "nodes": [
            {"id": "login", "type": "shell",
             "params": {"command": """echo login >> ran.log; echo '{"access_token": "tok-9d8c7b6a5f4e"}'"""}},
            {"id": "use", "type": "shell",
             "params": {"command": "echo use >> ran.log; [ -e go ] || exit 2; echo ${login.stdout.access_token}"}},
        ]
    }
    path = workflow(wf)
    first = plait("run", path, "-q", "-o", "json")
    assert first.code == 1
    (tmp_path / "go").touch()
    r = plait("resume", first.json["run_id"], "-o", "json", "-q")
    assert r.code == 0 and r.json["outputs"]["stdout"] == "***"  # masked in -o json
    assert runs_log(tmp_path) == Counter({"login": 2, "use": 2})  # the token was not kept: login ran again
