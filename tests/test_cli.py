"""The command line (SPEC §1, §6, §7): commands, inputs, outputs, exit codes, errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import plait_env, popen_cli

Run = Callable[..., Any]
Write = Callable[..., str]

BUILTINS = ("shell", "read-file", "write-file", "copy-file", "move-file", "delete-file", "list-files", "echo")


def sh(node_id: str, command: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command, **params}}


# -- run, the shorthand, file formats -------------------------------------------------


def test_run_and_the_shorthand_do_the_same(plait: Run, workflow: Write) -> None:
    path = workflow({"inputs": {"who": {"type": "string"}}, "nodes": [sh("hi", "echo hello ${who}")]})
    long = plait("run", path, "who=ada")
    short = plait(path, "who=ada")
    assert long.code == short.code == 0, (long, short)
    assert long.stdout == short.stdout == "hello ada\n"


def test_the_shorthand_takes_options_after_the_workflow(plait: Run, workflow: Write) -> None:
    r = plait(workflow({"nodes": [sh("hi", "echo hi")]}), "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["status"] == "success"
    assert r.stderr == ""


YAML_WORKFLOW = """\
# comments are fine in YAML
inputs:
  who: {type: string, default: world}
nodes:
  - id: greet
    type: shell
    params:
      command: echo "hello ${who}"
outputs:
  text: {source: "${greet.stdout}"}
