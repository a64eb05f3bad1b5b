"""Batch processing (SPEC §5) through the real CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest


def batch_node(params: dict, **batch: object) -> dict:
    return {"id": "b", "type": batch.pop("type", "echo"), "params": params, "batch": batch}


# ---------------------------------------------------------------- config


def test_every_bad_batch_field_is_reported_with_its_json_path(plait, workflow):
    wf = workflow(
        {
            "inputs": {"things": {"type": "array"}},
            "nodes": [
                {"id": "first", "type": "echo", "params": {}},
                {
                    "id": "b",
                    "type": "echo",
                    "params": {},
                    "batch": {
                        "items": [1],
                        "as": "first",
                        "max_concurrent": 0,
                        "max_failure_rate": 1.5,
                        "error_handling": "contnue",
                        "paralel": True,
                    },
                },
                {"id": "c", "type": "echo", "params": {}, "batch": {"items": [1], "as": "things"}},
            ],
        }
    )
    r = plait("validate", wf, "-o", "json")
    assert r.code == 2, r
    paths = {e["path"]: e for e in r.json["errors"]}
    assert "nodes[1].batch.as" in paths and "node id" in paths["nodes[1].batch.as"]["message"]
    assert "nodes[1].batch.max_concurrent" in paths
    assert "nodes[1].batch.max_failure_rate" in paths
    assert "nodes[1].batch.error_handling" in paths
    assert paths["nodes[1].batch.error_handling"]["hint"] == "did you mean 'continue'?"
    assert paths["nodes[1].batch.paralel"]["hint"] == "did you mean 'parallel'?"
    assert "input" in paths["nodes[2].batch.as"]["message"]
    assert "Traceback" not in r.stderr


def test_defaults_of_the_batch_config_show_in_its_metadata(plait, workflow):
    wf = workflow({"nodes": [batch_node({"v": "${item}"}, items=["x"])]})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    meta = r.json["outputs"]["batch_metadata"]
    assert meta["parallel"] is False
    assert meta["max_concurrent"] == 10
    assert meta["max_retries"] == 1
    assert meta["error_handling"] == "fail_fast"


# ---------------------------------------------------------------- items


def test_items_from_a_template_an_inline_list_with_templates_and_a_json_string(plait, workflow):
    wf = workflow(
        {
            "inputs": {"who": {"type": "string", "default": "ann"}},
            "nodes": [
                {"id": "gen", "type": "shell", "params": {"command": "echo '[\"p\", \"q\"]'"}},
                batch_node({"v": "${item}"}, items="${gen.stdout}", **{"as": "item"}),
                {
                    "id": "inline",
                    "type": "echo",
                    "params": {"v": "${x}", "i": "${__index__}"},
                    "batch": {"items": ["${who}", {"name": "${who}"}, 3], "as": "x"},
                },
            ],
            "outputs": {
                "from_stdout": {"source": "${b.results}"},
                "inline": {"source": "${inline.results}"},
            },
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert [x["v"] for x in out["from_stdout"]] == ["p", "q"]
    assert [x["v"] for x in out["inline"]] == ["ann", {"name": "ann"}, 3]
    assert [x["i"] for x in out["inline"]] == [0, 1, 2]


def test_an_empty_list_is_a_successful_batch_of_zero(plait, workflow):
    wf = workflow(
        {
            "nodes": [
                {"id": "gen", "type": "echo", "params": {"list": []}},
                batch_node({"v": "${item}"}, items="${gen.list}"),
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert out["count"] == 0 and out["results"] == [] and out["errors"] == []


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ({"a": [1, 2], "b": 1}, "an object"),
        ("just text", "a string"),
        (42, "gave an integer"),
        (2.5, "gave a number"),
        (None, "null"),
        (True, "a boolean"),
    ],
)
def test_items_that_are_not_a_list_fail_with_the_type_and_a_preview(plait, workflow, value, kind):
    wf = workflow(
        {
            "nodes": [
                {"id": "gen", "type": "echo", "params": {"v": value}},
                batch_node({"v": "${item}"}, items="${gen.v}"),
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 1, r
    message = r.json["errors"][0]["message"]
    assert "must resolve to a list" in message and kind in message, message
    if isinstance(value, dict):
        assert '"a": [1, 2]' in message and "did you mean one of its lists: a" in message
    assert r.json["errors"][0]["node_id"] == "b"


def test_a_string_that_looks_like_a_list_but_is_not_json_is_named(plait, workflow):
    wf = workflow(
        {
            "nodes": [
                {"id": "gen", "type": "shell", "params": {"command": "echo '[1, 2,'"}},
                batch_node({"v": "${item}"}, items="${gen.stdout}"),
            ]
        }
    )
    r = plait("run", wf, "-q")
    assert r.code == 1
    assert "does not parse" in r.stderr and "[1, 2," in r.stderr


def test_items_whose_template_misses_at_run_time_fail_the_node_not_plait(plait, workflow):
    wf = workflow(
        {
            "nodes": [
                {"id": "gen", "type": "shell", "params": {"command": "echo '{\"x\": [1, 2]}'"}},
                batch_node({"v": "${item}"}, items="${gen.stdout.y}"),
                {"id": "handler", "type": "echo", "params": {"v": "handled: ${b.error}"}},
            ],
            "edges": [{"from": "gen", "to": "b"}, {"from": "b", "to": "handler", "action": "error"}],
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    assert "internal error" not in r.stderr
    handled = r.json["outputs"]["v"]
    assert handled.startswith("handled: batch.items: template ${gen.stdout.y}")
    assert "'y' is missing" in handled and "keys: x" in handled


# ---------------------------------------------------------------- isolation & order


def test_a_parallel_batch_of_1000_keeps_every_result_with_its_own_item(plait, workflow):
    items = [{"id": i, "name": f"n{i}"} for i in range(1000)]
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "code",
                    "params": {
                        "code": "import random, time\ntime.sleep(random.random() / 2000)\n"
                        "result = {'id': thing['id'], 'label': thing['name'] + '!', 'index': i}",
                        "inputs": {"thing": "${item}", "i": "${__index__}"},
                    },
                    "batch": {"items": items, "parallel": True, "max_concurrent": 16},
                }
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    results = r.json["outputs"]["results"]
    assert len(results) == 1000
    for i, res in enumerate(results):
        assert res["index"] == i
        assert res["item"] == items[i]
        assert res["result"] == {"id": i, "label": f"n{i}!", "index": i}


def test_results_are_in_input_order_when_items_finish_in_random_order(plait, workflow):
    delays = [0.05, 0.0, 0.03, 0.01, 0.04, 0.0, 0.02, 0.05, 0.01, 0.0] * 3
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "shell",
                    "params": {"command": "sleep ${item}; echo done-${__index__}"},
                    "batch": {"items": delays, "parallel": True, "max_concurrent": 10},
                }
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    results = r.json["outputs"]["results"]
    assert [x["stdout"] for x in results] == [f"done-{i}" for i in range(len(delays))]
    assert [x["item"] for x in results] == delays


def test_a_small_batch_with_a_high_max_concurrent_starts_a_worker_per_item_only(plait, workflow):
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "code",
                    "params": {"code": "import threading\nresult = threading.active_count()"},
                    "batch": {"items": [1, 2, 3], "parallel": True, "max_concurrent": 200},
                }
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q", "--no-record")
    assert r.code == 0, r
    threads = [x["result"] for x in r.json["outputs"]["results"]]
    assert max(threads) < 20, threads  # not the 200 slots the batch may use


# ---------------------------------------------------------------- retries


FLAKY = (
    'f="count-${__index__}"; n=$(cat "$f" 2>/dev/null || echo 0); echo $((n+1)) > "$f"; '
    '[ "$n" -ge ${item} ] || { echo "not yet ($n)" >&2; exit 1; }; echo ok'
)


def test_an_item_that_fails_twice_then_succeeds_is_a_success_with_its_attempts(plait, workflow, tmp_path):
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "shell",
                    "params": {"command": FLAKY},
                    "batch": {"items": [0, 2, 1], "max_retries": 3, "retry_wait": 0.01},
                }
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert out["success_count"] == 3 and out["error_count"] == 0
    assert [x["attempts"] for x in out["results"]] == [1, 3, 2]
    assert [(tmp_path / f"count-{i}").read_text().strip() for i in range(3)] == ["1", "3", "2"]


def test_retries_stop_at_max_retries_and_the_error_says_how_many_attempts(plait, workflow, tmp_path):
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "shell",
                    "params": {"command": FLAKY},
                    "batch": {
                        "items": [5, 0],
                        "max_retries": 3,
                        "retry_wait": 0.01,
                        "parallel": True,
                        "error_handling": "continue",
                    },
                }
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert out["errors"] == [
        {"index": 0, "item": 5, "error": "command exited with code 1: not yet (2)", "attempts": 3}
    ]
    assert (tmp_path / "count-0").read_text().strip() == "3"
    assert (tmp_path / "count-1").read_text().strip() == "1"  # successes are not retried


def test_retry_waits_grow_exponentially(plait, workflow, tmp_path):
    # Every attempt appends a timestamp; the gaps must roughly double (0.1, 0.2, 0.4 + jitter).
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "shell",
                    "params": {"command": "date +%s.%N >> stamps; exit 1"},
                    "batch": {"items": [1], "max_retries": 4, "retry_wait": 0.1, "retry_backoff": "exponential"},
                }
            ]
        }
    )
    r = plait("run", wf, "-q")
    assert r.code == 1
    stamps = [float(x) for x in (tmp_path / "stamps").read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3
    for gap, base in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert base * 0.95 <= gap <= base * 1.25 + 0.15, gaps
    assert "after 4 attempts" in r.stderr


def test_node_level_retry_applies_to_a_plain_node(plait, workflow, tmp_path):
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "once",
                    "type": "shell",
                    "params": {
                        "command": 'n=$(cat c 2>/dev/null || echo 0); echo $((n+1)) > c; [ "$n" -ge 1 ]'
                    },
                    "retry": {"max": 4, "wait": 0},
                }
            ]
        }
    )
    r = plait("run", wf, "-q")
    assert r.code == 0, r
    assert (tmp_path / "c").read_text().strip() == "2"


# ---------------------------------------------------------------- error policies


def touching(**batch: object) -> dict:
    """A batch whose items leave a file behind when they start and fail on item 'bad'."""
    return {
        "id": "b",
        "type": "shell",
        "params": {"command": 'touch "started-${__index__}"; [ "${item}" != bad ] || exit 3; echo ok'},
        "batch": batch,
    }


def started(tmp_path: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in tmp_path.glob("started-*")}


def test_fail_fast_sequential_stops_at_the_first_failure(plait, workflow, tmp_path):
    items = ["ok"] * 3 + ["bad"] + ["ok"] * 6
    wf = workflow({"nodes": [touching(items=items)]})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 1, r
    assert started(tmp_path) == {0, 1, 2, 3}
    err = r.json["errors"][0]
    assert err["node_id"] == "b" and err["index"] == 3
    assert "item 3 failed: command exited with code 3" in err["message"]


@pytest.mark.parametrize("flaky", [True, False], ids=["retried-then-ok", "fails-for-good"])
def test_a_sequential_batch_retries_an_item_before_starting_the_next(plait, workflow, tmp_path, flaky):
    # Item 1 fails its first attempt (for good, unless flaky); the log shows what ran in which order.
    command = (
        'echo ${item} >> log; [ ${item} != 1 ] || { [ -e ok ] && [ "' + str(flaky).lower() + '" = true ]; }'
        " || { touch ok; exit 3; }"
    )
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "shell",
                    "params": {"command": command},
                    "batch": {"items": [0, 1, 2, 3], "max_retries": 2, "retry_wait": 0.2},
                }
            ]
        }
    )
    r = plait("run", wf, "-q")
    ran = (tmp_path / "log").read_text().split()
    if flaky:
        assert r.code == 0, r
        assert ran == ["0", "1", "1", "2", "3"]
    else:
        assert r.code == 1, r
        assert ran == ["0", "1", "1"]  # fail_fast: nothing after the failed item ran


def test_fail_fast_parallel_stops_launching_and_reports_the_lowest_failed_index(plait, workflow, tmp_path):
    items = ["ok"] * 400
    items[5] = "bad"
    items[6] = "bad"
    wf = workflow({"nodes": [touching(items=items, parallel=True, max_concurrent=4)]})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 1, r
    ran = started(tmp_path)
    # At most a small window beyond the failure ever started; items far beyond never did.
    assert max(ran) < 5 + 4 * 4, sorted(ran)
    assert not any(i >= 100 for i in ran)
    assert r.json["errors"][0]["index"] == 5


def test_continue_runs_every_item_and_downstream_reads_the_counts(plait, workflow, tmp_path):
    items = ["ok", "bad", "ok", "bad", "ok"]
    wf = workflow(
        {
            "nodes": [
                touching(items=items, parallel=True, max_concurrent=3, error_handling="continue"),
                {
                    "id": "report",
                    "type": "shell",
                    "params": {"command": "echo ${b.success_count} ok, ${b.error_count} failed: ${b.errors[0].index}"},
                },
            ]
        }
    )
    r = plait("run", wf, "-q")
    assert r.code == 0, r
    assert r.stdout == "3 ok, 2 failed: 1\n"
    assert started(tmp_path) == set(range(5))


def test_continue_output_keeps_failed_items_in_their_slot(plait, workflow):
    wf = workflow({"nodes": [touching(items=["ok", "bad", "ok"], error_handling="continue")]})
    r = plait("run", wf, "-o", "json", "-q")
    out = r.json["outputs"]
    assert [x["index"] for x in out["results"]] == [0, 1, 2]
    assert "error" not in out["results"][0]
    assert out["results"][1]["error"] == "command exited with code 3"
    assert out["results"][1]["exit_code"] == 3
    assert out["errors"] == [{"index": 1, "item": "bad", "error": "command exited with code 3", "attempts": 1}]
    assert (out["count"], out["success_count"], out["error_count"]) == (3, 2, 1)


def test_max_failures_aborts_a_continue_batch_once_exceeded(plait, workflow, tmp_path):
    items = ["bad"] * 3 + ["ok"] * 50
    wf = workflow({"nodes": [touching(items=items, error_handling="continue", max_failures=2)]})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 1, r
    assert "3 items failed, more than max_failures=2" in r.json["errors"][0]["message"]
    assert started(tmp_path) == {0, 1, 2}


def test_max_failure_rate_aborts_once_the_share_is_certainly_exceeded(plait, workflow, tmp_path):
    items = ["ok", "bad"] * 10  # 10 failures of 20
    wf = workflow({"nodes": [touching(items=items, error_handling="continue", max_failure_rate=0.2)]})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 1, r
    msg = r.json["errors"][0]["message"]
    assert "5 of 20 items failed, more than max_failure_rate=0.2 (20%)" in msg
    assert max(started(tmp_path)) == 9


def test_max_failure_rate_not_exceeded_lets_the_batch_succeed(plait, workflow):
    items = ["ok"] * 9 + ["bad"]
    wf = workflow({"nodes": [touching(items=items, error_handling="continue", max_failure_rate=0.1)]})
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"]["error_count"] == 1


def test_a_failed_batch_can_hand_over_to_an_error_edge(plait, workflow):
    wf = workflow(
        {
            "nodes": [
                touching(items=["ok", "bad"]),
                {"id": "handler", "type": "shell", "params": {"command": "echo handled: ${b.error}"}},
                {"id": "next", "type": "shell", "params": {"command": "echo never"}},
            ],
            "edges": [{"from": "b", "to": "handler", "action": "error"}, {"from": "b", "to": "next"}],
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"]["stdout"] == "handled: item 1 failed: command exited with code 3"
    assert r.json["nodes"]["next"]["status"] == "not_run"
    assert r.json["nodes"]["b"]["status"] == "failed"


# ---------------------------------------------------------------- output structure


def test_the_output_has_exactly_the_documented_structure(plait, workflow):
    wf = workflow({"nodes": [touching(items=["ok", "bad"], error_handling="continue", parallel=True)]})
    r = plait("run", wf, "-o", "json", "-q")
    out = r.json["outputs"]
    assert set(out) == {"results", "count", "success_count", "error_count", "errors", "batch_metadata"}
    meta = out["batch_metadata"]
    assert {"parallel", "max_concurrent", "max_retries", "timing", "llm_usage"} <= set(meta)
    assert set(meta["timing"]) == {"total_ms", "avg_item_ms", "p50_item_ms", "p95_item_ms", "max_item_ms"}
    assert meta["llm_usage"] == {"calls": 0, "input_tokens": 0, "output_tokens": 0}
    t = meta["timing"]
    assert 0 < t["p50_item_ms"] <= t["p95_item_ms"] <= t["max_item_ms"] <= t["total_ms"]
    json.dumps(out)  # plain JSON all the way down


def test_a_missing_key_in_one_item_names_the_template_the_index_and_the_keys(plait, workflow):
    wf = workflow(
        {
            "nodes": [
                {
                    "id": "b",
                    "type": "echo",
                    "params": {"v": "${item.name}"},
                    "batch": {"items": [{"name": "a"}, {"nom": "b", "id": 2}], "error_handling": "continue"},
                }
            ]
        }
    )
    r = plait("run", wf, "-o", "json", "-q")
    err = r.json["outputs"]["errors"][0]
    assert err["index"] == 1
    assert "${item.name}" in err["error"] and "batch item 1" in err["error"]
    assert "nom, id" in err["error"]


def test_item_time_percentiles_are_nearest_rank() -> None:
    from plait.runtime.batch import Timing

    timing = Timing()
    for seconds in (0.004, 0.005):
        timing.add(seconds)
    assert timing.percentile(0.5) == pytest.approx(0.004, rel=0.02)
    assert timing.percentile(0.95) == pytest.approx(0.005, rel=0.02)  # the slower of two, not the faster
    many = Timing()
    for ms in range(1, 101):
        many.add(ms / 1000.0)
    assert many.percentile(0.5) == pytest.approx(0.050, rel=0.02)
    assert many.percentile(0.95) == pytest.approx(0.095, rel=0.02)
    assert many.percentile(1.0) == pytest.approx(0.100, rel=0.02)
    assert Timing().percentile(0.95) == 0.0
