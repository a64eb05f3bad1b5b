"""Result sinks: batch results written to JSONL or CSV as items finish, resumable."""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import plait_env
from plait.runtime.sinks import IndexSet, ResultSink, SinkError, validate_sink
from plait.runtime.sources import open_source


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ok(i: int, **extra: Any) -> dict[str, Any]:
    return {"index": i, "item": f"item{i}", "attempts": 1, "response": i * 10, **extra}


def failed(i: int, error: str = "boom") -> dict[str, Any]:
    return {"index": i, "item": f"item{i}", "attempts": 3, "error": error}


def drive(sink: ResultSink, n: int, window: int, slow: int) -> dict[str, Any]:
    """A small driver on real threads: items run in a pool of ``window``; item
    ``slow`` waits until every launch the sink allows is done, then finishes.

    Records what the sink buffered, and where launching stopped."""
    release = threading.Event()
    outcomes: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()

    def work(i: int) -> None:
        if i == slow:
            release.wait(30)
        outcomes.put((i, ok(i)))

    seen: dict[str, Any] = {"max_buffered": 0, "stalled_at": None, "buffered_at_stall": None}
    in_flight: set[int] = set()
    next_index = 0
    with ThreadPoolExecutor(window) as pool:
        while next_index < n or in_flight:
            while next_index < n and len(in_flight) < window and sink.can_accept(next_index):
                pool.submit(work, next_index)
                in_flight.add(next_index)
                next_index += 1
            if in_flight == {slow} and not release.is_set():
                # Only the slow item runs and nothing more may start.
                if next_index < n:
                    seen["stalled_at"] = next_index
                    seen["buffered_at_stall"] = sink.buffered
                release.set()
            i, result = outcomes.get(timeout=30)
            in_flight.discard(i)
            sink.write(i, result)
            seen["max_buffered"] = max(seen["max_buffered"], sink.buffered)
    return seen


def test_results_are_written_in_input_order_as_the_head_arrives(tmp_path):
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path))
    partial = tmp_path / "out.jsonl.partial"
    sink.write(1, ok(1))
    sink.write(0, ok(0))
    sink.flush()
    assert [r["index"] for r in lines(partial)] == [0, 1]  # readable while the run goes
    sink.write(3, failed(3))
    assert sink.buffered == 1 and sink.head == 2
    sink.write(2, ok(2))
    ref = sink.close(success=True)
    assert ref == {"path": str(tmp_path / "out.jsonl"), "format": "jsonl", "count": 4}
    assert not partial.exists()
    rows = lines(tmp_path / "out.jsonl")
    assert rows[0] == ok(0)
    assert rows[3] == {"index": 3, "error": "boom", "item": "item3", "attempts": 3}
    assert list(rows[3])[:2] == ["index", "error"]  # so a resume can tell failures cheaply


def test_a_slow_head_stops_launches_and_the_buffer_stays_within_capacity(tmp_path):
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path), capacity=8)
    seen = drive(sink, n=60, window=4, slow=0)
    assert seen["stalled_at"] == 8  # the head plus capacity - 1 results behind it
    assert seen["buffered_at_stall"] == 7
    assert seen["max_buffered"] == 7
    sink.close(success=True)
    assert [r["index"] for r in lines(tmp_path / "out.jsonl")] == list(range(60))


def test_completion_order_writes_results_as_they_come_without_holding_any(tmp_path):
    sink = ResultSink({"to": "out.jsonl", "order": "completion"}, base_dir=str(tmp_path), capacity=2)
    seen = drive(sink, n=30, window=3, slow=0)
    assert seen["stalled_at"] is None and seen["max_buffered"] == 0
    assert sink.close(success=True)["count"] == 30
    order = [r["index"] for r in lines(tmp_path / "out.jsonl")]
    assert sorted(order) == list(range(30))
    assert order[-1] == 0  # the slow one came last


