"""Run records: what `plait runs` and `plait show` tell after a run that
succeeded, failed, was interrupted or was killed — through the real CLI, with
the real SQLite file in $PLAIT_HOME (here: .plait/ of the test's folder)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Result, plait_env, popen_cli
from plait.runtime.records import MIGRATIONS, SCHEMA_VERSION

Plait = Callable[..., Result]
Workflow = Callable[..., str]


@pytest.fixture(autouse=True)
def _default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PLAIT_HOME", str(tmp_path / ".plait"))


def batch_workflow(
    items: list[Any], command: str, *, parallel: bool = True, continue_: bool = True, **batch: Any
) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": "work",
                "type": "shell",
                "params": {"command": command},
                "batch": {
                    "items": items,
                    "parallel": parallel,
                    "max_concurrent": 3,
                    "error_handling": "continue" if continue_ else "fail_fast",
                    **batch,
                },
            },
            {"id": "after", "type": "shell", "params": {"command": "echo finished"}},
        ]
    }


def committed(cwd: Path) -> int:
    try:
        return int(db_rows(cwd, "SELECT count(*) FROM items WHERE status = 'success'")[0][0])
    except sqlite3.OperationalError:
        return 0


def db_rows(cwd: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(cwd / ".plait" / "runs.db")
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def test_a_successful_run_gets_an_id_and_is_listed(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow(batch_workflow([1, 2, 3, 4], "echo item ${item}"), name="four.json")
    result = plait("run", path, "-o", "json")
    assert result.code == 0, result
    run_id = result.json["run_id"]
    assert re.fullmatch(r"[0-9a-f]{8}", run_id)
    assert (tmp_path / ".plait" / "runs.db").exists()

    listing = plait("runs")
    assert listing.code == 0, listing
    header, row = listing.stdout.splitlines()[:2]
    assert header.split() == ["ID", "STARTED", "WORKFLOW", "STATUS", "DURATION", "COST", "ITEMS"]
    assert row.startswith(run_id)
    assert "four.json" in row and "success" in row and "4 ok" in row

    shown = plait("show", run_id[:4])
    assert shown.code == 0, shown
    assert shown.stdout.startswith(f"run {run_id}")
    assert "✓ success" in shown.stdout
    assert re.search(r"✓ work\s+shell\s+success\s+\S+ \S+\s+4/4 ok", shown.stdout)
    assert re.search(r"✓ after\s+shell\s+success", shown.stdout)
    assert "failed items" not in shown.stdout
    assert plait("show", "last").stdout == shown.stdout


def test_records_hold_every_attempt_with_slot_timing_and_outcome(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    # item 2 fails on its first attempt only; item 3 fails for good
    command = (
        "if [ ${item} -eq 3 ]; then echo 'no such thing' >&2; exit 5; fi; "
        "if [ ${item} -eq 2 ] && [ ! -e seen ]; then touch seen; exit 1; fi; echo ok"
    )
    path = workflow(batch_workflow([1, 2, 3, 4, 5], command, max_retries=2, retry_wait=0.01))
    result = plait("run", path, "-o", "json")
    assert result.code == 0, result
    rows = db_rows(
        tmp_path,
        "SELECT idx, attempt, slot, status, started, ended, error FROM items"
        " WHERE node_id = 'work' ORDER BY idx, attempt",
    )
    outcome = [(idx, attempt, status) for idx, attempt, _, status, *_ in rows]
    assert outcome == [
        (0, 1, "success"),
        (1, 1, "retried"),
        (1, 2, "success"),
        (2, 1, "retried"),
        (2, 2, "failed"),
        (3, 1, "success"),
        (4, 1, "success"),
    ]
    for _, _, slot, _, started, ended, _ in rows:
        assert slot in (0, 1, 2)
        assert started <= ended
    assert rows[4][6] == "command exited with code 5: no such thing"
    node = db_rows(
        tmp_path,
        "SELECT status, items_total, items_ok, items_failed, retries, params FROM nodes WHERE node_id = 'work'",
    )[0]
    assert node[:5] == ("partial", 5, 4, 1, 2)
    assert json.loads(node[5]) == {"command": command}


def test_a_failed_run_shows_every_failed_item_with_its_error(
    plait: Plait, workflow: Workflow
) -> None:
    path = workflow(batch_workflow(list(range(8)), "echo \"bad input ${item}\" >&2; test $(( ${item} % 3 )) -ne 0"))
    path2 = workflow(
        {
            "nodes": [
                *json.loads(Path(path).read_text())["nodes"][:1],
                {"id": "check", "type": "shell", "params": {"command": "echo 'quota exceeded' >&2; exit 2"}},
            ]
        }
    )
    result = plait("run", path2)
    assert result.code == 1, result
    run_id = re.search(r"details: plait show ([0-9a-f]{8})", result.stderr)
    assert run_id, result.stderr

    shown = plait("show", run_id.group(1))
    assert shown.code == 0, shown
    assert "✗ failed" in shown.stdout
    assert "error     node 'check' failed: command exited with code 2: quota exceeded" in shown.stdout
    assert "5/8 ok, 3 failed" in shown.stdout
    assert "failed items (3)" in shown.stdout
    for index in (0, 3, 6):
        assert f"work[{index}]  item: {index}\n      command exited with code 1: bad input {index}\n" in shown.stdout

    as_json = plait("show", run_id.group(1), "--json").json
    assert as_json["run"]["status"] == "failed"
    assert [(f["idx"], f["error"]) for f in as_json["failed_items"]] == [
        (i, f"command exited with code 1: bad input {i}") for i in (0, 3, 6)
    ]
    listing = plait("runs").stdout
    assert "failed" in listing and "5 ok, 3 failed" in listing


def test_token_usage_is_recorded_per_item_node_and_run(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow(
        {
            "nodes": [
                {
                    "id": "ask",
                    "type": "llm",
                    "params": {"prompt": "say ${item}", "model": "echo"},
                    "batch": {"items": ["a", "b"]},
                }
            ]
        }
    )
    result = plait("run", path, "-o", "json")
    assert result.code == 0, result
    usage = result.json["llm_usage"]
    run = db_rows(tmp_path, "SELECT llm_calls, input_tokens, output_tokens FROM runs")[0]
    assert run == (usage["calls"], usage["input_tokens"], usage["output_tokens"])
    items = db_rows(tmp_path, "SELECT input_tokens, output_tokens FROM items ORDER BY idx")
    assert len(items) == 2 and all(i > 0 and o > 0 for i, o in items)
    assert sum(i for i, _ in items) == usage["input_tokens"]
    assert f"{usage['calls']} llm calls" in plait("show", "last").stdout


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(path: str, *args: str) -> subprocess.Popen[str]:
        proc = popen_cli("run", path, *args, cwd=tmp_path, env={"PLAIT_PROGRESS_EVERY": "0.2"})
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_items(proc: subprocess.Popen[str], at_least: int) -> int:
    """Read progress lines (`work: 7/40 items, ...`) until enough items are done."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.match(r"work: (\d+)/\d+ items", line)
        if match and int(match.group(1)) >= at_least:
            return int(match.group(1))
    raise AssertionError("no progress seen")