"""


@pytest.mark.parametrize("name", ["flow.yaml", "flow.yml", "FLOW.YML"])
def test_yaml_workflows(plait: Run, workflow: Write, name: str) -> None:
    path = workflow(YAML_WORKFLOW, name=name)
    r = plait(path, "who=yaml")
    assert r.code == 0, r
    assert r.stdout == "hello yaml\n"
    assert plait("validate", path).code == 0


def test_json_and_yaml_hold_the_same_object(plait: Run, workflow: Write) -> None:
    import yaml

    data = yaml.safe_load(YAML_WORKFLOW)
    from_json = plait(workflow(data, name="same.json"), "-o", "json")
    from_yaml = plait(workflow(YAML_WORKFLOW, name="same.yaml"), "-o", "json")
    assert from_json.json["outputs"] == from_yaml.json["outputs"] == {"text": "hello world"}


def test_a_workflow_in_another_folder(plait: Run, workflow: Write) -> None:
    path = workflow({"nodes": [sh("hi", "echo deep")]}, name="some/where/flow.json")
    r = plait("run", path)
    assert r.code == 0, r
    assert r.stdout == "deep\n"


# -- plait nodes ------------------------------------------------------------------------


def test_nodes_lists_the_builtins_with_params_and_outputs(plait: Run) -> None:
    r = plait("nodes")
    assert r.code == 0, r
    for name in BUILTINS:
        assert f"\n{name}  " in "\n" + r.stdout, name
    for text in ("command: string (required)", "file_path", "exit_code: integer", "files: array"):
        assert text in r.stdout


def test_nodes_describes_one_type(plait: Run) -> None:
    r = plait("nodes", "shell")
    assert r.code == 0, r
    assert r.stdout.startswith("shell  ")
    for param in ("command", "stdin", "cwd", "env", "timeout", "ignore_errors"):
        assert f"    {param}: " in r.stdout
    for output in ("stdout", "stderr", "exit_code"):
        assert f"    {output}: " in r.stdout
    assert "read-file" not in r.stdout


def test_nodes_as_json_is_the_declaration(plait: Run) -> None:
    r = plait("nodes", "--json")
    assert r.code == 0, r
    decls = {d["type"]: d for d in r.json}
    assert set(BUILTINS) <= set(decls)
    shell = decls["shell"]
    assert [p["name"] for p in shell["params"]] == [
        "command", "stdin", "cwd", "env", "timeout", "ignore_errors", "strip_newline", "max_output_bytes", "not_options"
    ]
    assert {"name": "command", "type": "string", "required": True} .items() <= shell["params"][0].items()
    assert [o["name"] for o in decls["read-file"]["outputs"]] == ["content", "size"]
    assert decls["echo"]["open_params"] is True


def test_nodes_unknown_type(plait: Run) -> None:
    r = plait("nodes", "shel")
    assert r.code == 2
    assert "did you mean 'shell'" in r.stderr


# -- plait schema ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def schema_validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    from conftest import run_cli

    r = run_cli("schema")
    assert r.code == 0, r
    schema = r.json
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.json"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_schema_accepts_the_examples(schema_validator: Any, path: Path) -> None:
    assert [e.message for e in schema_validator.iter_errors(json.loads(path.read_text()))] == []


def test_schema_accepts_a_full_workflow(schema_validator: Any) -> None:
    import yaml

    good = {
        "$schema": "https://plait.dev/schema/workflow.json",
        "ir_version": "0.1.0",
        "inputs": {"t": {"type": "number", "default": 2, "description": "seconds"}, "s": {"type": "str", "stdin": True}},
        "nodes": [
            sh("a", "echo hi", timeout="${t}", ignore_errors=True, env={"X": "1"}),
            {"id": "b", "type": "echo", "params": {"anything": [1, 2]}, "retry": {"max": 3}},
            {
                "id": "c",
                "type": "read-file",
                "params": {"file_path": "${item}"},
                "batch": {"items": ["x", "y"], "parallel": True, "error_handling": "continue"},
            },
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c", "action": "error"}],
        "outputs": {"o": {"source": "${a.stdout}"}},
    }
    assert list(schema_validator.iter_errors(good)) == []
    assert list(schema_validator.iter_errors(yaml.safe_load(YAML_WORKFLOW))) == []


def test_the_schema_names_every_declared_field_and_no_other(schema_validator: Any) -> None:
    from plait.ir.format import COMPAT_TOP, NODE, TOP
    from plait.ir.schema import workflow_schema

    schema = workflow_schema([])
    node = schema["properties"]["nodes"]["items"]
    assert set(schema["properties"]) == {*TOP.names, *COMPAT_TOP}
    assert set(node["properties"]) == {*NODE.names, "parameters"}  # pflow's other name for params
    full = {"fail_on_item_errors": True, "max_parallel_nodes": 2,
            "nodes": [{"id": "a", "type": "echo", "cache": {"ttl": "7d"}}, {"id": "b", "type": "echo", "cache": False}]}
    assert [e.message for e in schema_validator.iter_errors(full)] == []


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"nodes": [sh("a", "x")], "edgez": []}, []),
        ({"nodes": [{"id": "a", "type": "shel"}]}, ["nodes", 0, "type"]),
        ({"nodes": [{"id": "a", "type": "shell", "params": {"comand": "x"}}]}, ["nodes", 0, "params"]),
        ({"nodes": [sh("a", "x", timeout="ten")]}, ["nodes", 0, "params", "timeout"]),
        ({"nodes": [{**sh("a", "x"), "batch": {"items": [1], "paralel": True}}]}, ["nodes", 0, "batch"]),
        ({"nodes": [sh("1a", "x")]}, ["nodes", 0, "id"]),
        ({"nodes": []}, ["nodes"]),
        ({"edges": []}, []),
        ({"ir_version": "2.0.0", "nodes": [sh("a", "x")]}, ["ir_version"]),
    ],
)
def test_schema_rejects_what_validate_rejects(
    schema_validator: Any, plait: Run, workflow: Write, bad: dict[str, Any], where: list[Any]
) -> None:
    errors = list(schema_validator.iter_errors(bad))
    assert errors, "the schema accepted it"
    assert where in [list(e.absolute_path) for e in errors]
    assert plait("validate", workflow(bad)).code == 2


# -- inputs -----------------------------------------------------------------------------

TYPED = {
    "inputs": {
        "code": {"type": "string"},
        "n": {"type": "integer", "default": 5},
        "ratio": {"type": "number", "default": 0.5},
        "flag": {"type": "boolean", "default": False},
        "cfg": {"type": "object", "default": {}},
        "tags": {"type": "array", "default": []},
        "loose": {"required": False},
    },
    "nodes": [
        {
            "id": "show",
            "type": "echo",
            "params": {k: "${" + k + "}" for k in ("code", "n", "ratio", "flag", "cfg", "tags", "loose")},
        }
    ],
}


def typed(plait: Run, workflow: Write, *words: str) -> Any:
    return plait("run", "-o", "json", workflow(TYPED), *words)


def test_inputs_are_converted_by_their_declared_type(plait: Run, workflow: Write) -> None:
    r = typed(
        plait, workflow, "code=007", "n=42", "ratio=2.5", "flag=true", 'cfg={"a": [1]}', "tags=[1, \"x\"]", "loose=12"
    )
    assert r.code == 0, r
    assert r.json["outputs"] == {
        "code": "007",
        "n": 42,
        "ratio": 2.5,
        "flag": True,
        "cfg": {"a": [1]},
        "tags": [1, "x"],
        "loose": 12,
    }


def test_defaults_fill_what_is_not_given(plait: Run, workflow: Write) -> None:
    r = typed(plait, workflow, "code=x")
    assert r.code == 0, r
    assert r.json["outputs"] == {
        "code": "x",
        "n": 5,
        "ratio": 0.5,
        "flag": False,
        "cfg": {},
        "tags": [],
        "loose": None,
    }


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("code=", ""),
        ("code=true", "true"),
        ("code=[1]", "[1]"),
        ("code=a=b", "a=b"),
        ("code= spaced ", " spaced "),
    ],
)
def test_a_string_input_stays_text(plait: Run, workflow: Write, word: str, value: str) -> None:
    r = typed(plait, workflow, word)
    assert r.code == 0, r
    assert r.json["outputs"]["code"] == value


@pytest.mark.parametrize(("text", "value"), [("3", 3), ('{"a": 1}', {"a": 1}), ("plain text", "plain text"), ("null", None)])
def test_an_untyped_input_takes_json_or_text(plait: Run, workflow: Write, text: str, value: Any) -> None:
    r = typed(plait, workflow, "code=x", f"loose={text}")
    assert r.code == 0, r
    assert r.json["outputs"]["loose"] == value


@pytest.mark.parametrize(
    ("word", "name", "type_"),
    [
        ("n=abc", "n", "integer"),
        ("n=4.5", "n", "integer"),
        ("n=1_000", "n", "integer"),
        ("ratio=fast", "ratio", "number"),
        ("ratio=nan", "ratio", "number"),
        ("flag=maybe", "flag", "boolean"),
        ("cfg=[1, 2]", "cfg", "object"),
        ("cfg={oops", "cfg", "object"),
        ("tags={}", "tags", "array"),
    ],
)
def test_a_value_that_does_not_fit_is_exit_2(plait: Run, workflow: Write, word: str, name: str, type_: str) -> None:
    r = typed(plait, workflow, "code=x", word)
    assert r.code == 2, r
    assert f"input '{name}' is declared as {type_}" in r.stderr
    assert "Traceback" not in r.stderr


def test_required_input_missing_is_exit_2(plait: Run, workflow: Write, tmp_path: Path) -> None:
    wf = {"inputs": {"a": {"type": "string"}, "b": {"type": "string"}}, "nodes": [sh("n", "touch ran")]}
    r = plait("run", workflow(wf))
    assert r.code == 2
    assert "missing required inputs: a, b" in r.stderr
    assert not (tmp_path / "ran").exists()


def test_optional_input_missing_is_null(plait: Run, workflow: Write) -> None:
    wf = {"inputs": {"opt": {"type": "string", "required": False}}, "nodes": [sh("n", "echo [${opt}]")]}
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "[]\n"


@pytest.mark.parametrize(
    ("word", "message"),
    [("nmae=x", "unknown input 'nmae'"), ("justaword", "expected name=value"), ("=x", "expected name=value")],
)
def test_command_line_mistakes_are_exit_2(plait: Run, workflow: Write, word: str, message: str) -> None:
    r = typed(plait, workflow, "code=x", word)
    assert r.code == 2
    assert message in r.stderr


def test_unknown_input_suggests_the_nearest(plait: Run, workflow: Write) -> None:
    r = typed(plait, workflow, "cod=x")
    assert r.code == 2
    assert "did you mean 'code'" in r.stderr


def test_input_given_twice(plait: Run, workflow: Write) -> None:
    r = typed(plait, workflow, "code=x", "code=y")
    assert r.code == 2
    assert "given twice" in r.stderr


# -- stdin ------------------------------------------------------------------------------


def test_piped_stdin_fills_the_stdin_input(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"text": {"type": "string", "stdin": True}, "other": {"type": "string", "default": "-"}},
        "nodes": [sh("count", "wc -l", stdin="${text}")],
    }
    r = plait("run", workflow(wf), input="one\ntwo\nthree\n")
    assert r.code == 0, r
    assert r.stdout.strip() == "3"


def test_piped_stdin_is_converted_by_its_type(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"data": {"type": "object", "stdin": True}},
        "nodes": [sh("show", "echo ${data.items[1]}")],
    }
    r = plait("run", workflow(wf), input='{"items": ["a", "b"]}\n')
    assert r.code == 0, r
    assert r.stdout == "b\n"
    r = plait("run", workflow(wf), input="[1, 2]")
    assert r.code == 2
    assert "input 'data' is declared as object" in r.stderr


def test_a_command_line_value_wins_over_stdin(plait: Run, workflow: Write) -> None:
    wf = {"inputs": {"text": {"type": "string", "stdin": True}}, "nodes": [sh("show", "echo ${text}")]}
    r = plait("run", workflow(wf), "text=from-args", input="from-stdin")
    assert r.stdout == "from-args\n"


def test_nothing_piped_leaves_a_required_stdin_input_missing(plait: Run, workflow: Write) -> None:
    wf = {"inputs": {"text": {"type": "string", "stdin": True}}, "nodes": [sh("show", "echo ${text}")]}
    r = plait("run", workflow(wf))  # stdin is /dev/null
    assert r.code == 2
    assert "missing required input: text" in r.stderr


def test_nothing_piped_uses_the_default(plait: Run, workflow: Write) -> None:
    wf = {
        "inputs": {"text": {"type": "string", "stdin": True, "default": "dflt"}},
        "nodes": [sh("show", "echo ${text}")],
    }
    r = plait("run", workflow(wf))
    assert r.stdout == "dflt\n"


# -- outputs ----------------------------------------------------------------------------


def test_one_declared_output_prints_raw(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [sh("a", "printf 'line1\\nline2'"), sh("b", "echo ignored")],
        "outputs": {"text": {"source": "${a.stdout}"}},
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "line1\nline2\n"


def test_one_declared_structured_output_prints_as_json(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [sh("a", "echo '{\"k\": [1, 2]}'")],
        "outputs": {"k": {"source": "${a.stdout.k}"}},
    }
    r = plait("run", workflow(wf))
    assert json.loads(r.stdout) == [1, 2]


def test_several_declared_outputs_print_as_a_json_object(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [sh("a", "printf A"), sh("b", "printf B")],
        "outputs": {"first": {"source": "${a.stdout}"}, "both": {"source": "${a.stdout}+${b.stdout}"}},
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert json.loads(r.stdout) == {"first": "A", "both": "A+B"}


def test_without_declared_outputs_the_last_nodes_primary_output_prints(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("a", "echo first"), sh("b", "echo last")]}))
    assert r.stdout == "last\n"


def test_without_declared_outputs_an_echo_prints_its_params(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [{"id": "e", "type": "echo", "params": {"x": [1], "y": "z"}}]}))
    assert json.loads(r.stdout) == {"x": [1], "y": "z"}


def test_without_declared_outputs_json_shows_all_outputs_of_the_last_node(plait: Run, workflow: Write) -> None:
    r = plait("run", "-o", "json", workflow({"nodes": [sh("a", "echo out; echo err >&2")]}))
    assert r.json["outputs"] == {"stdout": "out", "stderr": "err\n", "exit_code": 0}


def test_the_last_node_that_ran_is_the_one_shown(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [sh("risky", "exit 1"), sh("never", "echo no"), sh("handler", "echo handled")],
        "edges": [{"from": "risky", "to": "never"}, {"from": "risky", "to": "handler", "action": "error"}],
    }
    r = plait("run", workflow(wf))
    assert r.code == 0, r
    assert r.stdout == "handled\n"


# -- --output-format json --------------------------------------------------------------


def test_json_output_shape_on_success(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [sh("a", "printf A"), sh("b", "printf B")], "outputs": {"b": {"source": "${b.stdout}"}}}
    r = plait("run", "--output-format", "json", workflow(wf))
    assert r.code == 0, r
    out = r.json
    assert {"status", "outputs", "nodes", "duration_ms", "errors"} <= set(out)
    assert out["status"] == "success"
    assert out["outputs"] == {"b": "B"}
    assert out["errors"] == []
    assert list(out["nodes"]) == ["a", "b"]
    for node in out["nodes"].values():
        assert node["status"] == "success"
        assert isinstance(node["duration_ms"], int | float) and node["duration_ms"] >= 0
    assert isinstance(out["duration_ms"], int | float)
    assert out["duration_ms"] >= max(n["duration_ms"] for n in out["nodes"].values())


def test_json_output_shape_on_failure(plait: Run, workflow: Write) -> None:
    wf = {"nodes": [sh("ok", "true"), sh("bad", "echo nope >&2; exit 9"), sh("later", "true")]}
    r = plait("run", "-o", "json", workflow(wf))
    assert r.code == 1
    out = r.json
    assert out["status"] == "failed"
    assert out["nodes"]["ok"]["status"] == "success"
    assert out["nodes"]["bad"]["status"] == "failed"
    assert out["nodes"]["later"]["status"] == "not_run"
    assert len(out["errors"]) == 1
    assert out["errors"][0]["node_id"] == "bad"
    assert "nope" in out["errors"][0]["message"]


def test_json_output_is_the_only_thing_on_stdout(plait: Run, workflow: Write) -> None:
    r = plait("run", "-o", "json", workflow({"nodes": [sh("a", "echo to-stdout; echo to-stderr >&2")]}))
    json.loads(r.stdout)  # nothing else mixed in
    assert "to-stdout" not in r.stderr.replace("\\n", "")


def test_json_output_for_an_invalid_workflow(plait: Run, workflow: Write) -> None:
    r = plait("run", "-o", "json", workflow({"nodes": [{"id": "a", "type": "shel"}]}))
    assert r.code == 2
    out = r.json
    assert out["status"] != "success"
    assert out["errors"][0]["path"] == "nodes[0].type"


# -- exit codes and errors --------------------------------------------------------------


def test_exit_codes(plait: Run, workflow: Write) -> None:
    assert plait("run", workflow({"nodes": [sh("a", "true")]})).code == 0
    assert plait("run", workflow({"nodes": [sh("a", "false")]})).code == 1
    assert plait("run", workflow({"nodes": [sh("a", "true", bogus=1)]})).code == 2
    assert plait("run", "missing.json").code == 2
    assert plait("run", "--no-such-option", workflow({"nodes": [sh("a", "true")]})).code == 2


def test_a_failure_is_one_clear_block(plait: Run, workflow: Write) -> None:
    r = plait("run", "-q", workflow({"nodes": [sh("fetch", "echo 'connection refused' >&2; exit 6")]}))
    assert r.code == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith("error: ")
    assert "fetch" in lines[0] and "connection refused" in lines[0]
    assert any("node: fetch" in line for line in lines)
    assert "Traceback" not in r.stderr


def test_an_invalid_workflow_is_one_clear_block(plait: Run, workflow: Write) -> None:
    r = plait("run", workflow({"nodes": [sh("a", "echo ${nope.stdout}")]}))
    assert r.code == 2
    assert r.stderr.startswith("error: workflow is invalid: 1 problem")
    assert "nodes[0].params.command" in r.stderr
    assert "hint:" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_runtime_template_miss_names_template_item_and_keys(plait: Run, workflow: Write) -> None:
    wf = {
        "nodes": [
            {
                "id": "each",
                "type": "shell",
                "params": {"command": "echo ${item.name}"},
                "batch": {"items": [{"name": "a"}, {"title": "b", "size": 1}]},
            }
        ]
    }
    r = plait("run", "-q", workflow(wf))
    assert r.code == 1
    assert "${item.name}" in r.stderr
    assert "item 1" in r.stderr
    assert "title, size" in r.stderr
    assert "Traceback" not in r.stderr


def test_debug_is_accepted(plait: Run, workflow: Write) -> None:
    assert "--debug" in plait("run", "--help").stdout
    r = plait("run", "--debug", workflow({"nodes": [sh("a", "exit 3")]}))
    assert r.code == 1
    assert "Traceback" not in r.stderr  # a failed run is not a bug


def start_run(path: str, cwd: Path) -> subprocess.Popen[str]:
    """`plait run PATH` in the background, for tests that signal it."""
    return popen_cli("run", path, cwd=cwd)


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def reading_stdin(pid: int) -> bool:
    """Whether the process sits in read(2) on its standard input (Linux: /proc/PID/syscall)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == "0" and int(fields[1], 16) == 0