def test_chosen_fields_reach_inside_and_a_failure_always_keeps_its_error(tmp_path):
    spec = {"to": "out.jsonl", "fields": ["item.id", "response", "missing"]}
    with ResultSink(spec, base_dir=str(tmp_path)) as sink:
        sink.write(0, {"index": 0, "item": {"id": 7, "body": "long"}, "response": "yes"})
        sink.write(1, {"index": 1, "item": {"id": 8}, "error": "timed out"})
        sink.close(success=True)
    assert lines(tmp_path / "out.jsonl") == [
        {"index": 0, "item.id": 7, "response": "yes", "missing": None},
        {"index": 1, "error": "timed out", "item.id": 8, "response": None, "missing": None},
    ]
    spec = {"to": "two.jsonl", "fields": ["error", "item"]}
    with ResultSink(spec, base_dir=str(tmp_path)) as sink:
        sink.write(0, ok(0))
        sink.close(success=True)
    assert lines(tmp_path / "two.jsonl") == [{"index": 0, "error": None, "item": "item0"}]


def test_errors_can_go_to_their_own_file(tmp_path):
    sink = ResultSink({"to": "out/ok.jsonl", "errors": "out/errors.jsonl"}, base_dir=str(tmp_path))
    for i in range(5):
        sink.write(i, failed(i) if i % 2 else ok(i))
    ref = sink.close(success=True)
    assert ref == {
        "path": str(tmp_path / "out" / "ok.jsonl"),
        "format": "jsonl",
        "count": 3,
        "errors_path": str(tmp_path / "out" / "errors.jsonl"),
        "errors_count": 2,
    }
    assert [r["index"] for r in lines(tmp_path / "out" / "ok.jsonl")] == [0, 2, 4]
    assert [r["index"] for r in lines(tmp_path / "out" / "errors.jsonl")] == [1, 3]


def test_on_failure_the_partial_file_stays_with_every_finished_item(tmp_path):
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path))
    for i in (0, 1, 3, 4):  # item 2 never finished (fail_fast stopped it)
        sink.write(i, ok(i))
    ref = sink.close(success=False)
    assert ref == {"path": str(tmp_path / "out.jsonl.partial"), "format": "jsonl", "count": 4, "partial": True}
    assert not (tmp_path / "out.jsonl").exists()
    assert [r["index"] for r in lines(tmp_path / "out.jsonl.partial")] == [0, 1, 3, 4]
    # Leaving the with-block without a close is a failure too, never a rename.
    with ResultSink({"to": "two.jsonl"}, base_dir=str(tmp_path)) as sink:
        sink.write(0, ok(0))
    assert (tmp_path / "two.jsonl.partial").exists() and not (tmp_path / "two.jsonl").exists()


def test_success_with_a_missing_result_is_refused_and_left_partial(tmp_path):
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path))
    sink.write(0, ok(0))
    sink.write(2, ok(2))
    with pytest.raises(SinkError, match="item 1 has none"):
        sink.close(success=True)
    assert (tmp_path / "out.jsonl.partial").exists()
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(1, ok(1))


def test_a_result_written_twice_is_a_driver_bug_and_says_so(tmp_path):
    with ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path)) as sink:
        sink.write(0, ok(0))
        with pytest.raises(ValueError, match="item 0 was already written"):
            sink.write(0, ok(0))
        sink.write(2, ok(2))
        with pytest.raises(ValueError, match="item 2 was already written"):
            sink.write(2, ok(2))


_KILLED_CHILD = """
import sys
from plait.runtime.sinks import ResultSink
flushed = ResultSink({"to": sys.argv[1]}, flush_interval=0.0)
buffered = ResultSink({"to": sys.argv[2]}, flush_interval=3600.0)
for i in range(50):
    flushed.write(i, {"index": i, "item": i})
    buffered.write(i, {"index": i, "item": i})
print("written", flush=True)
sys.stdin.read()  # until killed
"""


