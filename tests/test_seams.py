"""The seams new capabilities plug into: events, services, the format's one declaration, the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import plait
from conftest import SRC, Result, plait_env
from plait.runtime.events import Event, EventBus, ItemStarted, NodeFinished

PROBE = str(Path(__file__).with_name("probe_nodes.py"))
ROOT = Path(__file__).resolve().parents[1]


# -- events


def test_a_raising_subscriber_is_detached_and_reported_once_and_the_batch_finishes(tmp_path: Path) -> None:
    calls = 0

    def broken(ev: Event) -> None:
        nonlocal calls
        if isinstance(ev, ItemStarted):
            calls += 1
            raise ValueError("display crashed")

    seen: list[Event] = []
    wf = {
        "nodes": [
            {
                "id": "p",
                "type": "probe",
                "params": {"value": "${item}", "sleep": 0.01},
                "batch": {"items": list(range(40)), "parallel": True, "max_concurrent": 8},
            }
        ]
    }
    bus_failures: list[Any] = []

    def on_event(ev: Event) -> None:
        broken(ev)

    result = plait.run(wf, nodes=[PROBE], on_event=seen.append)
    assert result.ok
    # through the bus directly: a raising subscriber next to a working one
    bus = EventBus(on_subscriber_error=lambda sub, exc: bus_failures.append(exc))
    bus.subscribe(on_event)
    bus.subscribe(seen.append)
    from plait.nodes.registry import Registry
    from plait.runtime.compile import compile_raw
    from plait.runtime.engine import Runner
    from plait.runtime.services import RunServices

    registry = Registry()
    registry.load_path(PROBE)
    compiled = compile_raw(wf, registry)
    services = RunServices(registry, bus, str(tmp_path))
    try:
        outcome = Runner(compiled, services).run({})
    finally:
        services.close()
    assert outcome.status == "success"
    assert outcome.outputs["success_count"] == 40
    assert calls == 1  # detached at its first failure
    assert len(bus_failures) == 1 and str(bus_failures[0]) == "display crashed"
    assert any(isinstance(e, NodeFinished) for e in seen)  # the other subscriber kept hearing


def test_event_locations_name_the_node_through_sub_workflows(tmp_path: Path) -> None:
    child = {"nodes": [{"id": "hi", "type": "echo", "params": {"v": 1}}]}
    wf = {
        "nodes": [
            {
                "id": "each",
                "type": "workflow",
                "params": {"workflow_ir": child},
                "batch": {"items": [0, 1]},
            }
        ]
    }
    seen: list[Event] = []
    assert plait.run(wf, on_event=seen.append).ok
    inner = sorted(str(e.loc) for e in seen if isinstance(e, NodeFinished) and not e.loc.top_level)
    assert inner == ["each[0]/hi", "each[1]/hi"]
    assert {e.loc.top for e in seen if isinstance(e, NodeFinished) and not e.loc.top_level} == {
        ("each", 0),
        ("each", 1),
    }


# -- services and layers


def test_the_runtime_imports_no_node_module() -> None:
    code = (
        "import sys\n"
        "import plait.runtime.engine, plait.runtime.batch, plait.runtime.driver, plait.runtime.services\n"
        "import plait.runtime.subworkflows, plait.runtime.executors.local, plait.runtime.records\n"
        "print(sorted(m for m in sys.modules if m.startswith('plait.nodes.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plait_env(), check=True)
    assert json.loads(out.stdout.replace("'", '"')) == ["plait.nodes.base"]


def test_no_node_module_imports_the_runtime() -> None:
    for path in (SRC / "plait" / "nodes").glob("*.py"):
        text = path.read_text()
        assert "plait.runtime" not in text, path.name


def test_import_plait_is_cheap() -> None:
    code = "import sys, plait\nprint(sorted(m for m in sys.modules if m.startswith('plait')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plait_env(), check=True)
    assert out.stdout.strip() == "['plait']"


# -- the format's one declaration


def test_the_docs_tables_are_the_declared_fields() -> None:
    from plait.ir.format import reference_tables

    text = (ROOT / "docs" / "format.md").read_text()
    for table in reference_tables().split("\n\n"):
        assert table.strip() in text, "paste the output of `plait schema --markdown` into docs/format.md"


def test_the_schema_defaults_are_the_declared_ones(plait: Any) -> None:
    r = plait("schema")
    assert r.code == 0, r
    batch = r.json["properties"]["nodes"]["items"]["properties"]["batch"]["properties"]
    assert batch["max_retries"]["default"] == 1 and batch["max_retries"]["minimum"] == 1
    assert batch["retry_wait"]["default"] == 0
    assert batch["max_concurrent"]["default"] == 10


NUMBER_WF = {
    "inputs": {"x": {"type": "string"}},
    "nodes": [
        {"id": "http", "type": "probe", "params": {"value": "${x}", "sleep": "${x}"}},
    ],
}


@pytest.mark.parametrize("text", ["nan", "1_000", "inf", "1e999"])
def test_text_that_is_not_a_json_number_is_refused_from_a_template_and_the_command_line(
    plait: Any, workflow: Any, text: str
) -> None:
    r: Result = plait("run", workflow(NUMBER_WF), f"x={text}", "--nodes", PROBE, "-q")
    assert r.code == 1, r
    assert "param 'sleep' must be number" in r.stderr
    cli = {"inputs": {"x": {"type": "number"}}, "nodes": [{"id": "e", "type": "echo", "params": {"v": "${x}"}}]}
    r = plait("run", workflow(cli), f"x={text}", "-q")
    assert r.code == 2, r
    assert "input 'x' is declared as number" in r.stderr


def test_yes_is_a_boolean_from_a_template_as_on_the_command_line(plait: Any, workflow: Any) -> None:
    wf = {
        "inputs": {"x": {"type": "string"}, "b": {"type": "boolean"}},
        "nodes": [{"id": "p", "type": "probe", "params": {"value": "${b}", "fail": "${x}"}}],
    }
    r = plait("run", workflow(wf), "x=no", "b=yes", "--nodes", PROBE, "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"]["value"] is True  # the command line read "yes" as true
    r = plait("run", workflow(wf), "x=yes", "b=no", "--nodes", PROBE, "-q")
    assert r.code == 1 and "failed" in r.stderr  # and the template read "yes" as true


def test_an_explicit_batch_max_retries_wins_over_the_node_retry(tmp_path: Path) -> None:
    node = {
        "id": "p",
        "type": "probe",
        "params": {"value": "${item}", "fail_times": 5, "marker": str(tmp_path / "count")},
        "retry": {"max": 4},
        "batch": {"items": ["a"], "max_retries": 1, "error_handling": "continue"},
    }
    result = plait.run({"nodes": [node]}, nodes=[PROBE])
    assert result.outputs["errors"][0]["attempts"] == 1
    assert (tmp_path / "count").read_text() == "1"
    del node["batch"]["max_retries"]  # now the node's retry applies to each item
    (tmp_path / "count").unlink()
    result = plait.run({"nodes": [node]}, nodes=[PROBE])
    assert result.outputs["errors"][0]["attempts"] == 4


def test_the_old_retry_fields_are_refused_with_the_new_names() -> None:
    check = plait.validate({"nodes": [{"id": "a", "type": "echo", "retry": {"max_retries": 2}}]})
    assert not check.ok
    assert check.problems[0].path == "nodes[0].retry.max_retries"
    assert "'max' now" in check.problems[0].message


def test_max_retries_zero_is_refused_with_a_hint() -> None:
    check = plait.validate({"nodes": [{"id": "a", "type": "echo", "batch": {"items": [1], "max_retries": 0}}]})
    assert [p.path for p in check.problems] == ["nodes[0].batch.max_retries"]
    assert "1 means no retry" in check.problems[0].hint


# -- resolved values are never shared


def test_a_node_changing_a_value_in_place_is_not_seen_by_the_next_node() -> None:
    wf = {
        "nodes": [
            {"id": "src", "type": "shell", "params": {"command": """echo '{"items": ["a"]}'"""}},
            {"id": "one", "type": "probe", "params": {"append_to": "${src.stdout.items}"}},
            {"id": "two", "type": "probe", "params": {"append_to": "${src.stdout.items}"}},
            {"id": "three", "type": "probe", "params": {"append_to": "${one.seen}"}},
        ]
    }
    result = plait.run(wf, nodes=[PROBE])
    assert result.ok, result.errors
    assert result.values["one"]["seen"] == ["a", "mine"]
    assert result.values["two"]["seen"] == ["a", "mine"]  # not ["a", "mine", "mine"]
    assert result.values["three"]["seen"] == ["a", "mine", "mine"]
    assert result.values["one"]["seen"] == ["a", "mine"]  # three changed its own copy


def test_items_of_a_batch_do_not_see_each_others_static_params() -> None:
    node = {"id": "p", "type": "probe", "params": {"append_to": []}, "batch": {"items": [1, 2, 3]}}
    result = plait.run({"nodes": [node]}, nodes=[PROBE])
    assert [r["seen"] for r in result.outputs["results"]] == [["mine"]] * 3


# -- the Python API


def test_run_and_validate_return_typed_results(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(
        json.dumps(
            {
                "inputs": {"n": {"type": "integer"}},
                "nodes": [{"id": "e", "type": "echo", "params": {"twice": "${n}"}}],
                "outputs": {"n": {"source": "${e.twice}"}},
            }
        )
    )
    check = plait.validate(path)
    assert check.ok and check.nodes == 1
    result = plait.run(path, inputs={"n": "7"})
    assert isinstance(result, plait.RunResult)
    assert result.ok and result.status == "success" and result.outputs == {"n": 7}
    assert result.nodes["e"].status == "success"
    bad = plait.validate({"nodes": [{"id": "e", "type": "ecko"}]})
    assert not bad.ok and bad.problems[0].hint == "did you mean 'echo'?"
    with pytest.raises(plait.errors.UsageError):
        plait.run(path, inputs={"n": "seven"})
    with pytest.raises(plait.errors.WorkflowInvalid):
        plait.run({"nodes": [{"id": "e", "type": "ecko"}]})


def test_a_failed_run_is_a_result_not_an_exception() -> None:
    result = plait.run({"nodes": [{"id": "s", "type": "shell", "params": {"command": "exit 3"}}]})
    assert result.status == "failed" and not result.ok
    assert result.errors[0]["node_id"] == "s"


def test_the_version_command_does_not_import_the_cli() -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['plait', '--version']\n"
        "from plait._entry import main\n"
        "main()\n"
        "print(sorted(m for m in sys.modules if m.startswith(('plait', 'click'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plait_env(), check=True)
    first, listed = out.stdout.splitlines()
    assert first == f"plait, version {plait.__version__}"
    assert listed == "['plait', 'plait._entry']"


def test_an_async_resource_is_made_once_per_run_and_closed_at_its_end(tmp_path: Path) -> None:
    node = {
        "id": "u",
        "type": "loop-user",
        "params": {"dir": str(tmp_path), "value": "${item}"},
        "batch": {"items": list(range(20)), "parallel": True, "max_concurrent": 8},
    }
    result = plait.run({"nodes": [node]}, nodes=[PROBE])
    assert result.ok, result.errors
    assert {r["session"] for r in result.outputs["results"]} == {1}
    assert (tmp_path / "made.txt").read_text() == "made\n"
    assert (tmp_path / "closed.txt").read_text() == "closed 1\n"
    result = plait.run({"nodes": [node]}, nodes=[PROBE])  # a new run, a new resource
    assert {r["session"] for r in result.outputs["results"]} == {2}


def test_no_function_binds_the_standard_streams_at_import() -> None:
    # A default such as `stream=sys.stdout` keeps the stream of the first import:
    # output then goes to the wrong place once sys.stdout is replaced (tests, embedding).
    for path in (SRC / "plait").rglob("*.py"):
        text = path.read_text()
        assert "= sys.stdout)" not in text and "= sys.stderr)" not in text, path


def test_demand_and_usage_take_their_fields_in_order_with_their_defaults() -> None:
    # Both write their __init__ out (for speed): it must stay the dataclass's own.
    import dataclasses
    import inspect

    from plait.nodes.base import Demand, Usage

    for cls in (Demand, Usage):
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        fields = dataclasses.fields(cls)
        assert [p.name for p in params] == [f.name for f in fields]
        for p, f in zip(params, fields, strict=True):
            assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
        values = {f.name: f"v{i}" for i, f in enumerate(fields)}
        made = cls(**values)
        assert dataclasses.asdict(made) == values
        assert made == cls(**values) and hash(made) == hash(cls(**values))
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(made, fields[0].name, "x")
    assert dataclasses.replace(Usage(model="m", input_tokens=2), cost_usd=0.5) == Usage("m", 2, 0, 0, 0.5)
