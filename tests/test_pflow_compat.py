"""pflow workflows run unchanged (issue 15, points 3 and 4): its templates, the node
params and fields its users write, and the fields plait refuses by name.

Each test is one workflow holding many cases, so the suite stays fast.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from conftest import Result

BINARY = bytes([0, 255, 1, 128]) + b"hi\n"

# A workflow as pflow saves it in ~/.pflow/workflows/NAME.json: the IR inside a wrapper.
SAVED_CHILD = {
    "name": "greet",
    "description": "Greets whoever it is given.",
    "ir": {
        "ir_version": "1.0.0",
        "inputs": {"name": {"type": "string", "required": True}},
        "nodes": [{"id": "g", "type": "shell", "parameters": {"command": "printf 'hi %s' ${name}"}}],
        "outputs": {"greeting": {"source": "${g.stdout}"}, "unused": {"source": "${g.exit_code}"}},
    },
    "created_at": "2025-06-01T10:00:00",
    "updated_at": "2025-06-01T10:00:00",
    "version": "1.0.0",
}


def _pflow_workflow() -> dict[str, Any]:
    return {
        "ir_version": "1.0.0",
        # the settings that are plait's own behaviour are accepted
        "template_resolution_mode": "strict",
        "enable_namespacing": True,
        "mappings": {},
        "nodes": [
            {"id": "gen", "type": "code", "params": {"code": "result = [{'i': 2}, {'i': 0}, {'i': 1}]"}},
            {"id": "sh", "type": "shell", "params": {"command": "printf '%s' v-${item}"},
             "batch": {"items": ["a", "b", "c"]}},
            # nested index templates in a shell command: one value each, inner resolved first
            {"id": "pick", "type": "shell",
             "params": {"command": "printf '%s|%s' ${sh.results[${item.i}].stdout} \"${sh.results[${__index__}].stdout}\""},
             "batch": {"items": "${gen.result}", "parallel": True}},
            # ... in a file path and file content
            {"id": "files", "type": "write-file",
             "params": {"file_path": "out-${sh.results[${__index__}].stdout}.txt",
                        "content": "i=${gen.result[${__index__}].i}"},
             "batch": {"items": ["x", "y"]}},
            # JSON text inside an inline object is parsed; text around a template keeps it text
            {"id": "emit", "type": "shell", "params": {"command": "printf '%s\\n' '{\"k\": [1, 2]}'"}},
            {"id": "inline", "type": "code",
             "params": {"code": "result = [type(data).__name__, data['k'][1], type(text).__name__, "
                                "type(raw).__name__, type(listed[0]).__name__]",
                        "inputs": {"data": "${emit.stdout}", "text": "t ${emit.stdout}", "raw": "${gen.result}",
                                   "listed": ["${emit.stdout}"]}}},
            # pflow's write-file.content_is_binary and node 'parameters'
            {"id": "bin", "type": "write-file",
             "parameters": {"file_path": "bin.dat", "content": base64.b64encode(BINARY).decode(),
                            "content_is_binary": True}},
            # pflow's workflow-node params, the child a saved-workflow wrapper
            {"id": "sub", "type": "workflow",
             "params": {"workflow_ref": "saved-greet.json",
                        "param_mapping": {"name": "${sh.results[${gen.result[0].i}].stdout}"},
                        "output_mapping": {"greeting": "said"}, "storage_mode": "isolated"}},
            {"id": "inline_sub", "type": "workflow",
             "params": {"workflow_ir": SAVED_CHILD["ir"], "param_mapping": {"name": "inline"}}},
        ],
        "outputs": {
            "pick": {"source": "${pick.results}"},
            "inline": {"source": "${inline.result}"},
            "said": {"source": "${sub.said}"},
            "sub_all": {"source": "${sub}"},
            "inline_sub": {"source": "${inline_sub.greeting}"},
            "written": {"source": "${bin.written}"},
        },
    }


def test_a_pflow_workflow_runs_with_its_templates_params_and_saved_child(
    plait: Any, workflow: Any, tmp_path: Path
) -> None:
    workflow(SAVED_CHILD, "saved-greet.json")
    r: Result = plait("run", workflow(_pflow_workflow()), "-o", "json")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert [p["stdout"] for p in out["pick"]] == ["v-c|v-a", "v-a|v-b", "v-b|v-c"]
    assert (tmp_path / "out-v-a.txt").read_text() == "i=2"
    assert (tmp_path / "out-v-b.txt").read_text() == "i=0"
    assert out["inline"] == ["dict", 2, "str", "list", "dict"]
    assert (tmp_path / "bin.dat").read_bytes() == BINARY
    assert out["written"] == len(BINARY)
    assert out["said"] == "hi v-c"
    assert out["sub_all"] == {"said": "hi v-c"}  # with output_mapping: the mapped names only
    assert out["inline_sub"] == "hi inline"


def test_templates_that_cannot_be_resolved_fail_naming_node_param_and_template(
    plait: Any, workflow: Any, tmp_path: Path
) -> None:
    wf = {
        "nodes": [
            {"id": "gen", "type": "code", "params": {"code": "result = [0, 5, 'x']"}},
            {"id": "sh", "type": "shell", "params": {"command": "printf a"}, "batch": {"items": [1]}},
            {"id": "use", "type": "write-file",
             "params": {"file_path": "f${__index__}.txt", "content": "${sh.results[${item}].stdout}"},
             "batch": {"items": "${gen.result}", "error_handling": "continue"}},
            {"id": "bad64", "type": "write-file",
             "params": {"file_path": "b.dat", "content": "not base64!", "content_is_binary": True}},
        ],
        "edges": [{"from": "gen", "to": "sh"}, {"from": "sh", "to": "use"}, {"from": "use", "to": "bad64"}],
        "outputs": {"errors": {"source": "${use.errors}"}},
    }
    r = plait("run", workflow(wf), "-o", "json")
    assert r.code == 1, r
    errors = r.json["errors"]
    assert errors[0]["node_id"] == "bad64" and "not valid base64" in errors[0]["message"]
    assert not (tmp_path / "b.dat").exists()
    text = json.dumps(r.json)
    for index, words in ((1, "index [5] is out of range"), (2, "the index ${item} is a string ('x')")):
        assert words in text, (index, text)
    assert "param 'content': template ${sh.results[${item}].stdout}" in text
    assert (tmp_path / "f0.txt").read_text() == "a"
    # nothing half resolved reached a file
    assert not (tmp_path / "f1.txt").exists() and not (tmp_path / "f2.txt").exists()


def test_pflow_fields_plait_does_not_do_are_refused_by_name(plait: Any, workflow: Any) -> None:
    wf = {
        "ir_version": "1.0.0",
        "template_resolution_mode": "permissive",
        "enable_namespacing": False,
        "mappings": {"a": {"input_mappings": {"x": "y"}}},
        "nodes": [
            {"id": "a", "type": "shell", "params": {"command": "echo hi"}, "parameters": {"command": "echo"}},
            {"id": "b", "type": "shell", "params": {"command": "echo ${item.0} ${a[${b[${c}]}]}"},
             "loop": {"max": 3}, "approval": True, "prompt_cache": True, "prewarm": True},
            {"id": "c", "type": "workflow", "params": {"workflow_name": "fix-issue"}},
            {"id": "d", "type": "workflow", "params": {"workflow_ref": "x.json", "storage_mode": "shared"}},
            {"id": "e", "type": "workflow",
             "params": {"workflow_ref": "x.json", "storage_mode": "scoped", "inputs": {}, "param_mapping": {}}},
            {"id": "f", "type": "workflow",
             "params": {"workflow_ref": "x.json", "workflow": "y.json", "output_mapping": {"r": "not a name"}}},
            {"id": "g", "type": "workflow", "params": {"workflow_ref": "x.json", "output_mapping": {"r": "got"}}},
            {"id": "h", "type": "shell", "params": {"command": "echo ${g.r} ${ a.stdout }"}},
        ],
    }
    r = plait("validate", workflow(wf))
    assert r.code == 2, r
    err = r.stderr
    expected = [
        "template_resolution_mode 'permissive' is not supported",
        "enable_namespacing false is not supported",
        "mappings (pflow's proxy mappings of node inputs and outputs) are not supported yet",
        "nodes[0].parameters: the node has both 'params' and 'parameters'",
        "nodes[1].loop: 'loop' on a node is not supported yet",
        "nodes[1].approval: 'approval' on a node is not supported yet",
        "nodes[1].prompt_cache: 'prompt_cache' on a node is not supported yet",
        "nodes[1].prewarm: 'prewarm' on a node is not supported yet",
        "${item.0}: param 'command' of node 'b' holds a template plait cannot read",
        "${a[${b[${c}]}]}: param 'command' of node 'b' holds a template plait cannot read",
        "workflow_name (a workflow pflow saved by name) is not supported yet",
        "storage_mode 'shared' is not supported",
        "storage_mode 'scoped' is not supported",
        "'inputs' or in 'param_mapping' (pflow's name), not both",
        "not both (workflow and workflow_ref)",
        "output_mapping maps 'r' to 'not a name'",
        "${g.r}: node 'g' (workflow) has no output 'r'",
        "${ a.stdout }: param 'command' of node 'h' holds a template plait cannot read",
    ]
    missing = [e for e in expected if e not in err]
    assert not missing, err


PFLOW_MD = """# Refused fields