SLOW = batch_workflow(list(range(40)), "sleep 0.1; echo ${item}", continue_=False)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_exits_130_and_is_recorded_as_interrupted(
    running: Callable[..., subprocess.Popen[str]],
    workflow: Workflow,
    plait: Plait,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    proc = running(workflow(SLOW), "-o", "json")
    seen = wait_for_items(proc, 4)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    message = re.search(r"interrupted: 0 of 2 nodes finished; 'work' finished (\d+) of 40 items", stderr)
    assert message, stderr
    finished = int(message.group(1))
    assert seen <= finished < 40
    payload = json.loads(stdout)
    assert payload["status"] == "interrupted"
    run_id = payload["run_id"]
    assert f"details: plait show {run_id}" in stderr

    run = db_rows(tmp_path, "SELECT status, error, ended FROM runs WHERE run_id = ?", run_id)[0]
    assert run[0] == "interrupted" and run[2] is not None
    ok = db_rows(tmp_path, "SELECT count(*) FROM items WHERE node_id = 'work' AND status = 'success'")[0][0]
    assert ok >= seen
    nodes = dict(db_rows(tmp_path, "SELECT node_id, status FROM nodes"))
    assert nodes == {"work": "interrupted", "after": "not_run"}

    shown = plait("show", run_id).stdout
    assert "⏹ interrupted" in shown
    assert re.search(r"after\s+shell\s+not run", shown)
    assert run_id in plait("runs").stdout.splitlines()[1]


def test_items_stopped_by_an_interrupt_are_interrupted_not_failed(
    running: Callable[..., subprocess.Popen[str]], workflow: Workflow, plait: Plait, tmp_path: Path
) -> None:
    # Items 0-2 finish at once; the next three are in flight (sleeping) when Ctrl-C kills them.
    wf = batch_workflow(list(range(10)), "[ ${item} -lt 3 ] || { touch started-${item}; sleep 30; }", continue_=False)
    proc = running(workflow(wf), "-o", "json")
    wait_for_items(proc, 3)
    deadline = time.monotonic() + 15
    while len(list(tmp_path.glob("started-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "'work' finished 3 of 10 items\n" in stderr
    assert "failed" not in stderr and "outputs above" not in stderr
    payload = json.loads(stdout)
    assert payload["nodes"]["work"]["error"] == "interrupted"

    statuses = db_rows(tmp_path, "SELECT status, count(*) FROM items GROUP BY status")
    assert dict(statuses) == {"success": 3, "interrupted": 3}
    shown = plait("show", payload["run_id"]).stdout
    assert "failed" not in shown


def test_a_killed_run_leaves_a_record_true_up_to_the_last_flush(
    running: Callable[..., subprocess.Popen[str]], workflow: Workflow, plait: Plait, tmp_path: Path
) -> None:
    proc = running(workflow(batch_workflow(list(range(40)), "sleep 0.2", continue_=False)))
    seen = wait_for_items(proc, 6)
    deadline = time.monotonic() + 15  # until the writer has committed what progress showed
    while committed(tmp_path) < seen and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    shown = plait("show", "last")
    assert shown.code == 0, shown
    assert "† died" in shown.stdout
    ok = db_rows(tmp_path, "SELECT count(*) FROM items WHERE status = 'success'")[0][0]
    assert ok >= seen
    assert "died" in plait("runs").stdout


def test_runs_are_recorded_under_plait_home_when_set(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    home = tmp_path / "elsewhere"
    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    assert plait("run", path, env={"PLAIT_HOME": str(home)}).code == 0
    assert (home / "runs.db").exists()
    assert not (tmp_path / ".plait").exists()
    assert "success" in plait("runs", env={"PLAIT_HOME": str(home)}).stdout
    nothing = plait("runs")
    assert nothing.code == 0
    assert nothing.stdout == f"no runs recorded yet in {tmp_path / '.plait'}\n"
    assert plait("show", "last").code == 2


def test_by_default_runs_live_in_the_users_data_directory_and_are_found_from_any_folder(
    plait: Plait, workflow: Workflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLAIT_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    project = tmp_path / "project"
    project.mkdir()
    run_id = plait("run", path, "-q", "-o", "json", cwd=project).json["run_id"]
    assert (tmp_path / "home" / ".local" / "share" / "plait" / "runs.db").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert run_id in plait("runs", cwd=elsewhere).stdout
    assert not (project / ".plait").exists()
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    plait("run", path, "-q", cwd=project)
    assert (tmp_path / "xdg" / "plait" / "runs.db").exists()


def test_show_explains_an_unknown_or_ambiguous_run(plait: Plait, workflow: Workflow) -> None:
    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    ids = set()
    while True:  # two runs whose ids share a first digit
        ids.add(plait("run", path, "-q", "-o", "json").json["run_id"])
        firsts = [i[0] for i in ids]
        shared = {c for c in firsts if firsts.count(c) > 1}
        if shared:
            break
    unknown = plait("show", "zzzz")
    assert unknown.code == 2
    assert "no run with id 'zzzz'" in unknown.stderr and "plait runs" in unknown.stderr
    ambiguous = plait("show", shared.pop())
    assert ambiguous.code == 2
    assert "matches several runs" in ambiguous.stderr


def test_an_old_records_database_is_migrated_and_keeps_its_runs(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    folder = tmp_path / ".plait"
    folder.mkdir()
    conn = sqlite3.connect(folder / "runs.db")
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (run_id, workflow, inputs, status, started, ended, duration_ms, items_ok)"
        " VALUES ('0ldrun00', 'old.json', '{}', 'success', 1700000000, 1700000002, 2000, 7)"
    )
    conn.commit()
    conn.close()

    listing = plait("runs")
    assert listing.code == 0, listing
    assert "0ldrun00" in listing.stdout and "old.json" in listing.stdout and "7 ok" in listing.stdout
    assert db_rows(tmp_path, "PRAGMA user_version")[0][0] == SCHEMA_VERSION
    columns = {row[1] for row in db_rows(tmp_path, "PRAGMA table_info(items)")}
    assert {"input_tokens", "output_tokens"} <= columns

    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    assert plait("run", path).code == 0
    statuses = [line.split()[4] for line in plait("runs").stdout.splitlines()[1:]]
    assert statuses == ["success", "success"]
    assert "old.json" in plait("show", "0ld").stdout


def test_records_from_a_newer_plait_are_left_alone_and_the_run_still_works(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    folder = tmp_path / ".plait"
    folder.mkdir()
    conn = sqlite3.connect(folder / "runs.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    result = plait("run", path)
    assert result.code == 0, result
    assert result.stdout == "hi\n"
    assert "warning: this run is not recorded: the run records were written by a newer plait" in result.stderr


def test_no_record_leaves_no_trace(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    result = plait("run", path, "--no-record", "-o", "json")
    assert result.code == 0
    assert result.json["run_id"] is None
    assert not (tmp_path / ".plait").exists()


def test_the_records_folder_ignores_itself_in_git(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow({"nodes": [{"id": "hi", "type": "shell", "params": {"command": "echo hi"}}]})
    plait("run", path)
    assert (tmp_path / ".plait" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert os.path.getsize(tmp_path / ".plait" / "runs.db") > 0


def test_a_records_database_locked_for_a_while_does_not_stop_recording(
    workflow: Workflow, plait: Plait, tmp_path: Path
) -> None:
    home = tmp_path / ".plait"
    assert plait("run", workflow({"nodes": [{"id": "a", "type": "echo", "params": {"v": 1}}]}), "-q").code == 0
    # another program takes the database and keeps it past the busy timeout
    holder = sqlite3.connect(home / "runs.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    wf = batch_workflow(list(range(12)), "sleep 0.1; echo ${item}", parallel=False)
    proc = popen_cli("run", workflow(wf), "-o", "json", cwd=tmp_path, env={"PLAIT_RECORDS_BUSY_TIMEOUT": "0.2"})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "cannot be written now" not in line:
            line = proc.stderr.readline()
        assert "the records database is locked by another program" in line, line
        holder.execute("ROLLBACK")  # let go while the run goes on
        holder.close()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "the run record caught up" in err
    assert "incomplete" not in err
    run_id = json.loads(out)["run_id"]
    rows = db_rows(tmp_path, "SELECT count(*) FROM items i JOIN runs r ON i.run = r.id WHERE r.run_id = ?", run_id)
    assert rows[0][0] == 13  # every attempt (12 items and the node after), none lost
    status, note = db_rows(tmp_path, "SELECT status, record_note FROM runs WHERE run_id = ?", run_id)[0]
    assert status == "success" and note is None


def test_a_full_disk_under_the_records_is_said_clearly_and_the_run_goes_on(
    workflow: Workflow, tmp_path: Path
) -> None:
    disk = tmp_path / "records-disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount here")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        wf = batch_workflow(list(range(3000)), "echo ${item}", parallel=True)
        wf["nodes"][0]["type"] = "echo"
        wf["nodes"][0]["params"] = {"value": "${item}", "padding": "x" * 200}
        result = subprocess.run(
            [sys.executable, "-m", "plait", "run", workflow(wf), "-o", "json"],
            capture_output=True,
            text=True,
            env=plait_env({"PLAIT_HOME": str(disk), "PLAIT_RECORDS_BUSY_TIMEOUT": "0.2"}),
            cwd=tmp_path,
            timeout=120,
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"]["work"]["items"]["succeeded"] == 3000  # the run is untouched
    assert "the run record cannot be written now: the disk under" in result.stderr, result.stderr
    assert "is full or failing" in result.stderr
    assert "warning: the run record is incomplete" in result.stderr
    assert "cannot rollback" not in result.stderr and "Traceback" not in result.stderr
