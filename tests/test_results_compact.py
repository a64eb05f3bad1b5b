"""A batch's results held as JSON text (runtime/results.py), and how they read
through templates, the API and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import plait
from conftest import run_inprocess
from plait.runtime.results import ResultList, json_default, plain


def full(i: int, item: object, attempts: int, outputs: dict, error: object = None) -> dict:
    result = {"index": i, "item": item, "attempts": attempts, **outputs}
    if error is not None:
        result["error"] = error
    return result


def test_results_read_back_as_they_were_given_in_index_order() -> None:
    rl = ResultList(4)
    # out of order, as a parallel batch finishes them
    rl.put_item(2, {"id": 2}, 1, {"v": [1, 2.5, None, True], "s": "é\u2028"})
    rl.put_item(0, "a", 3, {"v": "x"})
    rl.put_item(3, None, 1, {}, "boom")
    rl.put_item(1, 7, 1, None)
    expected = [
        full(0, "a", 3, {"v": "x"}),
        full(1, 7, 1, {}),
        full(2, {"id": 2}, 1, {"v": [1, 2.5, None, True], "s": "é\u2028"}),
        full(3, None, 1, {}, "boom"),
    ]
    assert list(rl) == expected
    assert [rl[i] for i in range(4)] == expected
    assert rl[-1] == expected[-1] and rl[1:3] == expected[1:3]
    assert list(rl[0]) == ["index", "item", "attempts", "v"]  # the keys in the order a result always had
    assert rl == expected and expected == rl and rl != expected[:3]
    assert len(rl) == 4 and rl.present() is rl and rl.missing() == []


def test_each_read_is_a_fresh_value() -> None:
    rl = ResultList(1)
    rl.put_item(0, {"a": [1]}, 1, {"v": {"b": 2}})
    first = rl[0]
    first["item"]["a"].append(99)
    assert rl[0]["item"] == {"a": [1]}


def test_outputs_named_like_the_envelope_keep_their_values() -> None:
    rl = ResultList(3)
    rl.put_item(0, "x", 1, {"item": "the node's own item", "index": 42})
    rl.put_item(1, "y", 300, {"v": 1})  # more attempts than a byte holds
    rl.put_item(2, "z", 2, {"attempts": "many"})
    assert rl[0] == {"index": 42, "item": "the node's own item", "attempts": 1}
    assert rl[1] == full(1, "y", 300, {"v": 1})
    assert rl[2] == {"index": 2, "item": "z", "attempts": "many"}


def test_values_that_are_not_json_are_kept_as_objects() -> None:
    rl = ResultList(3)
    marker = object()
    rl.put_item(0, 1, 1, {"v": 1})
    rl.put_item(1, 2, 2, {"v": marker})
    rl.put_item(2, 3, 1, {"v": math.inf})  # JSON text as Python writes it (Infinity)
    got = list(rl)
    assert got[1] == full(1, 2, 2, {"v": marker}) and got[1]["v"] is marker
    assert got[2]["v"] == math.inf
    assert rl[1]["v"] is marker
    # given again, as text this time: the object is gone
    rl.put_item(1, 2, 3, {"v": "text"})
    assert rl[1] == full(1, 2, 3, {"v": "text"})
    assert len(rl.present()) == 3


def test_missing_results_and_growth_past_the_capacity() -> None:
    rl = ResultList(2)
    rl.put_item(0, "a", 1, {})
    rl.put_item(5000, "far", 1, {})  # a stream of unknown length grows it
    assert len(rl) > 5000
    assert rl.missing()[:3] == [1, 2, 3]
    kept = rl.present()
    assert [r["item"] for r in kept] == ["a", "far"]
    assert [r["index"] for r in kept] == [0, 5000]  # an item keeps its own index
    assert len(kept) == 2 and kept.missing() == []


def test_a_result_given_twice_keeps_the_last_and_counts_once() -> None:
    rl = ResultList(2)
    rl.put_item(0, "a", 1, {"v": 1})
    rl.put_item(0, "a", 2, {"v": 2})
    rl.put_item(1, "b", 1, {})
    assert rl[0]["v"] == 2 and rl.present() is rl


def test_memory_is_the_text_plus_a_few_bytes_per_result() -> None:
    rl = ResultList(10_000)
    for i in range(10_000):
        rl.put_item(i, {"id": i}, 1, {"v": {"id": i}})
    # {"item":{"id":1234},"v":{"id":1234}} is 36 bytes; the index adds 13
    assert rl.nbytes() < 10_000 * 50
    assert rl[9_999] == full(9_999, {"id": 9_999}, 1, {"v": {"id": 9_999}})


def test_results_across_many_compressed_blocks_read_in_any_order() -> None:
    import random

    n = 30_000
    rl = ResultList(n)
    order = list(range(n))
    rng = random.Random(7)
    # a parallel batch: completion order close to input order, not equal to it
    for start in range(0, n, 64):
        chunk = order[start : start + 64]
        rng.shuffle(chunk)
        for i in chunk:
            rl.put_item(i, {"id": i, "text": f"row {i} " * (i % 5)}, 1 + i % 3, {"v": i * 2})
    def want(i: int) -> dict:
        return full(i, {"id": i, "text": f"row {i} " * (i % 5)}, 1 + i % 3, {"v": i * 2})
    picks = [rng.randrange(n) for _ in range(500)]
    assert [rl[i] for i in picks] == [want(i) for i in picks]
    assert list(rl) == [want(i) for i in range(n)]
    # the text is compressed: far less than its length
    plain_text = sum(len(json.dumps(want(i), separators=(",", ":"))) for i in range(n))
    assert rl.nbytes() < plain_text / 2


def test_iterating_reads_results_stored_in_any_order_with_gaps_and_objects() -> None:
    import random

    n = 20_000
    rng = random.Random(3)
    order = list(range(n))
    rng.shuffle(order)  # each block of text holds results from all over the list
    rl = ResultList(n)
    want: list[object] = [None] * n
    marker = object()
    for i in order:
        if i % 997 == 0:
            continue  # no result (yet)
        outputs = {"text": "é" * (i % 7) + "x" * (i % 300), "n": i}
        if i % 1231 == 0:
            outputs["v"] = marker  # not JSON: kept as the object
        rl.put_item(i, i, 1 + i % 3, outputs)
        want[i] = full(i, i, 1 + i % 3, outputs)
    assert list(rl) == want
    assert list(rl.present()) == [w for w in want if w is not None]


def test_plain_and_json_default_turn_results_into_lists() -> None:
    rl = ResultList(1)
    rl.put_item(0, 1, 1, {"v": 2})
    out = plain({"results": rl, "count": 1})
    assert type(out["results"]) is list and out["results"] == [full(0, 1, 1, {"v": 2})]
    assert json.loads(json.dumps({"r": rl}, default=json_default)) == {"r": [full(0, 1, 1, {"v": 2})]}


def batch_then_reader(reader: dict) -> dict:
    return {
        "inputs": {"xs": {"type": "array"}},
        "nodes": [
            {"id": "e", "type": "echo", "params": {"v": "${item}"}, "batch": {"items": "${xs}", "parallel": True, "max_concurrent": 4}},
            reader,
        ],
        "outputs": {"out": {"source": "${r.v}"}, "all": {"source": "${e.results}"}},
    }


def test_templates_read_compact_results_by_index_whole_and_in_text() -> None:
    wf = batch_then_reader({"id": "r", "type": "echo", "params": {"v": {
        "second": "${e.results[1].v}",
        "by_index": "${e.results[2].item}",
        "text": "n=${e.count} first=${e.results[0]}",
    }}})
    result = plait.run(wf, inputs={"xs": [10, 20, 30]})
    assert result.ok, result.errors
    out = result.outputs["out"]
    assert out["second"] == 20 and out["by_index"] == 30
    assert out["text"] == 'n=3 first={"index": 0, "item": 10, "attempts": 1, "v": 10}'
    assert type(result.outputs["all"]) is list
    assert result.outputs["all"] == [full(i, x, 1, {"v": x}) for i, x in enumerate([10, 20, 30])]
    # the run's own values keep the compact form
    assert isinstance(result.values["e"]["results"], ResultList)


def test_a_batch_over_another_batchs_results() -> None:
    wf = batch_then_reader(
        {"id": "r", "type": "echo", "params": {"v": "${row.v}"}, "batch": {"items": "${e.results}", "as": "row"}}
    )
    wf["outputs"] = {"out": {"source": "${r.results}"}}
    result = plait.run(wf, inputs={"xs": ["a", "b"]})
    assert result.ok, result.errors
    assert [r["v"] for r in result.outputs["out"]] == ["a", "b"]
    assert [r["item"]["index"] for r in result.outputs["out"]] == [0, 1]


def test_cli_prints_compact_results_as_json(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [
        {"id": "e", "type": "echo", "params": {"v": "${item}"}, "batch": {"items": [1, "two", {"three": 3}]}}
    ]}))
    r = run_inprocess("run", str(wf), "-o", "json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    results = json.loads(r.stdout)["outputs"]["results"]
    assert results == [full(i, x, 1, {"v": x}) for i, x in enumerate([1, "two", {"three": 3}])]
