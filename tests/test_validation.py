"""Validation before anything runs (SPEC §1, §2, §4): every problem, each with its JSON path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plait.errors import Problem, WorkflowInvalid
from plait.ir import load_file
from plait.nodes.registry import Registry
from plait.runtime.compile import compile_raw

Run = Callable[..., Any]


def shell(node_id: str, command: str = "echo hi", **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command}, **extra}


def problems(raw: Any) -> list[Problem]:
    with pytest.raises(WorkflowInvalid) as info:
        compile_raw(raw, Registry())
    return info.value.problems


def only(raw: Any) -> Problem:
    found = problems(raw)
    assert len(found) == 1, [p.to_dict() for p in found]
    return found[0]


def by_path(found: list[Problem]) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    for p in found:
        out.setdefault(p.path, []).append(p)
    return out


# -- a valid workflow ---------------------------------------------------------------


def test_a_valid_workflow_compiles() -> None:
    raw = {
        "ir_version": "0.1.0",
        "inputs": {"who": {"type": "string", "default": "world"}},
        "nodes": [shell("greet", "echo hello ${who}"), shell("shout", "echo ${greet.stdout}")],
        "outputs": {"text": {"source": "${shout.stdout}"}},
    }
    compiled = compile_raw(raw, Registry())
    assert compiled.order == ["greet", "shout"]


def test_pflow_compat_fields_are_accepted() -> None:
    raw = {"nodes": [shell("a")], "edges": [], "mappings": {}, "enable_namespacing": True}
    compile_raw(raw, Registry())


# -- unknown fields and types, with "did you mean" ----------------------------------


@pytest.mark.parametrize(
    ("raw", "path", "suggestion"),
    [
        ({"nodes": [shell("a")], "edgez": []}, "edgez", "edges"),
        ({"nodes": [{**shell("a"), "parms": {}}]}, "nodes[0].parms", "params"),
        ({"nodes": [{**shell("a"), "batch": {"items": [1], "paralel": True}}]}, "nodes[0].batch.paralel", "parallel"),
        ({"nodes": [{**shell("a"), "retry": {"wiat": 2}}]}, "nodes[0].retry.wiat", "wait"),
        ({"nodes": [shell("a")], "edges": [{"from": "a", "too": "a"}]}, "edges[0].too", "to"),
        ({"inputs": {"x": {"typ": "string"}}, "nodes": [shell("a")]}, "inputs.x.typ", "type"),
        ({"nodes": [shell("a")], "outputs": {"o": {"source": "${a.stdout}", "descr": ""}}}, "outputs.o.descr", "description"),
    ],
)
def test_unknown_field_suggests_the_nearest(raw: dict[str, Any], path: str, suggestion: str) -> None:
    found = by_path(problems(raw))
    assert path in found, list(found)
    p = found[path][0]
    assert "unknown field" in p.message
    assert f"did you mean '{suggestion}'" in p.hint


def test_unknown_field_without_a_near_name_lists_the_allowed_ones() -> None:
    p = only({"nodes": [{**shell("a"), "zzzzzz": 1}]})
    assert p.path == "nodes[0].zzzzzz"
    assert "params" in p.hint and "batch" in p.hint


def test_unknown_node_type_suggests_the_nearest() -> None:
    p = only({"nodes": [{"id": "a", "type": "shel", "params": {"command": "x"}}]})
    assert p.path == "nodes[0].type"
    assert "unknown node type 'shel'" in p.message
    assert "did you mean 'shell'" in p.hint


def test_unknown_node_type_far_from_any_lists_them() -> None:
    p = only({"nodes": [{"id": "a", "type": "zzzzqqq"}]})
    assert "read-file" in p.hint and "shell" in p.hint


def test_unknown_param_suggests_the_nearest() -> None:
    found = problems({"nodes": [{"id": "a", "type": "shell", "params": {"comand": "echo"}}]})
    paths = by_path(found)
    assert "did you mean 'command'? (a required param, missing)" in paths["nodes[0].params.comand"][0].hint
    # one problem for one typo: the required param it misspells is not missing a second time
    assert "nodes[0].params" not in paths, found


def test_a_missing_required_param_not_misspelt_is_its_own_problem() -> None:
    found = problems({"nodes": [{"id": "a", "type": "shell", "params": {"zzzq": "echo"}}]})
    paths = by_path(found)
    assert "'shell' takes: command" in paths["nodes[0].params.zzzq"][0].hint
    assert "missing required param 'command'" in paths["nodes[0].params"][0].message
    # a misspelling of a param that is given is no stand-in for a missing one
    found = problems({"nodes": [{"id": "a", "type": "shell", "params": {"command": "x", "comand": "y"}}]})
    assert [p.path for p in found] == ["nodes[0].params.comand"]
    assert found[0].hint == "did you mean 'command'?"


# -- ids, edges, start node ---------------------------------------------------------


def test_duplicate_ids() -> None:
    p = only({"nodes": [shell("a"), shell("b"), shell("a")]})
    assert p.path == "nodes[2].id"
    assert "duplicate node id 'a'" in p.message and "nodes[0]" in p.message


@pytest.mark.parametrize("bad_id", ["1abc", "has space", "a" * 65, ""])
def test_invalid_ids(bad_id: str) -> None:
    p = only({"nodes": [shell(bad_id)]})
    assert p.path == "nodes[0].id"


def test_dangling_edges_name_the_end_and_suggest() -> None:
    raw = {
        "nodes": [shell("fetch"), shell("store")],
        "edges": [{"from": "fetch", "to": "stor"}, {"from": "nowhere", "to": "fetch"}],
    }
    found = by_path(problems(raw))
    assert "did you mean 'store'" in found["edges[0].to"][0].hint
    assert "'nowhere'" in found["edges[1].from"][0].message


def test_start_node_must_exist() -> None:
    p = only({"nodes": [shell("a")], "start_node": "b"})
    assert p.path == "start_node"


def test_nodes_must_be_a_non_empty_list() -> None:
    assert only({"nodes": []}).path == "nodes"
    assert only({"nodes": {"a": 1}}).path == "nodes"
    assert only({}).path == "nodes"


def test_a_workflow_must_be_an_object() -> None:
    assert "object" in only([1, 2]).message


# -- template references ------------------------------------------------------------


def test_reference_to_unknown_node_lists_available_and_suggests() -> None:
    raw = {"nodes": [shell("fetch"), shell("show", "echo ${fetc.stdout}")]}
    p = only(raw)
    assert p.path == "nodes[1].params.command"
    assert p.node_id == "show"
    assert "${fetc.stdout}" in p.message
    assert "did you mean 'fetch'" in p.hint
    assert "available: fetch" in p.hint


def test_reference_to_unknown_input() -> None:
    raw = {"inputs": {"name": {"type": "string"}}, "nodes": [shell("a", "echo ${nmae}")]}
    p = only(raw)
    assert "did you mean 'name'" in p.hint


def test_uppercase_root_hints_at_env_and_shell_variables() -> None:
    p = only({"nodes": [shell("a", "echo ${HOME}")]})
    assert "${env.HOME}" in p.hint
    assert "$${HOME}" in p.hint


def test_shell_default_without_colon_is_a_template_with_a_hint() -> None:
    # '-' is allowed in names (node ids use it), so ${VAR-default} reads as a template.
    p = only({"nodes": [shell("a", "echo ${USER-nobody}")]})
    assert "$${USER-nobody}" in p.hint


def test_reference_to_unknown_output_of_a_known_node() -> None:
    p = only({"nodes": [shell("a"), shell("b", "echo ${a.stdot}")]})
    assert "has no output 'stdot'" in p.message
    assert "did you mean 'stdout'" in p.hint


def test_reference_to_a_node_that_runs_later() -> None:
    p = only({"nodes": [shell("first", "echo ${second.stdout}"), shell("second")]})
    assert p.path == "nodes[0].params.command"
    assert "cannot have run before 'first'" in p.message


def test_reference_across_parallel_branches_of_a_fan_out() -> None:
    raw = {
        "nodes": [shell("start"), shell("left"), shell("right", "echo ${left.stdout}")],
        "edges": [{"from": "start", "to": "left"}, {"from": "start", "to": "right"}],
    }
    assert "cannot have run before 'right'" in only(raw).message


def test_an_error_handler_may_read_the_failed_node() -> None:
    raw = {
        "nodes": [shell("risky", "exit 3"), shell("handle", "echo ${risky.exit_code} ${risky.stderr}")],
        "edges": [{"from": "risky", "to": "handle", "action": "error"}],
    }
    compile_raw(raw, Registry())


def test_a_node_cannot_read_its_own_outputs() -> None:
    p = only({"nodes": [shell("a", "echo ${a.stdout}")]})
    assert "its own outputs" in p.message


def test_batch_alias_outside_a_batch() -> None:
    raw = {
        "nodes": [
            {**shell("each", "echo ${item}"), "batch": {"items": [1, 2]}},
            shell("after", "echo ${item}"),
        ]
    }
    p = only(raw)
    assert p.path == "nodes[1].params.command"
    assert p.message == "${item}: 'item' is the item of a batch, but node 'after' has no batch"


def test_item_without_any_batch_in_the_workflow_says_so() -> None:
    p = only({"nodes": [shell("a", "echo ${item.name}")]})
    assert "'item' is the item of a batch, but node 'a' has no batch" in p.message
    assert '"batch"' in p.hint and "declare it under 'inputs'" not in p.hint


def test_an_unknown_node_type_says_where_custom_types_come_from() -> None:
    p = only({"nodes": [{"id": "a", "type": "frobnicate"}]})
    assert "--nodes FILE.py" in p.hint and "plait.nodes entry points" in p.hint


def test_batch_items_reference_is_checked() -> None:
    raw = {"nodes": [{**shell("each", "echo ${item}"), "batch": {"items": "${lst.files}"}}]}
    assert only(raw).path == "nodes[0].batch.items"


def test_output_sources_are_checked() -> None:
    p = only({"nodes": [shell("a")], "outputs": {"out": {"source": "${b.stdout}"}}})
    assert p.path == "outputs.out.source"


def test_env_needs_a_variable_name() -> None:
    assert "name a variable" in only({"nodes": [shell("a", "echo ${env}")]}).message


# -- param value types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "param", "expected"),
    [
        ({"command": 42}, "command", "string"),
        ({"command": "x", "timeout": "ten"}, "timeout", "number"),
        ({"command": "x", "ignore_errors": "yes"}, "ignore_errors", "boolean"),
        ({"command": "x", "env": ["A=1"]}, "env", "object"),
    ],
)
def test_wrong_param_types(params: dict[str, Any], param: str, expected: str) -> None:
    p = only({"nodes": [{"id": "a", "type": "shell", "params": params}]})
    assert p.path == f"nodes[0].params.{param}"
    assert p.param == param
    assert f"must be {expected}" in p.message


def test_a_template_stands_in_for_any_param_type() -> None:
    raw = {
        "inputs": {"t": {"type": "number"}},
        "nodes": [{"id": "a", "type": "shell", "params": {"command": "x", "timeout": "${t}"}}],
    }
    compile_raw(raw, Registry())


def test_an_integer_fits_a_number_param() -> None:
    compile_raw({"nodes": [{"id": "a", "type": "shell", "params": {"command": "x", "timeout": 5}}]}, Registry())


# -- inputs, batch and retry settings -----------------------------------------------


def test_input_type_must_be_known() -> None:
    p = only({"inputs": {"n": {"type": "integr"}}, "nodes": [shell("a")]})
    assert p.path == "inputs.n.type"
    assert "did you mean 'integer'" in p.hint


def test_only_one_stdin_input() -> None:
    raw = {"inputs": {"a": {"stdin": True}, "b": {"stdin": True}}, "nodes": [shell("n")]}
    assert "only one input may take stdin" in only(raw).message


@pytest.mark.parametrize(
    ("batch", "path"),
    [
        ({"items": [1], "as": "1x"}, "nodes[0].batch.as"),
        ({"items": [1], "max_concurrent": 0}, "nodes[0].batch.max_concurrent"),
        ({"items": [1], "error_handling": "contine"}, "nodes[0].batch.error_handling"),
        ({"items": [1], "max_retries": -1}, "nodes[0].batch.max_retries"),
        ({"items": [1], "max_retries": 0}, "nodes[0].batch.max_retries"),
        ({"items": [1], "retry_wait": float("inf")}, "nodes[0].batch.retry_wait"),
        ({"items": [1], "retry_backoff": "linear"}, "nodes[0].batch.retry_backoff"),
        ({"items": [1], "max_failure_rate": 2}, "nodes[0].batch.max_failure_rate"),
        ({"items": 5}, "nodes[0].batch.items"),
        ({"items": "a,b"}, "nodes[0].batch.items"),
        ({}, "nodes[0].batch"),
    ],
)
def test_batch_settings(batch: dict[str, Any], path: str) -> None:
    found = by_path(problems({"nodes": [{**shell("a"), "batch": batch}]}))
    assert path in found, list(found)


def test_retry_settings() -> None:
    raw = {"nodes": [{**shell("a"), "retry": {"max": "2", "wait": -1}}]}
    assert set(by_path(problems(raw))) == {"nodes[0].retry.max", "nodes[0].retry.wait"}


# -- ir_version ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.1.0", "0.2", "0.9.3"])
def test_known_major_version(version: str) -> None:
    compile_raw({"ir_version": version, "nodes": [shell("a")]}, Registry())


@pytest.mark.parametrize("version", ["2.0.0", "3.1"])
def test_unknown_major_version_is_refused(version: str) -> None:
    p = only({"ir_version": version, "nodes": [shell("a")]})
    assert p.path == "ir_version"
    assert version in p.message


def test_ir_version_must_be_semver() -> None:
    assert only({"ir_version": "latest", "nodes": [shell("a")]}).path == "ir_version"


# -- every problem in one report ----------------------------------------------------


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    raw = {
        "ir_version": "3.0.0",
        "inputs": {"name": {"type": "strng"}},
        "nodes": [
            {"id": "a", "type": "shel", "params": {"command": "echo"}},
            {"id": "a", "type": "shell", "params": {"command": "echo ${nope}", "timeout": "x"}},
            {"id": "c", "type": "shell", "params": {"command": "echo"}, "batch": {"items": [1], "az": "f"}},
        ],
        "edges": [{"from": "a", "to": "zz"}],
        "outputs": {"o": {"source": "${missing.x}"}},
    }
    paths = [p.path for p in problems(raw)]
    assert paths == [
        "ir_version",
        "inputs.name.type",
        "nodes[0].type",
        "nodes[1].id",
        "nodes[1].params.command",
        "nodes[1].params.timeout",
        "nodes[2].batch.az",
        "edges[0].to",
        "outputs.o.source",
    ]


def test_a_dangling_edge_does_not_also_produce_ordering_noise() -> None:
    raw = {
        "nodes": [shell("a"), shell("b"), shell("c", "echo ${b.stdout}")],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "cc"}],
    }
    assert [p.path for p in problems(raw)] == ["edges[1].to"]


# -- malformed files ----------------------------------------------------------------


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "nodes": [\n    {"id": "a", "type": "shell",}\n  ]\n}\n')
    with pytest.raises(WorkflowInvalid) as info:
        load_file(path)
    assert info.value.file == str(path)
    p = info.value.problems[0]
    assert (p.line, p.column) == (3, 33)
    assert "malformed JSON" in p.message
    assert "trailing commas" in p.hint


def test_malformed_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("nodes:\n  - id: a\n    type: shell\n   params: {command: echo}\n")
    with pytest.raises(WorkflowInvalid) as info:
        load_file(path)
    p = info.value.problems[0]
    assert "malformed YAML" in p.message
    assert p.line == 4
    assert p.column is not None


@pytest.mark.parametrize("name", ["empty.json", "empty.yaml"])
def test_an_empty_file_says_so(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("\n")
    with pytest.raises(WorkflowInvalid) as info:
        load_file(tmp_path / name)
    assert "empty" in info.value.problems[0].message


# -- through the CLI ----------------------------------------------------------------


def test_validate_a_good_workflow(plait: Run, workflow: Callable[..., str]) -> None:
    path = workflow({"nodes": [shell("a"), shell("b")]})
    r = plait("validate", path)
    assert r.code == 0, r
    assert "valid" in r.stdout and "2 nodes" in r.stdout


def test_validate_does_not_run_anything(plait: Run, workflow: Callable[..., str], tmp_path: Path) -> None:
    path = workflow({"nodes": [shell("a", "touch ran")]})
    assert plait("validate", path).code == 0
    assert not (tmp_path / "ran").exists()


def test_validate_reports_every_problem_with_paths(plait: Run, workflow: Callable[..., str]) -> None:
    path = workflow(
        {
            "nodes": [
                {"id": "a", "type": "shel"},
                {"id": "a", "type": "shell", "params": {"command": "echo ${zz}", "timeout": "x"}},
            ],
            "edges": [{"from": "a", "to": "b"}],
        }
    )
    r = plait("validate", path)
    assert r.code == 2, r
    assert "5 problems" in r.stderr
    for text in ("nodes[0].type", "nodes[1].id", "${zz}", "nodes[1].params.timeout", "edges[0].to", "did you mean 'shell'"):
        assert text in r.stderr
    assert path in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_validate_json_output(plait: Run, workflow: Callable[..., str]) -> None:
    path = workflow({"nodes": [{"id": "a", "type": "shel"}, shell("b", "echo ${x}")]})
    r = plait("validate", "--output-format", "json", path)
    assert r.code == 2
    out = r.json
    assert out["status"] == "invalid"
    assert [e["path"] for e in out["errors"]] == ["nodes[0].type", "nodes[1].params.command"]
    assert out["errors"][0]["hint"] == "did you mean 'shell'?"

    good = workflow({"nodes": [shell("a")]})
    r = plait("validate", "-o", "json", good)
    assert r.code == 0
    assert r.json == {"status": "valid", "errors": [], "warnings": []}


def test_validate_warns_about_unreachable_nodes(plait: Run, workflow: Callable[..., str]) -> None:
    path = workflow(
        {"nodes": [shell("a"), shell("b"), shell("island")], "edges": [{"from": "a", "to": "b"}]}
    )
    r = plait("validate", "-o", "json", path)
    assert r.code == 0
    assert any("island" in w for w in r.json["warnings"])


def test_malformed_file_through_the_cli(plait: Run, workflow: Callable[..., str]) -> None:
    path = workflow('{"nodes": [\n  {"id": "a" "type": "shell"}\n]}\n', name="bad.json")
    r = plait("validate", path)
    assert r.code == 2
    assert "bad.json" in r.stderr
    assert "line 2, column 14" in r.stderr
    assert "Traceback" not in r.stderr

    path = workflow("nodes: [\n  {id: a, type: shell\n", name="bad.yml")
    r = plait("run", path)
    assert r.code == 2
    assert "bad.yml" in r.stderr and "malformed YAML" in r.stderr and "line " in r.stderr


def test_invalid_workflow_is_exit_2_for_run_too(plait: Run, workflow: Callable[..., str], tmp_path: Path) -> None:
    path = workflow({"nodes": [shell("a", "touch ran"), shell("b", "echo ${nope}")]})
    r = plait("run", path)
    assert r.code == 2
    assert "nope" in r.stderr
    assert not (tmp_path / "ran").exists()


def test_missing_or_unsupported_files(plait: Run, tmp_path: Path) -> None:
    r = plait("validate", "nothere.json")
    assert r.code == 2 and "not found" in r.stderr
    (tmp_path / "wf.txt").write_text(json.dumps({"nodes": [shell("a")]}))
    r = plait("validate", "wf.txt")
    assert r.code == 2 and ".json" in r.stderr


@pytest.mark.parametrize(
    ("spec", "ok"),
    [
        ({"type": "integer", "default": "abc"}, False),
        ({"type": "integer", "default": 1.5}, False),
        ({"type": "string", "default": 7}, False),
        ({"type": "array", "default": {}}, False),
        ({"type": "number", "default": 2}, True),
        ({"type": "int", "default": 2}, True),
        ({"type": "object", "default": None}, True),
        ({"default": [1]}, True),
    ],
)
def test_input_default_must_fit_the_declared_type(spec: dict[str, Any], ok: bool) -> None:
    raw = {"inputs": {"x": spec}, "nodes": [shell("a")]}
    if ok:
        compile_raw(raw, Registry())
    else:
        assert only(raw).path == "inputs.x.default"


def test_batch_items_may_be_a_json_list_string() -> None:
    compiled = compile_raw({"nodes": [{**shell("a", "echo ${item}"), "batch": {"items": "[1, 2]"}}]}, Registry())
    assert compiled.nodes["a"].batch is not None


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"nodes": [shell("a")]}).encode())
    assert load_file(path)["nodes"][0]["id"] == "a"
