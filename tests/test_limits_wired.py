"""Rate limits, budgets, prices and --estimate in real runs (issue 14).

Every run goes through the CLI against tests/openai_server.py, a real local
OpenAI-compatible server that can keep its own rpm limits (429 + Retry-After +
x-ratelimit-* headers) and counts what it was sent.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_server import OpenAIServer, write_llm_config

# dollars per 1M tokens: large, so a handful of small calls cost measurable money
PRICES = {"models": {"local-test": {"provider": "local", "input": 1000.0, "output": 1000.0, "max_output": 64}}}
CALL_USD = (11 + 7) * 1000.0 / 1_000_000  # the server reports 11 prompt + 7 completion tokens


@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    for name in ("PLAIT_LLM_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture
def server(llm_home: Path) -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        write_llm_config(llm_home, srv.base_url)
        yield srv


@pytest.fixture
def run(plait: Callable[..., Any], workflow: Callable[..., str], llm_home: Path) -> Callable[..., Any]:
    def _run(ir: dict[str, Any] | str, *args: str) -> Any:
        path = ir if isinstance(ir, str) else workflow(ir)
        return plait("run", path, *args, "-o", "json", "-q", env={"LLM_USER_PATH": str(llm_home)})

    return _run


def records() -> sqlite3.Connection:
    conn = sqlite3.connect(Path(os.environ["PLAIT_HOME"]) / "runs.db")
    conn.row_factory = sqlite3.Row
    return conn


def ask_batch(n: int, *, node_id: str = "ask", parallel: int = 8, **node: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "llm",
        "params": {"prompt": "item ${item}", "model": "local-test", "max_tokens": 20},
        "batch": {"items": list(range(n)), "parallel": parallel > 1, "max_concurrent": parallel,
                  "error_handling": "continue"},
        "cache": False,  # every item is a real call
        **node,
    }


# ---------------------------------------------------------------------------
# limiters


def test_two_batches_sharing_a_declared_limiter_stay_under_the_servers_limit(server, run):
    # the server lets 10 requests a second through, 3 at once; the shared limiter
    # sends at most 8 a second, 2 at once: not one request may be refused
    server.enforce(rpm=600, burst_requests=3)
    ir = {
        "limits": {"local": {"rps": 8, "burst": 0.25}},
        # two branches from one start: the batches run at the same time (max_parallel_nodes)
        "nodes": [{"id": "start", "type": "echo", "params": {}},
                  ask_batch(12, node_id="first", rate="local"), ask_batch(12, node_id="second", rate="local")],
        "edges": [{"from": "start", "to": "first"}, {"from": "start", "to": "second"}],
    }

    result = run(ir)

    assert result.code == 0, result
    assert server.ok_count == 24
    assert server.throttled_count == 0
    for node in ("first", "second"):
        assert result.json["nodes"][node]["items"] == {"count": 12, "succeeded": 12, "failed": 0}
    with records() as conn:
        spans = {r["node_id"]: (r["started"], r["ended"]) for r in conn.execute(
            "SELECT node_id, started, ended FROM nodes WHERE node_id IN ('first', 'second')")}
    (s1, e1), (s2, e2) = spans["first"], spans["second"]
    assert min(e1, e2) > max(s1, s2), spans  # they drew on the limiter at the same time


def test_a_default_limiter_learns_the_servers_limit_from_its_headers(server, run):
    # No limits declared: the first wave may be refused, after that the limiter
    # mirrors x-ratelimit-* and nothing more is.
    server.enforce(rpm=600, burst_requests=3)
    ir = {"nodes": [ask_batch(30, parallel=8)], "outputs": {"meta": {"source": "${ask.batch_metadata}"}}}

    result = run(ir)

    assert result.code == 0, result
    assert server.ok_count == 30
    first_wave = 8 + server.throttled_since(0)  # what was sent before any answer, and its retries
    assert server.throttled_since(min(first_wave, server.request_count)) == 0
    meta = result.json["outputs"]["meta"]
    assert meta["throttled"] == server.throttled_count  # every 429 was retried, none counted as a failure


def test_a_429_with_retry_after_pauses_the_whole_limiter(server, run):
    server.rate_limit(1, retry_after=1)
    server.delay = 0.05  # the first four are in flight together
    ir = {"nodes": [ask_batch(8, parallel=4)]}

    result = run(ir)

    assert result.code == 0, result
    (t429,) = [t for t, status in server.log if status == 429]
    # sent after the 429 was answered: nothing for the Retry-After second, not only that item
    after = [t - t429 for t, status in server.log if t - t429 > 0.05]
    assert after, server.log
    assert min(after) >= 0.95


# ---------------------------------------------------------------------------
# throttled retries


def test_throttled_retries_are_not_failures_and_are_counted_apart(server, run):
    server.rate_limit(3, retry_after=0.05)
    ir = {"nodes": [ask_batch(5, parallel=1)], "outputs": {"meta": {"source": "${ask.batch_metadata}"},
                                                          "errors": {"source": "${ask.error_count}"}}}

    result = run(ir)

    assert result.code == 0, result
    assert result.json["outputs"]["errors"] == 0
    meta = result.json["outputs"]["meta"]
    assert meta["max_retries"] == 1  # no retries configured: the 429s were retried anyway
    assert meta["throttled"] == 3
    with records() as conn:
        node = conn.execute("SELECT throttled, retries, items_failed FROM nodes WHERE node_id = 'ask'").fetchone()
        rows = conn.execute("SELECT count(*) FROM items WHERE status = 'throttled'").fetchone()[0]
    assert tuple(node) == (3, 0, 0)
    assert rows == 3


def test_a_server_that_never_stops_refusing_fails_the_item_after_the_cap(server, run):
    from plait.runtime.driver import MAX_THROTTLED_RETRIES

    server.rate_limit(1000, retry_after=0.001)
    ir = {"nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "local-test"}, "cache": False}]}

    result = run(ir)

    assert result.code == 1, result
    assert f"still rate limited after {MAX_THROTTLED_RETRIES} throttled retries" in result.json["errors"][0]["message"]
    assert server.request_count == MAX_THROTTLED_RETRIES + 1


# ---------------------------------------------------------------------------
# cost and budgets


def test_every_call_reports_its_cost_and_the_batch_run_and_records_add_it_up(server, run, plait, llm_home):
    ir = {"prices": PRICES, "nodes": [ask_batch(4)], "outputs": {"out": {"source": "${ask}"}}}

    result = run(ir)

    assert result.code == 0, result
    out = result.json["outputs"]["out"]
    assert [r["llm_usage"]["cost_usd"] for r in out["results"]] == [pytest.approx(CALL_USD)] * 4
    assert out["batch_metadata"]["cost_usd"] == pytest.approx(4 * CALL_USD)
    assert result.json["llm_usage"]["cost_usd"] == pytest.approx(4 * CALL_USD)
    with records() as conn:
        run_row = conn.execute("SELECT cost_usd FROM runs").fetchone()
        node_row = conn.execute("SELECT cost_usd FROM nodes WHERE node_id = 'ask'").fetchone()
        items = conn.execute("SELECT cost_usd FROM items WHERE node_id = 'ask'").fetchall()
    assert run_row[0] == pytest.approx(4 * CALL_USD)
    assert node_row[0] == pytest.approx(4 * CALL_USD)
    assert [r[0] for r in items] == [pytest.approx(CALL_USD)] * 4
    listing = plait("runs")
    assert "COST" in listing.stdout.splitlines()[0] and f"${4 * CALL_USD:.4f}" in listing.stdout
    shown = plait("show", "last")
    assert f"${4 * CALL_USD:.4f}" in shown.stdout


@pytest.mark.parametrize("executor", ["threads", "async"])
def test_a_budget_stops_without_overshoot_and_the_run_resumes_to_completion(server, run, plait, llm_home, executor):
    server.delay = 0.02  # 50 calls in flight at once
    budget = 0.5
    node = ask_batch(40, parallel=50)
    node["batch"]["executor"] = executor
    ir = {"budget": {"usd": budget}, "prices": PRICES, "nodes": [node]}

    stopped = run(ir)

    assert stopped.code == 1, stopped
    assert stopped.json["status"] == "budget"
    assert "budget reached" in stopped.json["errors"][0]["message"]
    assert "did not run" in stopped.json["errors"][0]["message"]
    assert stopped.json["nodes"]["ask"]["status"] == "budget"
    with records() as conn:
        spent = conn.execute("SELECT cost_usd, status FROM runs").fetchone()
        paid = conn.execute("SELECT count(*) FROM items WHERE status = 'success'").fetchone()[0]
        failed = conn.execute("SELECT count(*) FROM items WHERE status = 'failed'").fetchone()[0]
    assert spent["status"] == "budget"
    assert spent["cost_usd"] <= budget  # exactly no overshoot
    assert failed == 0  # not launched is not failed
    assert 0 < paid < 40 and paid == server.ok_count
    assert paid * CALL_USD <= budget

    resumed = plait("resume", "last", "-o", "json", "-q", env={"LLM_USER_PATH": str(llm_home)})

    assert resumed.code == 0, resumed
    assert resumed.json["status"] == "success"
    assert server.ok_count == 40  # each item paid for once
    assert resumed.json["llm_usage"]["cost_usd"] <= budget


def test_a_node_budget_counts_inside_the_runs(server, run):
    ir = {
        "budget": {"usd": 10},
        "prices": PRICES,
        "nodes": [ask_batch(10, parallel=1, budget={"usd": 0.1})],
    }

    result = run(ir)

    assert result.json["status"] == "budget", result
    assert "for node 'ask'" in result.json["errors"][0]["message"]
    assert server.ok_count * CALL_USD <= 0.1


# ---------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        ({"limits": {"openai": {"rmp": 60}}}, "limits.openai.rmp", "did you mean 'rpm'"),
        ({"limits": {"openai": {"rpm": -1}}}, "limits.openai.rpm", "positive number"),
        ({"limits": {"openai": {"concurrency": 2.5}}}, "limits.openai.concurrency", "whole number"),
        ({"limits": {"openai": {"rpm": 60}}, "node": {"rate": "opnai"}}, "nodes[0].rate", "did you mean 'openai'"),
        ({"node": {"rate": "openai"}}, "nodes[0].rate", "declare it"),
        ({"node": {"rate": True}}, "nodes[0].rate", "or be false"),
        ({"budget": {"usd": "5"}}, "budget.usd", "positive number of dollars"),
        ({"budget": {"dollars": 5}}, "budget.dollars", "the only field is 'usd'"),
        ({"budget": {"usd": 5}, "model": "no-such-model"}, "nodes[0].params.model", "has no known price"),
        ({"node": {"budget": {"usd": 1}}, "model": "unpriced-x"}, "nodes[0].params.model", "price it in the workflow"),
        ({"prices": {"models": {"house": {"input": 1}}}}, "prices.models.house", "needs 'output'"),
        ({"budget": {"usd": 5}, "node": {"batch": {"items": [1], "executor": "dask"}}},
         "nodes[0].batch.executor", "cannot share this run's budget"),
    ],
)
def test_bad_limits_budgets_and_prices_are_refused_at_validation(plait, workflow, change, path, words):
    params: dict[str, Any] = {"prompt": "hi", "model": change.get("model", "gpt-4o")}
    if "model" in change:  # a model llm accepts, on an OpenAI-compatible server, without a price
        params["api_base"] = "http://127.0.0.1:9/v1"
    node: dict[str, Any] = {"id": "ask", "type": "llm", "params": params}
    node.update(change.get("node", {}))
    ir = {k: v for k, v in change.items() if k not in ("node", "model")} | {"nodes": [node]}

    result = plait("validate", workflow(ir), "-o", "json")

    assert result.code != 0, result
    problems = [p["message"] + " " + p.get("hint", "") for p in result.json["errors"] if p["path"] == path]
    assert any(words in p for p in problems), result.json["errors"]


def test_a_budget_is_refused_on_the_dask_executor_from_the_command_line(plait, workflow):
    ir = {"budget": {"usd": 1}, "nodes": [{"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o"}}]}

    result = plait("run", workflow(ir), "--executor", "dask")

    assert result.code == 2, result
    assert "dask executor's workers cannot share" in result.stderr


def test_rate_false_and_a_priced_model_under_a_budget_are_valid(plait, workflow):
    ir = {
        "budget": {"usd": 5},
        "limits": {"openai": {"rpm": 60, "tpm": 100000, "concurrency": 4, "burst": 2}},
        "nodes": [
            {"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o-mini"}, "rate": "openai"},
            {"id": "b", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o"}, "rate": False,
             "budget": {"usd": 1}},
        ],
    }

    result = plait("validate", workflow(ir), "-o", "json")

    assert result.code == 0, result


# ---------------------------------------------------------------------------
# --estimate


def test_estimate_counts_prices_and_times_without_calling_the_model(server, run, workflow, plait, llm_home):
    ir = {
        "limits": {"local": {"rpm": 120}},
        "prices": PRICES,
        "budget": {"usd": 1},
        "nodes": [ask_batch(30, rate="local")],
    }
    path = workflow(ir)

    first = plait("run", path, "--estimate", "-o", "json", env={"LLM_USER_PATH": str(llm_home)})

    assert first.code == 0, first
    assert server.request_count == 0  # no model was called
    node = first.json["nodes"][0]
    assert node["items"] == 30 and node["calls"] == 30
    assert [p["prompt"] for p in node["prompts"]] == ["item 0", "item 1", "item 2"]
    assert node["history"] is None
    assert node["output_tokens"] == {
        "low": 0, "expected": 30 * 10, "high": 30 * 20, "per_call_cap": 20,
        "source": "no past runs: between 0 and the output cap, half of it expected",
    }
    cost = node["cost_usd"]
    assert 0 < cost["low"] < cost["expected"] < cost["high"]
    assert node["wall_s"] == pytest.approx(15.0)  # 30 calls at 120 a minute
    text = plait("run", path, "--estimate", env={"LLM_USER_PATH": str(llm_home)})
    assert "no model was called" in text.stdout and "30 items, 30 calls" in text.stdout
    assert "[0]" in text.stdout and "item 0" in text.stdout and "budget: $1" in text.stdout
    assert server.request_count == 0

    ir["limits"] = {"local": {"rpm": 6000}}  # the same node, run for real: the records learn its output tokens
    workflow(ir, name=Path(path).name)
    assert run(path).code == 0
    ran = server.request_count

    again = plait("run", path, "--estimate", "-o", "json", env={"LLM_USER_PATH": str(llm_home)})

    assert server.request_count == ran
    node = again.json["nodes"][0]
    assert node["history"] == {"items": 30}
    assert node["output_tokens"]["expected"] == 30 * 7  # what the server answered with
    actual = 30 * CALL_USD
    assert node["cost_usd"]["low"] <= actual <= node["cost_usd"]["high"]


def test_estimate_of_a_free_model_costs_nothing_even_with_its_output_unknown(plait, workflow):
    ir = {"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "hi ${item}", "model": "echo"},
                     "batch": {"items": [1, 2]}}]}

    result = plait("run", workflow(ir), "--estimate", "-o", "json")

    assert result.code == 0, result
    node = result.json["nodes"][0]
    assert node["output_tokens"]["expected"] is None  # no cap, no past runs
    assert node["cost_usd"] == {"low": 0.0, "expected": 0.0, "high": 0.0}
    assert result.json["total"]["cost_complete"] is True


def test_estimate_of_a_workflow_without_paid_calls_says_so(plait, workflow):
    ir = {"nodes": [{"id": "s", "type": "shell", "params": {"command": "echo hi"}}]}

    result = plait("run", workflow(ir), "--estimate")

    assert result.code == 0, result
    assert "no node of this workflow calls a paid or rate-limited service" in result.stdout


# ---------------------------------------------------------------------------
# http: one default limiter per host


def test_an_http_429_pauses_the_hosts_limiter_and_is_not_a_failure(plait, workflow):
    from servers import LocalServer

    with LocalServer() as host:
        ir = {
            "inputs": {"base": {"type": "string"}},
            "nodes": [{
                "id": "get", "type": "http",
                "params": {"url": "${base}/flaky/${item}?fail=1&status=429&retry_after=0.3"},
                "batch": {"items": ["a", "b", "c"], "parallel": True},
            }],
            "outputs": {"meta": {"source": "${get.batch_metadata}"}, "errors": {"source": "${get.error_count}"}},
        }

        result = plait("run", workflow(ir), f"base={host.base_url}", "-o", "json", "-q")

        assert result.code == 0, result
        assert result.json["outputs"]["errors"] == 0  # max_retries is 1: the 429s were not attempts
        assert result.json["outputs"]["meta"]["throttled"] == 3
        for key in "abc":
            first, second = host.requests_to(f"/flaky/{key}")
            assert second.time - first.time >= 0.25


def test_sub_workflows_spend_from_the_runs_budget(server, run):
    child = {
        "inputs": {"x": {"type": "integer"}},
        "nodes": [{"id": "ask", "type": "llm", "cache": False,
                   "params": {"prompt": "item ${x}", "model": "local-test", "max_tokens": 20}}],
        "outputs": {"answer": {"source": "${ask.response}"}},
    }
    ir = {
        "budget": {"usd": 0.2},
        "prices": PRICES,
        "nodes": [{
            "id": "each", "type": "workflow",
            "params": {"workflow_ir": child, "inputs": {"x": "${item}"}},
            "batch": {"items": list(range(30)), "parallel": True, "max_concurrent": 5, "error_handling": "continue"},
        }],
    }

    result = run(ir)

    assert result.json["status"] == "budget", result
    assert 0 < server.ok_count < 30
    assert server.ok_count * CALL_USD <= 0.2
    with records() as conn:
        failed = conn.execute("SELECT count(*) FROM items WHERE node_id = 'each' AND status = 'failed'").fetchone()[0]
    assert failed == 0


@pytest.mark.parametrize("executor", ["threads", "async"])
def test_ctrl_c_wakes_calls_waiting_for_their_limiter(server, workflow, llm_home, tmp_path, executor):
    import signal
    import time

    from conftest import popen_cli

    # one call a minute: the first goes, the other three wait for a minute
    node = ask_batch(4, parallel=4, rate="slow")
    node["batch"]["executor"] = executor
    path = workflow({"limits": {"slow": {"rpm": 1}}, "nodes": [node]})
    proc = popen_cli("run", path, "-q", "-o", "json", cwd=tmp_path, env={"LLM_USER_PATH": str(llm_home)})
    try:
        deadline = time.monotonic() + 30
        while server.request_count < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the others are queued in the limiter by now
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)  # far less than the minute they would wait
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    assert server.request_count == 1  # the waiting ones never started