def retried(db: Path) -> bool:
    if not db.exists():
        return False
    conn = sqlite3.connect(db)
    try:
        return bool(conn.execute("SELECT count(*) FROM items WHERE status = 'retried'").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return False
    finally:
        conn.close()


def test_interrupt_is_exit_130(tmp_path: Path, workflow: Write) -> None:
    path = workflow({"nodes": [sh("slow", "touch started; sleep 30"), sh("after", "touch after")]})
    proc = start_run(path, tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "after").exists()


def test_interrupt_while_waiting_for_piped_input_is_exit_130(tmp_path: Path, workflow: Write) -> None:
    path = workflow(
        {"inputs": {"text": {"type": "string", "stdin": True}}, "nodes": [sh("e", "echo ${text}")]}
    )
    proc = popen_cli("run", path, "-o", "json", cwd=tmp_path, stdin=subprocess.PIPE)  # nothing written yet
    try:
        wait_until(lambda: reading_stdin(proc.pid), "plait to read its standard input")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "error: interrupted" in err and "Aborted" not in err
    assert json.loads(out)["status"] == "interrupted"


@pytest.mark.parametrize("batch", [False, True], ids=["node-retry", "batch-retry"])
def test_interrupt_during_a_retry_wait_stops_at_once(tmp_path: Path, workflow: Write, batch: bool) -> None:
    node = sh("flaky", "touch failed; exit 3")
    if batch:
        node["batch"] = {"items": [1, 2], "parallel": True, "max_retries": 4, "retry_wait": 30}
    else:
        node["retry"] = {"max": 4, "wait": 30}
    path = workflow({"nodes": [node]})
    proc = start_run(path, tmp_path)
    try:
        # the run record says an attempt failed and was retried: the 30 s wait has begun
        wait_until(lambda: retried(Path(os.environ["PLAIT_HOME"]) / "runs.db"), "the first retry")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        waited = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert waited < 5, f"took {waited:.1f} s to stop"


def test_version_and_help_stay_light() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "plait", "--version"],
        capture_output=True,
        text=True,
        env=plait_env(),
        check=True,
    )
    assert "0." in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    heavy = {m for m in imported if m.startswith(("plait.nodes", "plait.runtime", "httpx", "rich", "llm", "yaml"))}
    assert heavy == set()


def test_options_may_come_before_the_workflow_in_the_shorthand(plait, workflow) -> None:
    path = workflow({"nodes": [{"id": "a", "type": "shell", "params": {"command": "echo hi"}}]})
    r = plait("-q", path)
    assert r.code == 0, r
    assert r.stdout == "hi\n" and r.stderr == ""
    r = plait("-o", "json", "-q", path)
    assert r.json["status"] == "success"


def test_an_invalid_workflow_in_json_mode_keeps_the_run_result_shape(plait, workflow) -> None:
    path = workflow({"nodes": [{"id": "a", "type": "shel"}]})
    r = plait("run", path, "-o", "json")
    assert r.code == 2
    out = r.json
    assert out["status"] == "failed" and out["invalid"] is True
    assert out["outputs"] == {} and out["nodes"] == {} and out["duration_ms"] == 0
    assert out["errors"][0]["path"] == "nodes[0].type"
    assert out["errors"][0]["file"] == path
