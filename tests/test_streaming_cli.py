"""Streaming batches through the real CLI: item sources of every format, standard
input and --items, result sinks in both orders, the bounded reorder buffer,
interrupts and resumes, item groups, chained batches (docs/streaming.md).

Many cases share one workflow run, so the file stays fast.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import time
from pathlib import Path
from typing import Any

from conftest import popen_cli, run_cli

# A node type for these tests, loaded with --nodes: its state lives in files, so
# a test can hold one item back until others have run, slow a run down while a
# flag file exists, or fail items while another flag exists.
NODES = '''
import os, time
from plait.nodes.base import NodeError, Output, Param, PlaitNode

DEADLINE_S = 30.0  # a test that goes wrong fails instead of hanging


def _append(path, line):
    with open(path, "a") as f:
        f.write(line + "\\n")


class Hold(PlaitNode):
    type_name = "hold"
    description = "test node"
    param_specs = (
        Param("value", "any"),
        Param("log", "string"),
        Param("until_line", "string"),
        Param("slow_while", "string"),
        Param("fail_while", "string"),
        Param("fail_on", "array", default=[]),
    )
    output_specs = (Output("value", "any"), Output("launched", "integer"))
    primary_output = "value"

    def prep(self, shared):
        return shared.params, shared.services.cancelled

    def exec(self, prep_res):
        p, cancelled = prep_res
        value, log = p.get("value"), p.get("log")
        shown = value[0] if isinstance(value, list) and value else value
        if isinstance(shown, dict):
            shown = shown.get("n")
        if log:
            _append(log, f"start {shown}")
        launched = None
        until = p.get("until_line")
        if until:  # wait until another item has written this line to the log
            deadline = time.monotonic() + DEADLINE_S
            while not cancelled.is_set():
                with open(log) as f:
                    text = f.read()
                if until + "\\n" in text:
                    launched = text.count("start ")
                    break
                if time.monotonic() > deadline:
                    raise NodeError(f"{until!r} never came")
                time.sleep(0.005)
        if p.get("slow_while") and os.path.exists(p["slow_while"]):
            time.sleep(0.01)
        values = value if isinstance(value, list) else [value]
        if p.get("fail_while") and os.path.exists(p["fail_while"]):
            bad = [v for v in values if isinstance(v, dict) and v.get("n") in p["fail_on"]]
            if bad:
                raise NodeError(f"refused {bad[0]['n']}")
        if log:
            _append(log, f"end {shown}")
        return {"value": value, "launched": launched}
'''


def write_nodes(tmp_path: Path) -> str:
    path = tmp_path / "stream_nodes.py"
    path.write_text(NODES)
    return str(path)


def jsonl(path: Path, values: list[Any]) -> None:
    path.write_text("".join(json.dumps(v) + "\n" for v in values))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def on_a_terminal(cwd: Path, *args: str) -> tuple[int, str]:
    """Exit code and stderr of `plait ARGS` run with a terminal on its standard input."""
    master, slave = pty.openpty()
    try:
        proc = popen_cli(*args, cwd=cwd, stdin=slave)
        _, err = proc.communicate(timeout=30)
    finally:
        os.close(slave)
        os.close(master)
    return proc.returncode, err


def batch_node(node_id: str, items: Any, *, results: Any = None, **batch: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"items": items, "error_handling": "continue", **batch}
    if results is not None:
        spec["results"] = results
    return {"id": node_id, "type": "echo", "params": {"got": "${item}"}, "batch": spec}


def test_every_format_glob_skip_limit_malformed_records_and_chained_batches(plait, workflow, tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"id": 0}\n{"id": 1}\n\n{"id": 3,,}\n{"id": 4}\n{"id": 5}\n'
    )
    (tmp_path / "b.csv").write_text(
        'id,name,note\n1,"Smith, J",x\n2,Lee\n3,a,b,c\n4,"two\nlines",y\n'
    )
    (tmp_path / "c.tsv").write_text("id\tname\n1\tann\n2\tbob\n")
    (tmp_path / "d.txt").write_text("alpha\n\n  \nbeta\r\n")
    (tmp_path / "e.json").write_text('[{"id": 1},\n 2, "three", [4]]')
    (tmp_path / "bad.json").write_text('[{"id": 1}, {"id": 2] , 3]')
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "b.md").write_text("# B\n")
    (docs / "a.md").write_text("# A\n")
    (docs / "skip.txt").write_text("not matched\n")
    parts = tmp_path / "parts"
    parts.mkdir()
    jsonl(parts / "1.jsonl", [{"p": 1}, {"p": 2}])
    jsonl(parts / "2.jsonl", [{"p": 3}])
    nodes = [
        batch_node("j", {"from": "a.jsonl", "skip": 1, "limit": 3}),
        batch_node("csv", {"from": "b.csv"}),
        batch_node("tsv", {"from": "c.tsv"}),
        batch_node("lines", {"from": "d.txt"}),
        batch_node("arr", {"from": "e.json"}),
        batch_node("badarr", {"from": "bad.json"}),
        batch_node("paths", {"from": "docs/*.md"}),
        batch_node("contents", {"from": "docs/*.md", "items": "contents"}),
        batch_node("records", {"from": "parts/*.jsonl", "items": "records", "skip": 1}),
        batch_node("first", {"from": "a.jsonl"}, results={"to": "out/first.jsonl"}),
        batch_node("bypath", {"from": "${first.results.path}"}, results={"to": "bypath.csv", "fields": ["item.item.id"]}),
        batch_node("byref", {"from": "${first.results}", "limit": 2}),
    ]
    outputs = {n["id"]: {"source": "${" + n["id"] + "}"} for n in nodes}
    wf = workflow({"nodes": nodes, "outputs": outputs})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    out = r.json["outputs"]

    def items(node: str) -> list[Any]:
        return [res["item"] if "error" in res else res["got"] for res in out[node]["results"]]

    def errors(node: str) -> dict[int, str]:
        return {e["index"]: e["error"] for e in out[node]["errors"]}

    # jsonl: the blank line is no item; skip and limit count items; the malformed
    # line is its item's failure, naming file, line and column, and the rest ran
    assert out["j"]["count"] == 3 and out["j"]["success_count"] == 2
    assert [x for i, x in enumerate(items("j")) if i != 1] == [{"id": 1}, {"id": 4}]
    assert errors("j")[1].startswith("a.jsonl:4:10: invalid JSON")
    assert items("j")[1] == '{"id": 3,,}'  # the malformed record shown as its text, not an object's repr
    # csv: quoted commas and newlines; a short row gets nulls; a long row fails alone
    assert items("csv")[0] == {"id": "1", "name": "Smith, J", "note": "x"}
    assert items("csv")[1] == {"id": "2", "name": "Lee", "note": None}
    assert errors("csv")[2].startswith("b.csv:4:7: row has 4 fields but the header has 3")
    assert items("csv")[3] == {"id": "4", "name": "two\nlines", "note": "y"}
    assert items("tsv") == [{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}]
    assert items("lines") == ["alpha", "beta"]
    assert items("arr") == [{"id": 1}, 2, "three", [4]]
    # a JSON array: nothing after a malformed element can be told apart
    assert out["badarr"]["count"] == 2 and items("badarr")[0] == {"id": 1}
    assert errors("badarr")[1].startswith("bad.json:1:")
    # globs: sorted paths usable from the working directory, or {path, content}, or records
    assert items("paths") == ["docs/a.md", "docs/b.md"]
    contents = items("contents")
    assert [c["content"] for c in contents] == ["# A\n", "# B\n"]
    assert [os.path.basename(c["path"]) for c in contents] == ["a.md", "b.md"]
    assert items("records") == [{"p": 2}, {"p": 3}]
    # a streaming batch's output is a reference to its file; the next batches read it
    ref = out["first"]["results"]
    assert ref == {"path": str(tmp_path / "out" / "first.jsonl"), "format": "jsonl", "count": 5}
    assert out["first"]["error_count"] == 1 and out["first"]["errors"][0]["index"] == 2
    written = rows(tmp_path / "out" / "first.jsonl")
    assert [w["index"] for w in written] == [0, 1, 2, 3, 4]
    assert written[2]["error"].startswith("a.jsonl:4:") and list(written[2])[:2] == ["index", "error"]
    assert not (tmp_path / "out" / "first.jsonl.partial").exists()
    assert out["bypath"]["count"] == 5
    csv_lines = (tmp_path / "bypath.csv").read_text().splitlines()
    assert csv_lines[0] == "index,item.item.id,error" and csv_lines[1] == "0,0,"
    assert [x["index"] for x in items("byref")] == [0, 1]


def test_standard_input_piped_and_items_file(plait, workflow, tmp_path):
    reader = {
        "id": "s",
        "type": "echo",
        "params": {"got": "${item}"},
        "batch": {
            "items": {"from": "-", "format": "jsonl", "skip": 1, "limit": 6},
            "error_handling": "continue",
            "results": {"to": "s.jsonl"},
        },
    }
    wf = workflow({"nodes": [reader], "outputs": {"s": {"source": "${s}"}}}, "stdin.json")
    text = "".join(f'{{"n": {i}}}\n' for i in range(3)) + "{oops\n" + "".join(f'{{"n": {i}}}\n' for i in range(4, 9))
    # a real pipe into a real process
    r = run_cli("run", wf, "-o", "json", "-q", cwd=tmp_path, input=text)
    assert r.code == 0, r
    s = r.json["outputs"]["s"]
    assert s["count"] == 6 and s["error_count"] == 1
    assert s["errors"][0]["error"].startswith("<stdin>:4:2: invalid JSON")
    got = rows(tmp_path / "s.jsonl")
    assert [g.get("got", {}).get("n") for g in got] == [1, 2, None, 4, 5, 6]
    assert got[2]["item"] == "{oops" and s["errors"][0]["item"] == "{oops"

    # --items FILE: the same batch reads the file, named in errors as given, and counted first
    (tmp_path / "given.jsonl").write_text(text)
    r = plait("run", wf, "--items", "given.jsonl", "-o", "json", "-q")
    assert r.code == 0, r
    s = r.json["outputs"]["s"]
    assert s["count"] == 6 and s["errors"][0]["error"].startswith("given.jsonl:4:2: invalid JSON")
    assert [g.get("got", {}).get("n") for g in rows(tmp_path / "s.jsonl")] == [1, 2, None, 4, 5, 6]

    # piped in this process too (the fixture's stdin), as lines with no format given
    lines_wf = workflow(
        {"nodes": [batch_node("t", {"from": "-"})], "outputs": {"t": {"source": "${t.results}"}}}, "lines.json"
    )
    r = plait("run", lines_wf, "-o", "json", "-q", input="one\n\ntwo\n")
    assert r.code == 0, r
    assert [x["got"] for x in r.json["outputs"]["t"]] == ["one", "two"]

    # the mistakes, each refused before anything runs, saying how to fix it
    plain = workflow({"nodes": [batch_node("p", [1, 2])]}, "plain.json")
    r = plait("run", plain, "--items", "given.jsonl")
    assert r.code == 2 and "--items given.jsonl: no batch of this workflow reads its items from standard input" in r.stderr
    assert '{"from": "-"}' in r.stderr
    r = plait("run", wf, "--items", "missing.jsonl")
    assert r.code == 2 and "--items: file not found: missing.jsonl" in r.stderr
    # a glob that matches nothing: an empty batch, and a warning saying so (-q keeps warnings)
    empty = workflow({"nodes": [batch_node("g", {"from": "inbox/*.jsonl"})]}, "empty.json")
    (tmp_path / "inbox").mkdir()
    r = plait("run", empty, "-q")
    assert r.code == 0, r
    assert "warning: g: batch.items: the glob 'inbox/*.jsonl' matched no files" in r.stderr
    r = plait("--items", "missing.jsonl", wf)  # the shorthand, the option first: its value is not the workflow
    assert r.code == 2 and "--items: file not found: missing.jsonl" in r.stderr
    two = workflow({"nodes": [batch_node("x", {"from": "-"}), batch_node("y", {"from": "-"})]}, "two.json")
    r = plait("run", two, input="a\n")
    assert r.code == 2 and "only one batch can read standard input, but x, y all do" in r.stderr
    both = workflow(
        {"inputs": {"text": {"type": "string", "stdin": True}}, "nodes": [batch_node("x", {"from": "-"})]}, "both.json"
    )
    r = plait("run", both, input="a\n")
    assert r.code == 2
    assert "batch 'x' reads standard input, and so does an input marked stdin: true" in r.stderr

    # standard input that is a terminal: an error that says how to pipe, not a wait for typing
    code, err = on_a_terminal(tmp_path, "run", wf)
    assert code == 2, err
    assert "batch 's' reads its items from standard input, which is a terminal" in err
    assert f"plait run {wf} < items.jsonl" in err and "--items items.jsonl" in err


def test_failure_rate_of_a_stream_of_unknown_length(plait, workflow, tmp_path):
    node = batch_node("s", {"from": "-", "format": "jsonl"}, max_failure_rate=0.1)
    wf = workflow({"nodes": [node], "outputs": {"s": {"source": "${s.count}"}}})
    # 20 items, 10 malformed: never more than 10% of 100 while the stream runs, but
    # once it ends the total is known (20) and 50% is more than the rate allows
    text = "".join('{"n": 1}\n' if i % 2 else "{bad\n" for i in range(20))
    r = plait("run", wf, "-o", "json", "-q", input=text)
    assert r.code == 1, r
    assert "10 of 20 items failed, more than max_failure_rate=0.1" in r.stderr
    # 2 of 40: within the rate
    text = "".join("{bad\n" if i in (3, 30) else '{"n": 1}\n' for i in range(40))
    r = plait("run", wf, "-o", "json", "-q", input=text)
    assert r.code == 0, r
    assert r.json["outputs"]["s"] == 40


def test_input_and_completion_order_and_a_slow_head_holds_launches(plait, workflow, tmp_path):
    nodes_file = write_nodes(tmp_path)
    n = 1100  # more than the reorder buffer holds (1,000)
    # item 0 waits until the last item the buffer admits while it is held has ended
    jsonl(tmp_path / "many.jsonl", [{"n": i, "until": "end 999" if i == 0 else ""} for i in range(n)])
    jsonl(tmp_path / "few.jsonl", [{"n": i, "until": "end 7" if i == 0 else ""} for i in range(8)])

    def held(node_id: str, source: str, order: str) -> dict[str, Any]:
        log = str(tmp_path / f"{node_id}.log")
        return {
            "id": node_id,
            "type": "hold",
            "params": {
                "value": "${item}",
                "log": log,
                "until_line": "${item.until}",
            },
            "batch": {
                "items": {"from": source},
                "parallel": True,
                "max_concurrent": 4,
                "executor": "threads",
                "results": {"to": f"{node_id}.jsonl", "order": order},
            },
        }

    nodes = [
        held("bounded", "many.jsonl", "input"),
        held("inorder", "few.jsonl", "input"),
        held("asdone", "few.jsonl", "completion"),
    ]
    # groups of two are held back by the first item they would hold: the group
    # of items 998 and 999 is the last one launched while the head group waits
    jsonl(tmp_path / "pairs.jsonl", [{"n": i, "until": "end 998" if i == 0 else ""} for i in range(n)])
    grouped = held("grouped", "pairs.jsonl", "input")
    grouped["params"]["until_line"] = "${item[0].until}"
    grouped["batch"]["group"] = 2
    nodes.append(grouped)
    wf = workflow({"nodes": nodes, "outputs": {n["id"]: {"source": "${" + n["id"] + "}"} for n in nodes}})
    r = plait("run", wf, "--nodes", nodes_file, "-o", "json", "-q")
    assert r.code == 0, r
    # While item 0 was held, the buffer filled with items 1..999, and no later
    # item was launched: item 1000 started only after item 0 ended.
    first = rows(tmp_path / "bounded.jsonl")
    assert [x["index"] for x in first] == list(range(n))
    assert first[0]["launched"] <= 1000
    log = (tmp_path / "bounded.log").read_text().splitlines()
    assert log.index("start 1000") > log.index("end 0")
    pairs = rows(tmp_path / "grouped.jsonl")
    assert [x["index"] for x in pairs] == list(range(n))
    assert pairs[0]["value"] == {"n": 0, "until": "end 998"}
    assert pairs[0]["launched"] <= 500
    log = (tmp_path / "grouped.log").read_text().splitlines()
    assert log.index("start 1000") > log.index("end 0")
    assert [x["index"] for x in rows(tmp_path / "inorder.jsonl")] == list(range(8))
    done = [x["index"] for x in rows(tmp_path / "asdone.jsonl")]
    assert sorted(done) == list(range(8)) and done[-1] == 0  # item 0 ended after item 7


def test_interrupt_leaves_a_valid_partial_file_and_resume_appends_without_duplicates(plait, workflow, tmp_path):
    nodes_file = write_nodes(tmp_path)
    n = 400
    jsonl(tmp_path / "items.jsonl", [{"n": i} for i in range(n)])
    slow = tmp_path / "slow"
    slow.write_text("")
    log = tmp_path / "run.log"
    node = {
        "id": "h",
        "type": "hold",
        "params": {"value": "${item}", "log": str(log), "slow_while": str(slow)},
        "batch": {
            "items": {"from": "items.jsonl"},
            "parallel": True,
            "max_concurrent": 4,
            "executor": "threads",
            "results": {"to": "out.jsonl"},
        },
    }
    wf = workflow({"nodes": [node], "outputs": {"count": {"source": "${h.count}"}}})
    proc = popen_cli("run", wf, "--nodes", nodes_file, "-q", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if log.exists() and log.read_text().count("end ") >= 40:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    partial = tmp_path / "out.jsonl.partial"
    assert not (tmp_path / "out.jsonl").exists()
    written = rows(partial)  # every line parses
    indexes = [w["index"] for w in written]
    assert len(indexes) == len(set(indexes)) and 40 <= len(indexes) < n
    assert all(w["value"] == {"n": w["index"]} for w in written)

    slow.unlink()
    r = plait("resume", "last", "--nodes", nodes_file, "-o", "json", "-q")
    assert r.code == 0, r
    final = rows(tmp_path / "out.jsonl")
    assert [w["index"] for w in final] == list(range(n))
    assert all(w["value"] == {"n": w["index"]} for w in final)
    assert not partial.exists()


def test_groups_map_back_fail_per_group_and_resume_per_group(plait, workflow, tmp_path):
    nodes_file = write_nodes(tmp_path)
    jsonl(tmp_path / "ten.jsonl", [{"n": i} for i in range(10)])
    flag = tmp_path / "refuse"
    flag.write_text("")
    log = tmp_path / "groups.log"
    mapped = {
        "id": "mapped",
        "type": "hold",
        "params": {"value": "${item}", "fail_while": str(flag), "fail_on": [4]},
        "batch": {"items": {"from": "ten.jsonl"}, "group": 3, "error_handling": "continue"},
    }
    shared = {
        "id": "shared",
        "type": "echo",
        "params": {"first": "${item[0].n}"},
        "batch": {"items": {"from": "ten.jsonl"}, "group": 4},
    }
    resumed = {
        "id": "resumed",
        "type": "hold",
        "params": {"value": "${item}", "log": str(log), "fail_while": str(flag), "fail_on": [7]},
        "batch": {"items": {"from": "ten.jsonl"}, "group": 3, "results": {"to": "groups.jsonl"}},
    }
    wf = workflow({
        "nodes": [mapped, shared, resumed],
        "outputs": {"mapped": {"source": "${mapped}"}, "shared": {"source": "${shared}"}},
    })
    r = plait("run", wf, "--nodes", nodes_file, "-o", "json")
    assert r.code == 1, r
    out = r.json["outputs"] if r.json["outputs"] else None
    node_errors = r.json["nodes"]
    assert node_errors["mapped"]["items"] == {"count": 10, "succeeded": 7, "failed": 3}
    assert node_errors["shared"]["items"] == {"count": 10, "succeeded": 10, "failed": 0}
    assert "item 6 failed: refused 7" in node_errors["resumed"]["error"]
    assert out is None or "resumed" not in out
    partial = rows(tmp_path / "groups.jsonl.partial")
    assert [p["index"] for p in partial][:6] == [0, 1, 2, 3, 4, 5]
    assert (tmp_path / "groups.log").read_text().splitlines()[:3] == ["start 0", "end 0", "start 3"]

    flag.unlink()
    r = plait("resume", "last", "--nodes", nodes_file, "-o", "json")
    assert r.code == 0, r
    # the plan counts items, as the node's total does (it counted groups against items)
    # (7 + 10 + 6 items finished; 3 + 3 failed; the resumed node's last group never ran)
    assert "reuse 23 · rerun 6 failed · run 1 unfinished" in r.stderr, r.stderr
    assert "resumed  10 items, 6 reused" in r.stderr, r.stderr  # 6 kept by the results file
    shown = plait("show", r.json["run_id"]).stdout
    assert "items     30 ok" in shown, shown
    assert "10/10 ok, 7 reused" in shown and "10/10 ok, 10 reused" in shown, shown
    assert "10/10 ok, 6 reused" in shown, shown  # the file's rows, though they sent no item events
    final = rows(tmp_path / "groups.jsonl")
    assert [x["index"] for x in final] == list(range(10))
    assert [x["value"] for x in final] == [{"n": i} for i in range(10)]  # one item's own value each
    starts = [line for line in log.read_text().splitlines() if line.startswith("start")]
    assert starts[-2:] == ["start 6", "start 9"]  # the resume ran the unfinished groups only
    mapped_out = r.json["outputs"]["mapped"]["results"]
    assert [x["value"] for x in mapped_out] == [{"n": i} for i in range(10)]
    shared_out = r.json["outputs"]["shared"]["results"]
    assert [x["first"] for x in shared_out] == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]


def test_a_group_counts_as_its_items_in_the_record_and_in_max_failures(plait, workflow, tmp_path):
    nodes_file = write_nodes(tmp_path)
    jsonl(tmp_path / "ten.jsonl", [{"n": i} for i in range(10)])
    flag = tmp_path / "refuse"
    flag.write_text("")

    def grouped(**batch):
        return {
            "id": "g",
            "type": "hold",
            "params": {"value": "${item}", "fail_while": str(flag), "fail_on": [4]},
            "batch": {"items": {"from": "ten.jsonl"}, "group": 3, "error_handling": "continue", **batch},
        }

    r = plait("run", workflow({"nodes": [grouped()]}, "counted.json"), "--nodes", nodes_file, "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["nodes"]["g"]["items"] == {"count": 10, "succeeded": 7, "failed": 3}
    # the record counts items too (4 groups ran: 3 of them, holding 7 items, succeeded)
    shown = plait("show", r.json["run_id"])
    assert "7 ok, 3 failed" in shown.stdout and "7/10 ok" in shown.stdout, shown
    # the failed row is a group: named as one, its items counted
    assert "failed items (3, in 1 group)" in shown.stdout and "g group 1  item: [" in shown.stdout, shown
    listed = plait("runs")
    assert "7 ok, 3 failed" in listed.stdout, listed

    # the failed group is 3 failed items: more than max_failures=2 (as a group it was 1)
    r = plait("run", workflow({"nodes": [grouped(max_failures=2)]}, "limited.json"), "--nodes", nodes_file, "-q")
    assert r.code == 1, r
    assert "batch aborted: 3 items failed, more than max_failures=2" in r.stderr


def test_the_python_api_takes_items_as_a_path_or_an_open_file(workflow, tmp_path):
    import io

    import pytest

    import plait
    from plait.errors import UsageError

    wf = workflow({"nodes": [batch_node("s", {"from": "-"})], "outputs": {"s": {"source": "${s.results}"}}})
    (tmp_path / "given.jsonl").write_text('{"n": 1}\n{"n": 2}\n')
    by_path = plait.run(wf, items=tmp_path / "given.jsonl")  # the extension gives the format
    assert by_path.ok and [r["got"] for r in by_path.outputs["s"]] == [{"n": 1}, {"n": 2}]
    by_file = plait.run(wf, items=io.BytesIO(b"a\nb\n"))
    assert by_file.ok and [r["got"] for r in by_file.outputs["s"]] == ["a", "b"]
    plain = workflow({"nodes": [batch_node("p", [1])]})
    with pytest.raises(UsageError, match="no batch of this workflow reads its items from standard input"):
        plait.run(plain, items=io.BytesIO(b"a\n"))


def test_a_batch_reading_standard_input_resumes_from_the_same_items_piped_again(plait, workflow, tmp_path):
    nodes_file = write_nodes(tmp_path)
    flag = tmp_path / "refuse"
    flag.write_text("")
    node = {
        "id": "h",
        "type": "hold",
        "params": {"value": "${item}", "log": str(tmp_path / "h.log"), "fail_while": str(flag), "fail_on": [5]},
        "batch": {"items": {"from": "-", "format": "jsonl"}, "results": {"to": "h.jsonl"}},
    }
    wf = workflow({"nodes": [node], "outputs": {"h": {"source": "${h.results}"}}})
    text = "".join(json.dumps({"n": i}) + "\n" for i in range(9))
    r = plait("run", wf, "--nodes", nodes_file, "-q", input=text)
    assert r.code == 1 and "refused 5" in r.stderr, r
    assert [x["index"] for x in rows(tmp_path / "h.jsonl.partial")] == [0, 1, 2, 3, 4, 5]
    flag.unlink()
    r = plait("resume", "last", "--nodes", nodes_file, "-o", "json", "-q", input=text)
    assert r.code == 0, r
    final = rows(tmp_path / "h.jsonl")
    assert [x["value"] for x in final] == [{"n": i} for i in range(9)] and "error" not in final[5]
    starts = (tmp_path / "h.log").read_text().splitlines()
    assert [s for s in starts if s.startswith("start")][6:] == [f"start {i}" for i in range(5, 9)]


def test_a_resume_reads_the_items_file_the_run_read(plait, workflow, tmp_path):
    # an item that fails until a flag file is gone: the first run fails at item 3
    flag = tmp_path / "fail-3"
    flag.write_text("")
    node = {
        "id": "b",
        "type": "shell",
        "params": {"command": f"test ${{item}} != 3 -o ! -e {flag} && echo ${{item}}"},
        "batch": {"items": {"from": "-", "format": "jsonl"}},
    }
    outputs = {"n": {"source": "${b.success_count}"}, "reused": {"source": "${b.batch_metadata.reused}"}}
    wf = workflow({"nodes": [node], "outputs": outputs}, "items.json")
    (tmp_path / "given.jsonl").write_text("".join(f"{i}\n" for i in range(1, 6)))
    r = plait("run", wf, "--items", "given.jsonl", "-o", "json", "-q")
    assert r.code == 1 and r.json["resume"] == f"plait resume {r.json['run_id']}"
    first = r.json["run_id"]

    # the printed command alone is enough: the record keeps the file, and the resume reads it
    flag.unlink()
    r = plait("resume", first, "-o", "json", input="")
    assert r.code == 0, r
    assert r.json["outputs"]["n"] == 5
    assert r.json["outputs"]["reused"] == 2
    assert f"(items from {tmp_path / 'given.jsonl'})" in r.stderr

    # a file that has gone since: said so, with how to give it again, and nothing runs
    flag.write_text("")
    r = plait("run", wf, "--items", "given.jsonl", "-o", "json", "-q")
    failed = r.json["run_id"]
    (tmp_path / "given.jsonl").rename(tmp_path / "moved.jsonl")
    r = plait("resume", failed)
    assert r.code == 2
    assert f"run {failed} read its items from {tmp_path / 'given.jsonl'} (--items), which is not there any more" in r.stderr
    assert f"plait resume {failed} --items FILE" in r.stderr
    flag.unlink()
    r = plait("resume", failed, "--items", "moved.jsonl", "-o", "json", "-q")
    assert r.code == 0 and r.json["outputs"]["n"] == 5

    # items piped in: the resume hint says to pipe them again, and a terminal is refused
    flag.write_text("")
    text = (tmp_path / "moved.jsonl").read_text()
    r = plait("run", wf, input=text)
    assert r.code == 1
    piped = r.stderr.split("plait resume ")[1].split()[0]
    assert f"resume:  plait resume {piped} (pipe the same items into it)" in r.stderr
    code, err = on_a_terminal(tmp_path, "resume", piped)
    assert code == 2, err
    assert f"run {piped} read its items from standard input, and this one has none piped in" in err
    # an empty pipe: it runs what it was given, and says the items were not the run's
    r = plait("resume", piped, "-o", "json", "-q", input="")
    assert r.code == 0 and r.json["outputs"]["n"] == 0
    assert f"batch 'b' read 0 items from standard input, where run {piped} had 3" in r.stderr
    flag.unlink()
    r = plait("resume", piped, "-o", "json", "-q", input=text)
    assert r.code == 0 and r.json["outputs"]["n"] == 5
    assert "warning" not in r.stderr
