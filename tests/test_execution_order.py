"""Order of execution (SPEC §3): listed order, action edges, fan-out, joins, loops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Run = Callable[..., Any]
Write = Callable[..., str]

# Custom node types, loaded with --nodes: one returns the action it is told to,
# one counts its visits in a file and asks to go round again until a limit.
CUSTOM_NODES = '''
from pathlib import Path

from plait.nodes.base import Output, Param, PlaitNode


class Route(PlaitNode):
    type_name = "route"
    description = "Finish with the action named in params."
    param_specs = (Param("action", "string", required=True),)
    output_specs = (Output("action", "string"),)

    def exec(self, p):
        return {"action": p["action"]}

    def post(self, shared, prep_res, exec_res):
        shared.outputs = exec_res
        return exec_res["action"]


class Count(PlaitNode):
    type_name = "count"
    description = "Count visits in a file; finish with 'again' until the limit."
    param_specs = (Param("file", "string", required=True), Param("until", "integer", required=True))
    output_specs = (Output("n", "integer"),)

    def exec(self, p):
        path = Path(p["file"])
        n = int(path.read_text()) + 1 if path.exists() else 1
        path.write_text(str(n))
        return {"n": n}

    def post(self, shared, prep_res, exec_res):
        shared.outputs = exec_res
        return "again" if exec_res["n"] < prep_res["until"] else "default"
'''


@pytest.fixture
def nodes_file(tmp_path: Path) -> str:
    path = tmp_path / "custom_nodes.py"
    path.write_text(CUSTOM_NODES)
    return str(path)


def log(node_id: str, extra: str = "") -> dict[str, Any]:
    """A shell node that appends its id to ./order.log."""
    return {"id": node_id, "type": "shell", "params": {"command": f"{extra}echo {node_id} >> order.log"}}


def edge(a: str, b: str, action: str | None = None) -> dict[str, str]:
    return {"from": a, "to": b, **({"action": action} if action else {})}


def order(tmp_path: Path) -> list[str]:
    path = tmp_path / "order.log"
    return path.read_text().split() if path.exists() else []


# -- no edges: the listed order -----------------------------------------------------


def test_without_edges_nodes_run_in_listed_order(plait: Run, workflow: Write, tmp_path: Path) -> None:
    ids = ["zeta", "alpha", "mid", "beta"]
    r = plait("run", workflow({"nodes": [log(i) for i in ids]}))
    assert r.code == 0, r
    assert order(tmp_path) == ids


def test_a_later_node_reads_an_earlier_one(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            {"id": "make", "type": "shell", "params": {"command": "echo made"}},
            {"id": "use", "type": "shell", "params": {"command": "echo got ${make.stdout}"}},
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "got made\n"


def test_start_node_picks_where_edges_begin(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {"nodes": [log("a"), log("b")], "edges": [edge("b", "a")], "start_node": "b"}
    assert plait("run", workflow(wf)).code == 0
    assert order(tmp_path) == ["b", "a"]


# -- a failure, with and without an error edge ---------------------------------------


def failing_then_handler() -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "risky", "type": "shell", "params": {"command": "echo partial; echo boom >&2; exit 3"}},
            {
                "id": "handle",
                "type": "shell",
                "params": {"command": "echo handled code=${risky.exit_code} err=${risky.stderr}"},
            },
            log("after"),
        ],
        "edges": [edge("risky", "handle", "error"), edge("risky", "after")],
    }


def test_error_edge_hands_over_to_the_handler(plait: Run, workflow: Write, tmp_path: Path) -> None:
    r = plait("run", "-o", "json", workflow(failing_then_handler()))
    assert r.code == 0, r
    out = r.json
    assert out["status"] == "success"
    assert out["outputs"]["stdout"] == "handled code=3 err=boom"
    assert out["nodes"]["risky"]["status"] == "failed"
    assert out["nodes"]["handle"]["status"] == "success"
    assert out["nodes"]["after"]["status"] == "not_run"  # the default edge is not taken
    assert order(tmp_path) == []


def test_error_handler_in_text_mode(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow(failing_then_handler()))
    assert r.code == 0, r
    assert r.stdout.startswith("handled code=3 err=boom")


def test_without_an_error_edge_the_run_fails(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "nodes": [
            log("before"),
            {"id": "risky", "type": "shell", "params": {"command": "echo boom >&2; exit 3"}},
            log("after"),
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 1, r
    assert "risky" in r.stderr and "boom" in r.stderr and "3" in r.stderr
    assert "Traceback" not in r.stderr
    assert order(tmp_path) == ["before"]


def test_without_an_error_edge_json_reports_the_failure(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [{"id": "risky", "type": "shell", "params": {"command": "exit 4"}}, log("after")]}
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 1
    out = r.json
    assert out["status"] == "failed"
    assert out["nodes"]["risky"]["status"] == "failed"
    assert out["nodes"]["after"]["status"] == "not_run"
    assert out["errors"][0]["node_id"] == "risky"
    assert "exited with code 4" in out["errors"][0]["message"]


# -- fan-out and joins --------------------------------------------------------------


def test_fan_out_runs_every_target(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "nodes": [log("root"), log("t1"), log("t2"), log("t3"), log("t4")],
        "edges": [edge("root", t) for t in ("t1", "t2", "t3", "t4")],
    }
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 0, r
    ran = order(tmp_path)
    assert ran[0] == "root"
    assert sorted(ran[1:]) == ["t1", "t2", "t3", "t4"]
    assert all(n["status"] == "success" for n in r.json["nodes"].values())


def test_fan_out_of_a_custom_action_runs_every_target(
    plait: Run, workflow: Write, tmp_path: Path, nodes_file: str
) -> None:
    wf = {
        "nodes": [
            {"id": "pick", "type": "route", "params": {"action": "many"}},
            log("m1"),
            log("m2"),
            log("other"),
        ],
        "edges": [edge("pick", "m1", "many"), edge("pick", "m2", "many"), edge("pick", "other")],
    }
    r = plait("run", "--nodes", nodes_file, workflow(wf))
    assert r.code == 0, r
    assert sorted(order(tmp_path)) == ["m1", "m2"]


def test_diamond_join_runs_once_after_both_branches(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "nodes": [log("top"), log("left"), log("right"), log("join")],
        "edges": [edge("top", "left"), edge("top", "right"), edge("left", "join"), edge("right", "join")],
    }
    assert plait("run", workflow(wf)).code == 0
    ran = order(tmp_path)
    assert ran[0] == "top" and ran[-1] == "join"
    assert sorted(ran) == ["join", "left", "right", "top"]


def test_join_waits_for_the_longer_branch(plait: Run, workflow: Write, tmp_path: Path) -> None:
    # top -> l1 -> l2 -> l3 -> join, and top -> short -> join
    wf = {
        "nodes": [log("top"), log("short"), log("l1"), log("l2"), log("l3"), log("join")],
        "edges": [
            edge("top", "short"),
            edge("top", "l1"),
            edge("l1", "l2"),
            edge("l2", "l3"),
            edge("l3", "join"),
            edge("short", "join"),
        ],
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    ran = order(tmp_path)
    assert ran.count("join") == 1
    assert ran[-1] == "join"
    assert ran.index("l1") < ran.index("l2") < ran.index("l3")
    assert len(ran) == 6


def test_join_can_read_both_branches(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            {"id": "top", "type": "echo", "params": {"v": 1}},
            {"id": "a", "type": "shell", "params": {"command": "printf A"}},
            {"id": "b", "type": "shell", "params": {"command": "printf B"}},
            {"id": "join", "type": "shell", "params": {"command": "printf '%s+%s' ${a.stdout} ${b.stdout}"}},
        ],
        "edges": [edge("top", "a"), edge("top", "b"), edge("a", "join"), edge("b", "join")],
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "A+B\n"


def test_join_after_only_the_activated_branch(
    plait: Run, workflow: Write, tmp_path: Path, nodes_file: str
) -> None:
    wf = {
        "nodes": [
            {"id": "pick", "type": "route", "params": {"action": "left"}},
            log("left"),
            log("right"),
            log("join"),
        ],
        "edges": [
            edge("pick", "left", "left"),
            edge("pick", "right", "right"),
            edge("left", "join"),
            edge("right", "join"),
        ],
    }
    r = plait("run", "-o", "json", "--nodes", nodes_file, workflow(wf))
    assert r.code == 0, r
    assert order(tmp_path) == ["left", "join"]
    assert r.json["nodes"]["right"]["status"] == "not_run"


# -- loops ------------------------------------------------------------------------------


def test_loop_through_a_non_default_action(
    plait: Run, workflow: Write, tmp_path: Path, nodes_file: str
) -> None:
    wf = {
        "nodes": [
            {"id": "count", "type": "count", "params": {"file": "n.txt", "until": 3}},
            log("work"),
            {"id": "done", "type": "shell", "params": {"command": "echo counted ${count.n}"}},
        ],
        "edges": [edge("count", "work", "again"), edge("work", "count"), edge("count", "done")],
    }
    r = plait("run", "--nodes", nodes_file, workflow(wf))
    assert r.code == 0, r
    assert order(tmp_path) == ["work", "work"]
    assert r.stdout == "counted 3\n"


def test_endless_loop_stops_at_the_visit_limit(plait: Run, workflow: Write, nodes_file: str) -> None:
    wf = {
        "nodes": [
            {"id": "again", "type": "route", "params": {"action": "again"}},
            {"id": "body", "type": "echo", "params": {"x": 1}},
        ],
        "edges": [edge("again", "body", "again"), edge("body", "again")],
    }
    r = plait("run", "-q", "--nodes", nodes_file, workflow(wf))
    assert r.code == 1, r
    assert "loop limit" in r.stderr
    assert "100 times" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_loop_of_default_edges_is_invalid(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [{"id": "a", "type": "echo", "params": {}}, {"id": "b", "type": "echo", "params": {}}],
        "edges": [edge("a", "b"), edge("b", "a")],
    }
    r = plait("validate", workflow(wf))
    assert r.code == 2
    assert "edges[1]" in r.stderr
    assert "a -> b -> a" in r.stderr


# -- node-level retry ----------------------------------------------------------------


def test_node_retry_runs_again_until_success(plait: Run, workflow: Write, tmp_path: Path) -> None:
    # Fails on the first two attempts, succeeds on the third.
    command = "echo x >> tries; [ $(wc -l < tries) -ge 3 ] && echo ok"
    wf = {
        "nodes": [
            {
                "id": "flaky",
                "type": "shell",
                "params": {"command": command},
                "retry": {"max": 3, "wait": 0},
            }
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "ok\n"
    assert (tmp_path / "tries").read_text().count("x") == 3


def test_node_retry_gives_up_after_max_retries(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {
        "nodes": [
            {
                "id": "broken",
                "type": "shell",
                "params": {"command": "echo x >> tries; exit 1"},
                "retry": {"max": 2, "wait": 0},
            }
        ]
    }
    r = plait("run", workflow(wf))
    assert r.code == 1
    assert "2 attempts" in r.stderr
    assert (tmp_path / "tries").read_text().count("x") == 2


def test_an_output_of_the_path_not_taken_is_left_out_not_a_failure(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            {"id": "risky", "type": "shell", "params": {"command": "exit 3"}},
            {"id": "ok", "type": "echo", "params": {"v": "fine"}},
            {"id": "fix", "type": "echo", "params": {"v": "fixed after ${risky.exit_code}"}},
        ],
        "edges": [{"from": "risky", "to": "ok"}, {"from": "risky", "to": "fix", "action": "error"}],
        "outputs": {"result": {"source": "${ok.v}"}, "fixed": {"source": "${fix.v}"}},
    }
    r = plait("run", workflow(wf), "-o", "json")
    assert r.code == 0, r  # the error edge handled the failure: the run ended well
    assert r.json["status"] == "success"
    assert r.json["outputs"] == {"fixed": "fixed after 3"}
    assert r.json["warnings"] == ["output 'result' is left out: node 'ok' did not run on this path"]
    assert "warning: output 'result' is left out" in r.stderr
    # a template that fails on a node that did run is still a failure of the run
    wf["outputs"] = {"fixed": {"source": "${fix.nothing_here}"}}
    r = plait("run", workflow(wf), "-o", "json", "-q")
    assert r.code == 1 and r.json["status"] == "failed", r
