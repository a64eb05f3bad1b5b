"""Concurrent branches (issue 13, point 3): independent branches of the graph run
at the same time, bounded by max_parallel_nodes, with joins, error edges,
fail-fast and interrupts as SPEC §3 has them.

Overlap is proved by a rendezvous, not by timing: each of two branches writes
its own flag file and then waits (bounded) for the other's, so run one after
the other the first branch gives up and fails.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import plait as api
from conftest import Result, popen_cli
from plait.runtime.events import (
    BatchStarted,
    Event,
    EventBus,
    ItemFailed,
    ItemFinished,
    Location,
    NodeFinished,
    NodeStarted,
)
from servers import LocalServer, Reply, Request

Plait = Callable[..., Result]
Workflow = Callable[..., str]

#: how long a rendezvous waits for the other side (bounded: a broken scheduler fails, never hangs)
MEET_S = 15


def meet(node_id: str, other: str, folder: Path, then: str = "") -> dict[str, Any]:
    """A shell node that raises its flag, waits for ``other``'s, then prints its id."""
    mine, theirs = folder / f"{node_id}.flag", folder / f"{other}.flag"
    polls = MEET_S * 20
    command = (
        f"touch '{mine}'; i=0; while [ ! -e '{theirs}' ] && [ $i -lt {polls} ]; do sleep 0.05; i=$((i+1)); done; "
        f"[ -e '{theirs}' ] || {{ echo 'no sign of {other}' >&2; exit 9; }}; {then}printf {node_id}"
    )
    return {"id": node_id, "type": "shell", "params": {"command": command}}


def shell(node_id: str, command: str) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command}}


def edge(a: str, b: str, action: str | None = None) -> dict[str, str]:
    return {"from": a, "to": b, **({"action": action} if action else {})}


def log(node_id: str, folder: Path) -> dict[str, Any]:
    return shell(node_id, f"echo {node_id} >> '{folder / 'order.log'}'")


def order(folder: Path) -> list[str]:
    path = folder / "order.log"
    return path.read_text().split() if path.exists() else []