Checks that a step's lifted fields are refused with their markdown line.

## Steps

### first

Says hello.

- type: shell
- command: echo hi
- approval: true

### second

Loops, which plait does not do this way.

- type: shell
- loop:
    max: 3
- command: echo ${first.results[${__index__}].stdout}
"""


def test_a_pflow_md_step_with_a_refused_field_points_at_its_line(plait: Any, workflow: Any) -> None:
    r = plait("validate", workflow(PFLOW_MD, "refused.pflow.md"), "-o", "json")
    assert r.code == 2, r
    problems = {p["message"].split(" (node")[0]: p for p in r.json["errors"]}
    lines = PFLOW_MD.splitlines()
    approval = problems["'approval' on a node is not supported yet"]
    assert lines[approval["line"] - 1].startswith("- approval")
    loop = problems["'loop' on a node is not supported yet"]
    assert lines[loop["line"] - 1].startswith("- loop")
    # ${__index__} outside a batch: the inner template is checked like any other
    assert any("'__index__' is the item of a batch" in m for m in problems), problems


def test_a_json_file_with_parameters_converts_to_markdown_with_its_params(plait: Any, workflow: Any) -> None:
    src = workflow(
        {**SAVED_CHILD, "ir": {**SAVED_CHILD["ir"], "outputs": {"greeting": {"source": "${g.stdout}"}}}},
        "saved.json",
    )
    r = plait("convert", src, "--to", "md")
    assert r.code == 0, r
    assert "Greets whoever it is given." in r.stdout  # the wrapper's description
    assert "printf 'hi %s' ${name}" in r.stdout


def test_outputs_without_a_source_take_the_input_or_the_one_node_output_of_their_name(
    plait: Any, workflow: Any
) -> None:
    # pflow's older form: an output is the value of its name. Bound before the run:
    # an input of that name, else the one node declaring that output.
    text = """# Sourceless