def test_a_kill_keeps_what_was_flushed_and_a_resume_appends_without_duplicates(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=plait_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "written\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    partial = tmp_path / "a.jsonl.partial"
    assert [r["index"] for r in lines(partial)] == list(range(50))
    # Not flushed yet when killed: within the window a kill may lose.
    assert (tmp_path / "b.jsonl.partial").read_text() == ""
    with open(partial, "a") as f:
        f.write('{"index": 50, "item": 5')  # a line torn by the kill
    sink = ResultSink({"to": "a.jsonl"}, base_dir=str(tmp_path), resume=True)
    assert sink.done.runs() == [(0, 50)]
    assert sink.count == 50 and sink.head == 50
    for i in range(50, 60):
        assert i not in sink.done
        sink.write(i, {"index": i, "item": i})
    assert sink.close(success=True)["count"] == 60
    assert [r["index"] for r in lines(tmp_path / "a.jsonl")] == list(range(60))


def test_resume_in_input_order_cuts_back_to_the_complete_prefix(tmp_path):
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path))
    for i in (0, 1, 2, 5, 6):
        sink.write(i, failed(i) if i == 1 else ok(i))
    sink.close(success=False)  # 5 and 6 are written after the gap
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path), resume=True, keep_failed=True)
    assert sink.done.runs() == [(0, 3)]
    assert (sink.count, sink.error_count) == (3, 1)
    assert sink.resumed_errors == [{"index": 1, "error": "boom", "item": "item1", "attempts": 3}]
    for i in range(3, 7):
        sink.write(i, ok(i))
    sink.close(success=True)
    assert [r["index"] for r in lines(tmp_path / "out.jsonl")] == list(range(7))


def test_resume_in_input_order_walks_the_results_and_errors_files_together(tmp_path):
    spec = {"to": "ok.jsonl", "errors": "err.jsonl"}
    (tmp_path / "ok.jsonl.partial").write_text("".join(json.dumps(ok(i)) + "\n" for i in (0, 1, 3, 4)))
    # the failure of item 2 was lost from the errors file when the run died
    sink = ResultSink(spec, base_dir=str(tmp_path), resume=True)
    assert sink.done.runs() == [(0, 2)]
    assert [r["index"] for r in lines(tmp_path / "ok.jsonl.partial")] == [0, 1]
    for i in range(2, 5):
        sink.write(i, failed(i) if i == 2 else ok(i))
    ref = sink.close(success=True)
    assert (ref["count"], ref["errors_count"]) == (4, 1)
    assert [r["index"] for r in lines(tmp_path / "ok.jsonl")] == [0, 1, 3, 4]
    assert [r["index"] for r in lines(tmp_path / "err.jsonl")] == [2]


def test_resume_in_completion_order_learns_every_index_held(tmp_path):
    spec = {"to": "out.jsonl", "order": "completion"}
    partial = tmp_path / "out.jsonl.partial"
    partial.write_text("".join(json.dumps(ok(i)) + "\n" for i in (3, 0, 5, 1)) + '{"index": 4, "it')
    sink = ResultSink(spec, base_dir=str(tmp_path), resume=True)
    assert sink.done.runs() == [(0, 2), (3, 4), (5, 6)]
    assert len(sink.done) == 4
    for i in range(7):
        if i not in sink.done:
            sink.write(i, ok(i))
    sink.close(success=True)
    indexes = [r["index"] for r in lines(tmp_path / "out.jsonl")]
    assert indexes == [3, 0, 5, 1, 2, 4, 6]


def test_resume_without_a_partial_file_starts_fresh_and_refuses_a_foreign_one(tmp_path):
    sink = ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path), resume=True)
    assert len(sink.done) == 0
    sink.close(success=False)
    (tmp_path / "out.jsonl.partial").write_text('{"index": 0}\nhello\n{"index": 1}\n')
    with pytest.raises(SinkError) as exc:
        ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path), resume=True)
    assert "line 2 is not a result line written by plait" in exc.value.message
    assert "delete the partial file" in exc.value.hint