class Watch:
    """An event subscriber: the running top-level nodes at every moment (events arrive one at a time)."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.peak = 0
        self.overlaps: set[frozenset[str]] = set()
        self.started: list[str] = []

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, NodeStarted) and ev.loc.top_level:
            for other in self.running:
                self.overlaps.add(frozenset((other, ev.loc.node_id)))
            self.running.add(ev.loc.node_id)
            self.started.append(ev.loc.node_id)
            self.peak = max(self.peak, len(self.running))
        elif isinstance(ev, NodeFinished) and ev.loc.top_level:
            self.running.discard(ev.loc.node_id)


def diamond(folder: Path) -> dict[str, Any]:
    return {
        "nodes": [
            shell("top", "printf top"),
            meet("a", "b", folder),
            meet("b", "a", folder),
            shell("join", "printf '%s+%s' ${a.stdout} ${b.stdout}"),
        ],
        "edges": [edge("top", "a"), edge("top", "b"), edge("a", "join"), edge("b", "join")],
    }


# -- fan-out and join ---------------------------------------------------------------


def test_fan_out_branches_run_at_once_and_the_join_waits_for_both(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    r = plait("run", workflow(diamond(tmp_path)), "-o", "json")
    assert r.code == 0, r
    assert r.json["outputs"]["stdout"] == "a+b"
    assert [r.json["nodes"][n]["status"] for n in ("top", "a", "b", "join")] == ["success"] * 4
    # the recorded visits overlap too: b started before a ended, and the join after both
    shown = plait("show", r.json["run_id"], "--json")
    assert shown.code == 0, shown
    nodes = {n["node_id"]: n for n in shown.json["nodes"]}
    assert nodes["b"]["started"] < nodes["a"]["ended"] and nodes["a"]["started"] < nodes["b"]["ended"]
    assert nodes["join"]["started"] >= max(nodes["a"]["ended"], nodes["b"]["ended"])


def test_events_show_both_branches_running_and_the_join_after_them(tmp_path: Path) -> None:
    watch = Watch()
    result = api.run(diamond(tmp_path), on_event=watch)
    assert result.ok, result.errors
    assert frozenset(("a", "b")) in watch.overlaps
    assert not any("join" in pair for pair in watch.overlaps)
    assert watch.started[0] == "top" and watch.started[-1] == "join"


def test_a_join_waits_for_a_longer_branch_while_a_short_one_is_done(tmp_path: Path) -> None:
    # top -> l1 -> l2 -> join, top -> short -> join; short meets l2, so l1 ran beside short
    wf = {
        "nodes": [
            shell("top", "true"),
            shell("l1", "true"),
            meet("l2", "short", tmp_path),
            meet("short", "l2", tmp_path),
            shell("join", "printf '%s/%s' ${l2.stdout} ${short.stdout}"),
        ],
        "edges": [edge("top", "l1"), edge("l1", "l2"), edge("top", "short"), edge("l2", "join"),
                  edge("short", "join")],
    }
    watch = Watch()
    result = api.run(wf, on_event=watch)
    assert result.ok, result.errors
    assert result.outputs["stdout"] == "l2/short"
    assert watch.started[-1] == "join" and watch.started.count("join") == 1


def test_outputs_of_concurrent_batches_do_not_mix(tmp_path: Path) -> None:
    # four branches, each a parallel batch of its own, merged by a join
    branches = [f"b{k}" for k in range(4)]
    nodes: list[dict[str, Any]] = [{"id": "top", "type": "echo", "params": {"n": 1}}]
    for k, b in enumerate(branches):
        nodes.append(
            {
                "id": b,
                "type": "echo",
                "params": {"who": b, "value": "${item}"},
                "batch": {"items": [k * 100 + i for i in range(50)], "parallel": True, "max_concurrent": 8},
            }
        )
    nodes.append({"id": "join", "type": "echo", "params": {b: f"${{{b}.results}}" for b in branches}})
    wf = {
        "nodes": nodes,
        "edges": [edge("top", b) for b in branches] + [edge(b, "join") for b in branches],
        "max_parallel_nodes": 4,
    }
    watch = Watch()
    result = api.run(wf, on_event=watch)
    assert result.ok, result.errors
    for k, b in enumerate(branches):
        got = result.outputs[b]
        assert [row["who"] for row in got] == [b] * 50
        assert [row["value"] for row in got] == [k * 100 + i for i in range(50)]
    assert watch.peak <= 4


# -- the limit ------------------------------------------------------------------------


def test_max_parallel_nodes_bounds_the_nodes_running_at_once(tmp_path: Path) -> None:
    # s0 and s1 meet (so at least two run at once); the others take their turns
    branches = [f"s{k}" for k in range(6)]
    others = [shell(b, "sleep 0.05") for b in branches[2:]]
    wf = {
        "nodes": [shell("top", "true"), meet("s0", "s1", tmp_path), meet("s1", "s0", tmp_path), *others],
        "edges": [edge("top", b) for b in branches],
    }
    for limit in (2, 3):
        watch = Watch()
        for flag in tmp_path.glob("*.flag"):
            flag.unlink()
        result = api.run(wf, on_event=watch, max_parallel_nodes=limit)
        assert result.ok, result.errors
        assert 2 <= watch.peak <= limit
        assert sorted(watch.started[1:]) == branches


def test_one_node_at_a_time_runs_in_the_sequential_order(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    # fan-out, a longer branch and a join: one at a time, the order is exactly the old one
    wf = {
        "nodes": [log(n, tmp_path) for n in ("top", "short", "l1", "l2", "l3", "join", "t2")],
        "edges": [
            edge("top", "short"),
            edge("top", "l1"),
            edge("top", "t2"),
            edge("l1", "l2"),
            edge("l2", "l3"),
            edge("l3", "join"),
            edge("short", "join"),
            edge("t2", "join"),
        ],
    }
    expected = ["top", "short", "l1", "t2", "l2", "l3", "join"]  # what plait did before branches ran at once
    r = plait("run", workflow(wf), "--max-parallel-nodes", "1", "-o", "json")
    assert r.code == 0, r
    assert order(tmp_path) == expected
    (tmp_path / "order.log").unlink()
    r = plait("run", workflow({**wf, "max_parallel_nodes": 1}), "-q")
    assert r.code == 0, r
    assert order(tmp_path) == expected
    # and the branches never overlap
    watch = Watch()
    assert api.run(wf, on_event=watch, max_parallel_nodes=1).ok
    assert watch.peak == 1


def test_the_limit_is_checked(plait: Plait, workflow: Workflow) -> None:
    r = plait("run", workflow({"nodes": [shell("a", "true")], "max_parallel_nodes": 0}))
    assert r.code == 2
    assert "max_parallel_nodes must be at least 1, not 0" in r.stderr
    r = plait("run", workflow({"nodes": [shell("a", "true")], "max_parallel_nodes": "many"}))
    assert r.code == 2 and "max_parallel_nodes must be an integer" in r.stderr
    r = plait("run", workflow({"nodes": [shell("a", "true")]}), "--max-parallel-nodes", "0")
    assert r.code == 2 and "--max-parallel-nodes" in r.stderr


# -- error edges and fail-fast --------------------------------------------------------------


def test_an_error_edge_on_a_concurrent_branch_hands_over_while_the_other_goes_on(
    tmp_path: Path,
) -> None:
    wf = {
        "nodes": [
            shell("top", "true"),
            meet("bad", "good", tmp_path, then="exit 3; "),
            meet("good", "bad", tmp_path),
            shell("handler", "printf handled"),
            shell("after", "printf after"),
        ],
        "edges": [
            edge("top", "bad"),
            edge("top", "good"),
            edge("bad", "handler", "error"),
            edge("good", "after"),
        ],
    }
    watch = Watch()
    result = api.run(wf, on_event=watch)
    assert result.ok, result.errors
    assert {n: r.status for n, r in result.nodes.items()} == {
        "top": "success", "bad": "failed", "good": "success", "handler": "success", "after": "success"
    }
    assert frozenset(("bad", "good")) in watch.overlaps


def test_fail_fast_starts_nothing_new_and_lets_running_branches_finish(tmp_path: Path) -> None:
    # bad and slow start together (the limit is 2); bad fails at once while slow
    # still runs, so s1 and s2 (waiting for a place) never start and after never runs
    slow = shell("slow", f"while [ ! -e '{tmp_path}/bad.flag' ]; do sleep 0.02; done; sleep 0.5; printf slow")
    wf = {
        "nodes": [
            shell("top", "true"),
            shell("bad", f"touch '{tmp_path}/bad.flag'; echo broken >&2; exit 3"),
            slow,
            shell("s1", "true"),
            shell("s2", "true"),
            shell("after", "true"),
        ],
        "edges": [edge("top", n) for n in ("bad", "slow", "s1", "s2")] + [edge("slow", "after")],
        "max_parallel_nodes": 2,
    }
    result = api.run(wf)
    assert result.status == "failed"
    assert [e["node_id"] for e in result.errors] == ["bad"]
    assert "broken" in result.errors[0]["message"]
    statuses = {n: r.status for n, r in result.nodes.items()}
    assert statuses == {
        "top": "success", "bad": "failed", "slow": "success", "s1": "not_run", "s2": "not_run", "after": "not_run"
    }
    assert result.values["slow"]["stdout"] == "slow"


def test_fail_fast_through_the_cli_names_the_failed_branch(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    wf = {
        "nodes": [shell("top", "true"), shell("bad", "exit 5"), shell("fine", "printf fine")],
        "edges": [edge("top", "bad"), edge("top", "fine")],
    }
    r = plait("run", workflow(wf), "-o", "json")
    assert r.code == 1, r
    assert r.json["status"] == "failed"
    assert r.json["errors"][0]["node_id"] == "bad"
    assert r.json["nodes"]["fine"]["status"] == "success"  # it had started beside bad, and finished


# -- sub-workflows -----------------------------------------------------------------------------


def test_a_sub_workflow_in_a_branch_runs_beside_the_other_branch(
    workflow: Workflow, tmp_path: Path
) -> None:
    # the child's own branches meet each other, and one of them meets the parent's peer
    child = {
        "inputs": {"dir": {"type": "string"}},
        "nodes": [
            shell("c0", "true"),
            meet("c1", "c2", tmp_path),
            meet("c2", "peer", tmp_path),
            shell("cj", "printf '%s%s' ${c1.stdout} ${c2.stdout}"),
        ],
        "edges": [edge("c0", "c1"), edge("c0", "c2"), edge("c1", "cj"), edge("c2", "cj")],
        "outputs": {"both": {"source": "${cj.stdout}"}},
    }
    path = workflow(child, "child.json")
    wf = {
        "nodes": [
            shell("top", "true"),
            {"id": "sub", "type": "workflow", "params": {"workflow": path, "inputs": {"dir": str(tmp_path)}}},
            meet("peer", "c2", tmp_path),
            shell("end", "printf '%s|%s' ${sub.both} ${peer.stdout}"),
        ],
        "edges": [edge("top", "sub"), edge("top", "peer"), edge("sub", "end"), edge("peer", "end")],
    }
    watch = Watch()
    result = api.run(wf, on_event=watch)
    assert result.ok, result.errors
    assert result.outputs["stdout"] == "c1c2|peer"
    assert frozenset(("sub", "peer")) in watch.overlaps


# -- interrupts -----------------------------------------------------------------------------------


def test_ctrl_c_interrupts_every_running_branch_and_resume_finishes(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    wf = {
        "inputs": {"secs": {"type": "integer", "default": 60}},
        "nodes": [
            shell("top", "printf top"),
            shell("a", f"touch '{tmp_path}/a.on'; sleep ${{secs}}; printf a"),
            shell("b", f"touch '{tmp_path}/b.on'; sleep ${{secs}}; printf b"),
            shell("join", "printf '%s%s' ${a.stdout} ${b.stdout}"),
        ],
        "edges": [edge("top", "a"), edge("top", "b"), edge("a", "join"), edge("b", "join")],
    }
    path = workflow(wf)
    proc = popen_cli("run", path, "-o", "json", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while not ((tmp_path / "a.on").exists() and (tmp_path / "b.on").exists()):
            assert time.monotonic() < deadline and proc.poll() is None, "the branches did not both start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    payload = json.loads(out)
    assert payload["status"] == "interrupted"
    assert payload["nodes"]["a"]["status"] == "interrupted"
    assert payload["nodes"]["b"]["status"] == "interrupted"
    assert payload["nodes"]["join"]["status"] == "not_run"
    assert sorted(e["node_id"] for e in payload["errors"]) == ["a", "b"]
    shown = plait("show", payload["run_id"], "--json")
    recorded = {n["node_id"]: n["status"] for n in shown.json["nodes"]}
    assert recorded["a"] == recorded["b"] == "interrupted"

    again = plait("resume", payload["run_id"], "secs=0", "-o", "json", "-q")
    assert again.code == 0, again
    assert again.json["outputs"]["stdout"] == "ab"
    assert again.json["resumed_from"]["run_id"] == payload["run_id"]


# -- the timeline ---------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def overlapping_batches(folder: Path) -> dict[str, Any]:
    both = {"items": [0, 1], "parallel": True, "max_concurrent": 2}
    # Each item lasts a while after the meeting: a node's second item starts before
    # its first ends even on a loaded machine (else they share a lane, and the test
    # counting four lanes saw three).
    return {
        "nodes": [
            shell("top", "true"),
            {**meet("a", "b", folder, then="sleep 0.3; "), "batch": both},
            {**meet("b", "a", folder, then="sleep 0.3; "), "batch": both},
            shell("join", "true"),
        ],
        "edges": [edge("top", "a"), edge("top", "b"), edge("a", "join"), edge("b", "join")],
    }


def page_data(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="plait-data">(.*?)</script>', page, re.S)
    assert found
    data: dict[str, Any] = json.loads(found.group(1).replace("<\\/", "</"))
    return data


@pytest.fixture
def drawn_branches(plait: Plait, workflow: Workflow, tmp_path: Path) -> Path:
    run = plait("run", workflow(overlapping_batches(tmp_path)), "-o", "json", "-q")
    assert run.code == 0, run
    out = tmp_path / "branches.html"
    drawn = plait("timeline", run.json["run_id"], "-o", str(out))
    assert drawn.code == 0, drawn
    return out


def test_the_timeline_gives_concurrent_nodes_lanes_and_header_rows_of_their_own(drawn_branches: Path) -> None:
    data = page_data(drawn_branches.read_text())
    nodes = {n["id"]: n for n in data["nodes"]}
    a, b = nodes["a"], nodes["b"]
    assert a["s"] < b["e"] and b["s"] < a["e"]  # they overlap in time
    assert a["w"] == b["w"] == 2
    assert {a["l"], b["l"]} == {0, 2}  # side by side, never on top of each other
    assert {a["r"], b["r"]} == {0, 1}
    assert a["alone"] is False and b["alone"] is False
    assert nodes["top"]["alone"] and nodes["join"]["alone"]
    assert nodes["top"]["l"] == nodes["join"]["l"] == 0 and nodes["top"]["r"] == nodes["join"]["r"] == 0
    # every attempt points at its node: two items each of a and b, one of top and join
    names = [data["nodes"][n]["id"] for n in data["items"]["n"]]
    assert sorted(names) == ["a", "a", "b", "b", "join", "top"]


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_chromium_draws_overlapping_nodes_as_separate_bands(drawn_branches: Path) -> None:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1400,900", "--dump-dom", drawn_branches.as_uri()],
            capture_output=True, text=True, timeout=90,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    data = page_data(drawn_branches.read_text())
    order_of = {n["id"]: i for i, n in enumerate(data["nodes"])}
    bands = {
        int(i): (float(y), float(h))
        for i, y, h in re.findall(r'<rect class="band" data-node="(\d+)" x="[-\d.]+" y="([\d.]+)" width="[\d.]+" '
                                  r'height="([\d.]+)"', dom)
    }
    ya, ha = bands[order_of["a"]]
    yb, hb = bands[order_of["b"]]
    assert ya + ha <= yb or yb + hb <= ya  # the two bands do not cover each other
    # four lanes, the bars of a and b in different ones
    assert re.findall(r'<text class="lanelabel"[^>]*>lane (\d+)</text>', dom) == ["0", "1", "2", "3"]
    bars = re.findall(r'<rect class="bar s0" data-k="(\d+)" x="[-\d.]+" y="([\d.]+)"', dom)
    lanes_of: dict[str, set[str]] = {}
    for k, y in bars:
        lanes_of.setdefault(data["nodes"][data["items"]["n"][int(k)]]["id"], set()).add(y)
    assert len(lanes_of["a"]) == len(lanes_of["b"]) == 2
    assert not lanes_of["a"] & lanes_of["b"]


# -- progress ---------------------------------------------------------------------------------------


def feed_two_running_batches(bus: EventBus) -> None:
    a, b = Location("a"), Location("b")
    bus.emit(NodeStarted(a, "shell", True))
    bus.emit(BatchStarted(a, 10, True, 2))
    bus.emit(NodeStarted(b, "shell", True))
    bus.emit(BatchStarted(b, 20, True, 2))
    for i in range(3):
        bus.emit(ItemFinished(a, i, 1, 0, 1.0))
    for i in range(7):
        bus.emit(ItemFinished(b, i, 1, 0, 1.0))
    bus.emit(ItemFailed(b, 7, 1, 0, 1.0, "boom"))


def test_the_live_display_has_a_row_per_running_node() -> None:
    from rich.console import Console

    from plait.cli.progress import LiveDisplay, Tracker

    display = LiveDisplay(io.StringIO(), None)
    try:
        tracker = Tracker(display)
        display.tracker = tracker
        bus = EventBus()
        bus.subscribe(tracker)
        feed_two_running_batches(bus)

        def screen() -> str:
            console = Console(file=io.StringIO(), width=120, record=True)
            console.print(display._render())
            return console.export_text()

        rows = [line for line in screen().splitlines() if line.strip()]
        assert len(rows) == 2, rows
        assert " a " in rows[0] and " 3/10" in rows[0]
        assert " b " in rows[1] and " 8/20" in rows[1] and "1 failed" in rows[1]
        bus.emit(NodeFinished(Location("a"), "success", 5.0, counts={"count": 10}))
        rows = [line for line in screen().splitlines() if line.strip()]
        assert len(rows) == 1 and " b " in rows[0]
    finally:
        display.close()


def test_plain_progress_summarises_every_running_batch() -> None:
    from plait.cli.progress import PlainDisplay, Tracker

    stream = io.StringIO()
    display = PlainDisplay(stream, 0.05)
    try:
        tracker = Tracker(display)
        display.tracker = tracker
        bus = EventBus()
        bus.subscribe(tracker)
        feed_two_running_batches(bus)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = stream.getvalue()
            if "a: 3/10 items" in text and "b: 8/20 items, 1 failed" in text:
                break
            time.sleep(0.02)
        else:
            raise AssertionError(f"no summary of both batches: {stream.getvalue()!r}")
    finally:
        display.close()


# -- shared run services ----------------------------------------------------------------------------


def test_two_async_http_batches_share_the_run_loop_at_once(tmp_path: Path) -> None:
    # Requests to /a are answered only once /b has been asked, and the other way
    # round: one after the other, the first batch would time out.
    arrived = {"a": threading.Event(), "b": threading.Event()}

    def side(me: str, other: str) -> Callable[[Request], Reply]:
        def handle(req: Request) -> Reply:
            arrived[me].set()
            if not arrived[other].wait(MEET_S):
                return Reply(504, {"error": f"no request to /{other}"})
            return Reply(200, {"side": me, "n": int(req.arg("n"))})

        return handle

    with LocalServer() as server:
        server.route("/a", side("a", "b"))
        server.route("/b", side("b", "a"))

        def batch(name: str) -> dict[str, Any]:
            return {
                "id": name,
                "type": "http",
                "params": {"url": server.url(f"/{name}") + "?n=${item}", "timeout": MEET_S + 5},
                "batch": {"items": list(range(20)), "parallel": True, "max_concurrent": 5, "executor": "async"},
            }

        wf = {
            "nodes": [shell("top", "true"), batch("a"), batch("b"),
                      {"id": "join", "type": "echo", "params": {"a": "${a.results}", "b": "${b.results}"}}],
            "edges": [edge("top", "a"), edge("top", "b"), edge("a", "join"), edge("b", "join")],
        }
        result = api.run(wf)
    assert result.ok, result.errors
    for name in ("a", "b"):
        rows = result.outputs[name]
        assert [row["response"] for row in rows] == [{"side": name, "n": i} for i in range(20)]


class ChildWatch:
    """The nodes running at once inside sub-workflows."""

    def __init__(self) -> None:
        self.running: set[str] = set()
        self.peak = 0

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, NodeStarted) and not ev.loc.top_level:
            self.running.add(ev.loc.key)
            self.peak = max(self.peak, len(self.running))
        elif isinstance(ev, NodeFinished) and not ev.loc.top_level:
            self.running.discard(ev.loc.key)


def test_a_child_keeps_its_own_limit_unless_the_run_sets_one(workflow: Workflow, tmp_path: Path) -> None:
    calm = workflow(
        {
            "max_parallel_nodes": 1,
            "nodes": [shell("c0", "true"), *(shell(f"c{k}", "sleep 0.02") for k in (1, 2, 3))],
            "edges": [edge("c0", f"c{k}") for k in (1, 2, 3)],
        },
        "calm.json",
    )
    # the same limit of 1, but two of its branches must meet: only a run-wide limit lets them
    meeting = workflow(
        {
            "max_parallel_nodes": 1,
            "nodes": [shell("c0", "true"), meet("c1", "c2", tmp_path), meet("c2", "c1", tmp_path)],
            "edges": [edge("c0", "c1"), edge("c0", "c2")],
        },
        "meeting.json",
    )

    def parent(child: str) -> dict[str, Any]:
        return {"nodes": [{"id": "sub", "type": "workflow", "params": {"workflow": child}}]}

    watch = ChildWatch()
    assert api.run(parent(calm), on_event=watch).ok
    assert watch.peak == 1
    watch = ChildWatch()
    result = api.run(parent(meeting), on_event=watch, max_parallel_nodes=2)
    assert result.ok, result.errors
    assert watch.peak == 2