Outputs named as what gives them.

## Inputs

### topic

What to write about.

- type: string

## Steps

### say

Say it.

- type: shell

```shell command
printf 'on %s' ${topic}
```

## Outputs

### topic

The topic, as given.

### stdout

What say printed.

### dynamic_result

Written by nothing here.
"""
    path = workflow(text, "sourceless.pflow.md")
    r: Result = plait("run", path, "topic=owls", "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"] == {"topic": "owls", "stdout": "on owls"}  # the untraceable one is left out
    assert "warning: output 'dynamic_result' has no 'source', and no input or node output is named" in r.stderr
    checked = plait("validate", path, "-o", "json")
    assert checked.code == 0 and len(checked.json["warnings"]) == 1, checked

    # two nodes giving that name: which one is not guessed
    two = {
        "nodes": [
            {"id": "a", "type": "shell", "params": {"command": "echo a"}},
            {"id": "b", "type": "shell", "params": {"command": "echo b"}},
        ],
        "outputs": {"stdout": {"description": "one of them"}},
    }
    r = plait("validate", workflow(two, "two.json"))
    assert r.code == 2, r
    assert "output 'stdout' has no 'source', and nodes a, b all give an output 'stdout'" in r.stderr
    assert 'say which: {"source": "${a.stdout}"}' in r.stderr


def test_warnings_reach_the_python_api_and_the_json_result(workflow: Any, plait: Any, tmp_path: Path) -> None:
    import plait as api

    wf = {
        "nodes": [
            {"id": "a", "type": "echo", "params": {"v": 1}},
            {"id": "g", "type": "echo", "params": {"v": "${item}"}, "batch": {"items": {"from": "data/*.csv"}}},
        ],
        "edges": [{"from": "a", "to": "g"}],
        "outputs": {"nothing": {"description": "no source, and nothing of that name"}},
    }
    (tmp_path / "data").mkdir()  # a folder with no CSV in it
    path = workflow(wf)
    result = api.run(path)
    assert result.ok, result
    assert result.warnings[0].startswith("output 'nothing' has no 'source'")
    assert any("the glob 'data/*.csv' matched no files" in w for w in result.warnings[1:]), result.warnings
    r: Result = plait("run", path, "-o", "json", "-q")
    assert r.code == 0 and r.json["warnings"] == result.warnings, r
    # a run without any keeps the JSON as it was
    quiet = plait("run", workflow({"nodes": [{"id": "a", "type": "echo", "params": {"v": 1}}]}, "q.json"), "-o", "json")
    assert "warnings" not in quiet.json