def test_a_csv_sink_writes_columns_quotes_and_nested_values_as_json(tmp_path):
    sink = ResultSink({"to": "out.csv"}, base_dir=str(tmp_path))
    sink.write(0, {"index": 0, "item": {"id": 1}, "text": 'a, "b"\nc', "n": 1.5, "flag": True})
    sink.write(1, {"index": 1, "item": [1, 2], "error": "bad thing"})
    sink.write(2, {"index": 2, "item": "x", "text": None, "extra": "dropped", "n": 2, "flag": False})
    ref = sink.close(success=True)
    assert ref == {"path": str(tmp_path / "out.csv"), "format": "csv", "count": 3}
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["index", "item", "text", "n", "flag", "error"],
        ["0", '{"id": 1}', 'a, "b"\nc', "1.5", "true", ""],
        ["1", "[1, 2]", "", "", "", "bad thing"],
        ["2", "x", "", "2", "false", ""],
    ]
    # plait reads its own results file back as items
    with open_source({"from": ref}, base_dir=None) as src:
        assert src.total == 3
        assert next(iter(src)) == (0, {"index": "0", "item": '{"id": 1}', "text": 'a, "b"\nc', "n": "1.5", "flag": "true", "error": ""})


def test_a_csv_sink_takes_its_columns_from_fields_or_the_drivers_default(tmp_path):
    with ResultSink({"to": "f.csv", "fields": ["item.id", "response"]}, base_dir=str(tmp_path)) as sink:
        sink.write(0, {"index": 0, "item": {"id": 5}, "response": "r"})
        sink.close(success=True)
    assert (tmp_path / "f.csv").read_text() == "index,item.id,response,error\n0,5,r,\n"
    with ResultSink({"to": "d.csv"}, base_dir=str(tmp_path), default_fields=["item", "response"]) as sink:
        sink.write(0, failed(0))  # the first result fails: the columns still hold the outputs
        sink.write(1, ok(1))
        sink.close(success=True)
    assert (tmp_path / "d.csv").read_text() == "index,item,response,error\n0,item0,,boom\n1,item1,10,\n"


def test_a_csv_sink_resumes_after_a_row_torn_inside_a_quoted_field(tmp_path):
    spec = {"to": "out.csv", "fields": ["item", "text"]}
    sink = ResultSink(spec, base_dir=str(tmp_path))
    sink.write(0, {"index": 0, "item": "a", "text": "one\ntwo"})
    sink.write(1, {"index": 1, "item": "b", "error": "bad"})
    sink.close(success=False)
    partial = tmp_path / "out.csv.partial"
    with open(partial, "a") as f:
        f.write('2,c,"three\n')  # the kill came after the newline inside the field
    sink = ResultSink(spec, base_dir=str(tmp_path), resume=True, keep_failed=True)
    assert sink.done.runs() == [(0, 2)]
    assert sink.resumed_errors == [{"index": "1", "item": "b", "text": "", "error": "bad"}]
    sink.write(2, {"index": 2, "item": "c", "text": "three\nfour"})
    sink.close(success=True)
    with open(tmp_path / "out.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [
        ["index", "item", "text", "error"],
        ["0", "a", "one\ntwo", ""],
        ["1", "b", "", "bad"],
        ["2", "c", "three\nfour", ""],
    ]
    partial.write_text("index,item,error\n0,a,\n")
    with pytest.raises(SinkError, match="its columns"):
        ResultSink(spec, base_dir=str(tmp_path), resume=True)


def test_values_json_cannot_hold_are_written_as_text_or_as_the_items_error(tmp_path):
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path)) as sink:
        sink.write(0, {"index": 0, "item": {1, 2} and "set", "path": Path("/x"), (1, 2): "tuple key"})
        sink.write(1, {"index": 1, "item": loop})
        sink.close(success=True)
    rows = lines(tmp_path / "out.jsonl")
    assert rows[0] == {"index": 0, "item": "set", "path": "/x"}
    assert rows[1]["index"] == 1 and "cannot be written as JSON" in rows[1]["error"]


