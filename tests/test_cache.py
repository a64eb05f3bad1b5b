"""The item cache: a successful item's result kept across runs, so the same call is paid for once."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Result
from openai_server import OpenAIServer, write_llm_config

Plait = Callable[..., Result]
Workflow = Callable[..., str]


def calls(tmp_path: Path) -> Counter[str]:
    log = tmp_path / "calls.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def cached_batch(items: list[Any], cache: Any = True, command: str = "echo ${item} >> calls.log; echo hi ${item}") -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "w",
        "type": "shell",
        "params": {"command": command},
        "batch": {"items": items, "parallel": True, "max_concurrent": 4, "error_handling": "continue"},
    }
    if cache is not None:
        node["cache"] = cache
    return {"nodes": [node]}


def meta(r: Result) -> dict[str, Any]:
    return {k: v for k, v in r.json["outputs"]["batch_metadata"].items() if k.startswith("cache")}


def test_identical_items_share_one_execution_and_a_second_run_executes_nothing(
    plait: Plait, workflow: Workflow, tmp_path: Path
) -> None:
    path = workflow(cached_batch([1, 2, 3, 2, 1, 4]))
    first = plait("run", path, "-o", "json", "-q")
    assert first.code == 0, first
    assert calls(tmp_path) == Counter({"1": 1, "2": 1, "3": 1, "4": 1})
    assert meta(first) == {"cache_hits": 0, "cache_stored": 4, "cache_shared": 2}
    assert [r["stdout"] for r in first.json["outputs"]["results"]] == ["hi 1", "hi 2", "hi 3", "hi 2", "hi 1", "hi 4"]
    second = plait("run", path, "-o", "json")
    assert second.code == 0
    assert sum(calls(tmp_path).values()) == 4  # nothing ran
    assert meta(second) == {"cache_hits": 6, "cache_stored": 0}
    assert second.json["outputs"]["results"] == first.json["outputs"]["results"]
    assert "6 from the cache" in second.stderr
    shown = plait("show", second.json["run_id"])  # the record says so too
    assert "6/6 ok, 6 from the cache" in shown.stdout, shown
    assert plait("show", second.json["run_id"], "--json").json["nodes"][0]["items_cached"] == 6


def test_only_successes_are_cached(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow(cached_batch([1, 2], command="echo ${item} >> calls.log; [ ${item} = 1 ] || exit 3"))
    plait("run", path, "-q")
    r = plait("run", path, "-q", "-o", "json")
    assert meta(r)["cache_hits"] == 1
    assert calls(tmp_path) == Counter({"1": 1, "2": 2})


def test_the_run_can_turn_the_cache_off_on_or_refresh_it(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow(cached_batch([1, 2], cache=None))  # a shell node does not cache by default
    plait("run", path, "-q")
    plait("run", path, "-q")
    assert sum(calls(tmp_path).values()) == 4
    plait("run", path, "--cache", "-q")  # stores
    r = plait("run", path, "--cache", "-q", "-o", "json")
    assert meta(r)["cache_hits"] == 2 and sum(calls(tmp_path).values()) == 6
    r = plait("run", path, "--no-cache", "-q", "-o", "json")
    assert meta(r) == {} and sum(calls(tmp_path).values()) == 8
    r = plait("run", path, "--refresh-cache", "-q", "-o", "json")
    assert meta(r) == {"cache_hits": 0, "cache_stored": 2} and sum(calls(tmp_path).values()) == 10


def test_entries_expire_after_their_ttl(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    path = workflow(cached_batch([1], cache={"ttl": 0.5}))
    plait("run", path, "-q")
    assert meta(plait("run", path, "-q", "-o", "json"))["cache_hits"] == 1
    time.sleep(0.6)
    assert meta(plait("run", path, "-q", "-o", "json"))["cache_hits"] == 0
    assert sum(calls(tmp_path).values()) == 2


def test_items_without_a_canonical_form_are_not_cached_and_counted(plait: Plait, workflow: Workflow) -> None:
    wf = {
        "nodes": [
            {"id": "make", "type": "code", "params": {"code": "result = [1.0, float('nan')]"}},
            {"id": "w", "type": "echo", "cache": True, "params": {"v": "${item}"}, "batch": {"items": "${make.result}"}},
        ]
    }
    r = plait("run", workflow(wf), "-q", "-o", "json")
    assert r.code == 0, r
    assert meta(r) == {"cache_hits": 0, "cache_stored": 1, "cache_not_cacheable": 1}


def test_no_secret_is_stored_in_the_cache(plait: Plait, workflow: Workflow) -> None:
    wf = {
        "inputs": {"api_key": {"type": "string"}},
        "nodes": [{"id": "w", "type": "echo", "cache": True, "params": {"api_key": "${api_key}", "q": "x"}}],
    }
    assert plait("run", workflow(wf), "api_key=sk-secret-in-params-42", "-q").code == 0
    home = Path(os.environ["PLAIT_HOME"])
    stored = b"".join(p.read_bytes() for p in home.rglob("cache*") if p.is_file())
    assert stored and b"sk-secret-in-params-42" not in stored


def test_a_bad_cache_setting_is_a_clear_error(plait: Plait, workflow: Workflow) -> None:
    r = plait("validate", workflow(cached_batch([1], cache="yes")))
    assert r.code == 2 and "cache must be true, false or" in r.stderr
    r = plait("validate", workflow(cached_batch([1], cache={"ttl": "soon"})))
    assert r.code == 2 and "cache.ttl must be a duration" in r.stderr


def test_cache_stats_prune_and_clear(plait: Plait, workflow: Workflow) -> None:
    plait("run", workflow(cached_batch([1, 2, 3])), "-q")
    r = plait("cache", "stats", "--json")
    assert r.code == 0 and r.json["entries"] == 3 and r.json["by_type"][0]["type"] == "shell"
    assert "3 entries" in plait("cache", "stats").stdout
    assert plait("cache", "prune").stdout == "dropped 0 entries\n"
    assert plait("cache", "prune", "--older-than", "soon").code == 2
    assert plait("cache", "clear").stdout == "dropped 3 entries\n"
    assert plait("cache", "stats", "--json").json["entries"] == 0


@pytest.fixture
def llm_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    home = tmp_path / "llm-home"
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with OpenAIServer() as server:
        write_llm_config(home, server.base_url)
        yield server


def test_a_second_identical_llm_batch_makes_zero_calls(
    llm_server: OpenAIServer, plait: Plait, workflow: Workflow
) -> None:
    wf = {
        "nodes": [
            {
                "id": "classify",
                "type": "llm",
                "cache": True,
                "params": {"prompt": "Classify: ${item}", "model": "local-test"},
                "batch": {"items": ["a bug", "a question", "a bug"], "parallel": True},
            }
        ]
    }
    path = workflow(wf)
    first = plait("run", path, "-o", "json", "-q")
    assert first.code == 0, first
    requests = len(llm_server.requests)
    assert requests == 2  # the two identical prompts shared one call
    second = plait("run", path, "-o", "json", "-q")
    assert second.code == 0
    assert len(llm_server.requests) == requests  # zero calls
    m = second.json["outputs"]["batch_metadata"]
    assert m["cache_hits"] == 3
    assert m["cache_saved"]["input_tokens"] > 0
    assert m["llm_usage"]["calls"] == 0
    assert [r["response"] for r in second.json["outputs"]["results"]] == [
        r["response"] for r in first.json["outputs"]["results"]
    ]
    assert json.dumps(second.json).count("Classify") == 0  # prompts are not stored in the output


# -- a batch run again: its keys come in the order they were stored, and are read ahead


def echo_batch(items: Any, params: dict[str, Any] | None = None, cache: Any = True, parallel: bool = False) -> dict[str, Any]:
    node: dict[str, Any] = {
        "id": "w",
        "type": "echo",
        "cache": cache,
        "params": params or {"value": "${item}", "label": "item ${item}"},
        "batch": {"items": items, "parallel": parallel, "error_handling": "continue"},
    }
    return {"nodes": [node]}


def results(r: Result) -> list[Any]:
    assert r.code == 0, r
    return list(r.json["outputs"]["results"])


@pytest.mark.parametrize("parallel", [False, True])
def test_a_long_batch_run_again_is_answered_whole_from_the_cache(
    plait: Plait, workflow: Workflow, parallel: bool
) -> None:
    items = list(range(2500))  # past a few read-ahead windows
    path = workflow(echo_batch(items, parallel=parallel))
    first = plait("run", path, "-q", "-o", "json")
    assert meta(first) == {"cache_hits": 0, "cache_stored": 2500}
    second = plait("run", path, "-q", "-o", "json")
    assert meta(second) == {"cache_hits": 2500, "cache_stored": 0}
    assert results(second) == results(first)
    assert results(second)[1234] == {"index": 1234, "item": 1234, "attempts": 1, "value": 1234, "label": "item 1234"}
    stats = plait("cache", "stats", "--json").json
    assert stats["entries"] == 2500 and stats["hits"] == 2500


def test_items_added_reordered_or_dropped_still_hit_what_is_stored(plait: Plait, workflow: Workflow) -> None:
    plait("run", workflow(echo_batch(list(range(600)))), "-q")
    # new items between stored ones, a stretch backwards, a jump, items left out
    items = [*range(0, 100), *range(1000, 1050), *range(300, 200, -1), *range(500, 600), *range(100, 150)]
    r = plait("run", workflow(echo_batch(items)), "-q", "-o", "json")
    assert meta(r) == {"cache_hits": len(items) - 50, "cache_stored": 50}
    assert [x["value"] for x in results(r)] == items
    assert all(x["label"] == f"item {x['item']}" for x in results(r))


def test_usage_saved_by_hits_read_ahead_is_counted_for_each(plait: Plait, workflow: Workflow) -> None:
    usage = {"model": "m", "input_tokens": 3, "output_tokens": 2, "cost_usd": 0.25}
    path = workflow(echo_batch(list(range(200)), params={"value": "${item}", "llm_usage": usage}))
    plait("run", path, "-q")
    r = plait("run", path, "-q", "-o", "json")
    assert meta(r) == {
        "cache_hits": 200,
        "cache_stored": 0,
        "cache_saved": {"input_tokens": 600, "output_tokens": 400, "cost_usd": 50.0},
    }
    assert results(r)[199]["llm_usage"] == usage


def test_large_outputs_in_blobs_or_in_rows_come_back_whole(plait: Plait, workflow: Workflow) -> None:
    # 70 kB each: stored as blobs; 60 kB each: in the rows, more than one read-ahead's bytes
    for size, count in ((70_000, 6), (60_000, 40)):
        params = {"value": "${item}", "pad": "x" * size}
        path = workflow(echo_batch([f"{size}-{i}" for i in range(count)], params=params))
        first = plait("run", path, "-q", "-o", "json")
        second = plait("run", path, "-q", "-o", "json")
        assert meta(second) == {"cache_hits": count, "cache_stored": 0}
        assert results(second) == results(first)
        assert all(len(x["pad"]) == size for x in results(second))
    home = Path(os.environ["PLAIT_HOME"])
    assert len(list((home / "cache-blobs").glob("*/*"))) == 6


def test_entries_expired_are_run_again_and_stored_anew(plait: Plait, workflow: Workflow) -> None:
    path = workflow(echo_batch(list(range(100)), cache={"ttl": 0.5}))
    plait("run", path, "-q")
    time.sleep(0.6)
    r = plait("run", path, "-q", "-o", "json")
    assert meta(r) == {"cache_hits": 0, "cache_stored": 100}
    assert meta(plait("run", path, "-q", "-o", "json")) == {"cache_hits": 100, "cache_stored": 0}
    assert plait("cache", "stats", "--json").json["entries"] == 100


def test_a_refreshed_cache_answers_with_the_new_entries(plait: Plait, workflow: Workflow, tmp_path: Path) -> None:
    command = "echo ${item} >> calls.log; cat run.txt"
    path = workflow({"nodes": [{"id": "w", "type": "shell", "cache": True, "params": {"command": command},
                                "batch": {"items": list(range(40))}}]})
    (tmp_path / "run.txt").write_text("old")
    plait("run", path, "-q")
    (tmp_path / "run.txt").write_text("new")
    r = plait("run", path, "--refresh-cache", "-q", "-o", "json")
    assert meta(r) == {"cache_hits": 0, "cache_stored": 40}
    r = plait("run", path, "-q", "-o", "json")
    assert meta(r) == {"cache_hits": 40, "cache_stored": 0}
    assert {x["stdout"] for x in results(r)} == {"new"}
    assert sum(calls(tmp_path).values()) == 80


def test_identical_items_of_one_sequential_batch_hit_the_entry_stored_by_the_first(
    plait: Plait, workflow: Workflow
) -> None:
    items = [*range(300), *range(300), 7, 7]
    r = plait("run", workflow(echo_batch(items)), "-q", "-o", "json")
    assert meta(r) == {"cache_hits": 302, "cache_stored": 300}
    assert [x["value"] for x in results(r)] == items
    stats = plait("cache", "stats", "--json").json
    assert stats["entries"] == 300 and stats["hits"] == 302


def test_an_entry_stored_by_an_earlier_version_still_hits(plait: Plait, workflow: Workflow) -> None:
    # The key of echo {"value": 1, "label": "item 1"} as plait has always made it:
    # entries already in a cache.db keep hitting only while keys stay the same.
    from plait.runtime.keys import cache_key

    key = "80471a909b703c52edb9a41f9f651172"
    assert cache_key("echo", "1", {"value": 1, "label": "item 1"}) == key
    home = Path(os.environ["PLAIT_HOME"])
    plait("cache", "stats")  # makes cache.db
    conn = sqlite3.connect(home / "cache.db")
    with conn:
        conn.execute(
            "INSERT INTO entries (key, node_type, created, expires, outputs, outputs_ref, usage, size)"
            " VALUES (?, 'echo', ?, NULL, ?, NULL, NULL, 30)",
            (key, time.time(), '{"value":1,"label":"stored before"}'),
        )
    conn.close()
    r = plait("run", workflow(echo_batch([0, 1, 2])), "-q", "-o", "json")
    assert meta(r) == {"cache_hits": 1, "cache_stored": 2}
    assert [x["label"] for x in results(r)] == ["item 0", "stored before", "item 2"]


def test_rows_read_ahead_are_read_again_once_another_process_may_have_changed_them(tmp_path: Path) -> None:
    from plait.runtime.cache import AHEAD_S, ItemCache
    from plait.runtime.keys import cache_key

    cache = ItemCache(tmp_path)
    keys = [cache_key("echo", "1", {"v": i}) for i in range(10)]
    for i, key in enumerate(keys):
        cache.put(key, "echo", {"v": i}, {}, None)
    reader = cache.reader()
    assert [reader.get(k) for k in keys[:3]] == [({"v": i}, {}) for i in range(3)]  # the rest read ahead
    other = sqlite3.connect(tmp_path / "cache.db")
    with other:
        other.execute("UPDATE entries SET outputs = '{\"v\":\"again\"}' WHERE key = ?", (keys[3],))
        other.execute("DELETE FROM entries WHERE key = ?", (keys[4],))
    other.close()
    time.sleep(AHEAD_S + 0.1)
    assert reader.get(keys[3]) == ({"v": "again"}, {})
    assert reader.get(keys[4]) is None
    assert reader.get(keys[5]) == ({"v": 5}, {})
    cache.close()


def test_a_recorded_run_answered_from_the_cache_keeps_item_keys_a_resume_reuses(
    plait: Plait, workflow: Workflow
) -> None:
    path = workflow(echo_batch(list(range(50))))
    first = plait("run", path, "-q", "-o", "json")
    second = plait("run", path, "-q", "-o", "json")
    assert meta(second)["cache_hits"] == 50
    home = Path(os.environ["PLAIT_HOME"])
    conn = sqlite3.connect(home / "runs.db")
    keys = {
        run_id: [k for (k,) in conn.execute(
            "SELECT i.key FROM items i JOIN runs r ON r.id = i.run WHERE r.run_id = ? AND i.node_id = 'w'"
            " ORDER BY i.idx", (run_id,))]
        for run_id in (first.json["run_id"], second.json["run_id"])
    }
    conn.close()
    assert keys[second.json["run_id"]] == keys[first.json["run_id"]] and None not in keys[first.json["run_id"]]
    resumed = plait("resume", second.json["run_id"], "-q", "-o", "json")
    assert resumed.code == 0, resumed
    assert resumed.json["resumed_from"]["reused"] >= 50


def test_a_hit_counts_for_the_entry_it_read_not_one_stored_in_its_place_since(tmp_path: Path) -> None:
    from plait.runtime.cache import ItemCache
    from plait.runtime.keys import cache_key

    cache = ItemCache(tmp_path)
    keys = [cache_key("echo", "1", {"v": i}) for i in range(10)]
    for i, key in enumerate(keys):
        cache.put(key, "echo", {"v": i}, {}, None)
    reader = cache.reader()
    assert [reader.get(k) for k in keys[:2]] == [({"v": 0}, {}), ({"v": 1}, {})]  # the rest read ahead
    other = sqlite3.connect(tmp_path / "cache.db")
    with other:  # the last entry dropped, another one stored: it takes the same rowid
        old = other.execute("SELECT rowid FROM entries WHERE key = ?", (keys[9],)).fetchone()[0]
        other.execute("DELETE FROM entries WHERE key = ?", (keys[9],))
        other.execute(
            "INSERT INTO entries (key, node_type, created, outputs, size) VALUES ('another', 'echo', ?, '{}', 2)",
            (time.time() + 0.01,),
        )
        assert other.execute("SELECT rowid FROM entries WHERE key = 'another'").fetchone()[0] == old
    assert [reader.get(k) for k in keys[2:]] == [({"v": i}, {}) for i in range(2, 10)]  # as read
    cache.flush()
    hits = dict(other.execute("SELECT key, hits FROM entries").fetchall())
    other.close()
    assert hits == {**{k: 1 for k in keys[:9]}, "another": 0}
    cache.close()