def test_writing_many_results_holds_no_memory_per_result(tmp_path):
    tracemalloc.start()
    try:
        with ResultSink({"to": "out.jsonl"}, base_dir=str(tmp_path)) as sink:
            for i in range(10_000):
                sink.write(i, ok(i, body="b" * 600))
            sink.close(success=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert os.path.getsize(tmp_path / "out.jsonl") > 6_000_000
    assert peak < 3_000_000, peak  # the write buffer, not the results


def test_index_sets_keep_runs():
    s = IndexSet()
    for i in (0, 1, 2, 10, 5, 4, 3, 11, 7):
        s.add(i)
    s.add(2)
    assert s.runs() == [(0, 6), (7, 8), (10, 12)]
    assert len(s) == 9
    assert 3 in s and 6 not in s and 12 not in s and -1 not in s and "x" not in s
    s.add(6)
    assert s.runs() == [(0, 8), (10, 12)]
    assert IndexSet.prefix(3).runs() == [(0, 3)] and len(IndexSet.prefix(0)) == 0


def test_validation_names_every_problem_with_its_path_and_a_hint():
    problems = validate_sink(
        {"to": "out.json", "fromat": "csv", "order": "completed", "fields": ["a", "a"], "errors": "out.json"}
    )
    assert problems == [
        ("unknown field 'fromat' in the results sink", ".fromat", "did you mean 'format'?"),
        (
            "cannot tell the results format from the name 'out.json'",
            ".to",
            "a JSON array cannot grow as items finish; use .jsonl (one result per line)",
        ),
        ('unknown results order "completed"', ".order", "did you mean 'completion'?"),
        ("field 'a' is listed twice", ".fields[1]", ""),
        ("'errors' names the same file as 'to'", ".errors", "leave it out to write errors inline"),
    ]
    assert validate_sink({"to": "-"})[0][0] == "results cannot go to standard output"
    assert validate_sink({"to": "x.txt", "format": "xml"}) == [
        ('unknown results format "xml"', ".format", "one of: jsonl, csv")
    ]
    assert validate_sink({"to": "out.jsonl", "fields": []})[0][1] == ".fields"
    assert validate_sink({})[0][0] == "the results sink has no 'to'"
    assert validate_sink(["out.jsonl"])[0][0] == "a results sink must be an object with 'to'"
    assert validate_sink({"to": "${prev.dir}/out"}) == []  # checked once resolved
    assert validate_sink({"to": "r.txt", "format": "jsonl", "order": "completion", "errors": "e.csv"}) == []
    with pytest.raises(SinkError, match=r"batch.results.to: cannot tell the results format"):
        ResultSink({"to": "out.txt"})


def test_a_resume_runs_failed_items_again_in_either_order(tmp_path):
    # input order: the file is cut back to before the first failure
    sink = ResultSink({"to": "in.jsonl"}, base_dir=str(tmp_path))
    for i in range(5):
        sink.write(i, failed(i) if i == 2 else ok(i))
    sink.close(success=False)
    sink = ResultSink({"to": "in.jsonl"}, base_dir=str(tmp_path), resume=True)
    assert sink.done.runs() == [(0, 2)] and (sink.count, sink.error_count) == (2, 0)
    for i in range(2, 5):
        sink.write(i, ok(i))
    sink.close(success=True)
    assert [r.get("error") for r in lines(tmp_path / "in.jsonl")] == [None] * 5
    # completion order: the failed rows leave the file, every other row stays
    spec = {"to": "c.csv", "order": "completion", "fields": ["item"]}
    sink = ResultSink(spec, base_dir=str(tmp_path))
    for i in (3, 0, 4, 1):
        sink.write(i, failed(i) if i in (0, 4) else ok(i))
    sink.close(success=False)
    sink = ResultSink(spec, base_dir=str(tmp_path), resume=True)
    assert sink.done.runs() == [(1, 2), (3, 4)] and sink.count == 2
    for i in (0, 2, 4):
        sink.write(i, ok(i))
    sink.close(success=True)
    with open(tmp_path / "c.csv", newline="") as f:
        got = list(csv.reader(f))
    assert got[0] == ["index", "item", "error"]
    assert sorted(int(r[0]) for r in got[1:]) == [0, 1, 2, 3, 4] and all(r[2] == "" for r in got[1:])
