"""Hostile and broken workflow files and command-line values (issue 10, points 8 and 9):
each is refused with a clear message naming where, never an internal error."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plait.cli.inputs import parse_args
from plait.errors import PlaitError, UsageError, WorkflowInvalid
from plait.ir import load_file, load_text
from plait.ir.loader import (
    MAX_ALIAS_NODES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_INT_DIGITS,
    MAX_YAML_CHARS,
)
from plait.ir.model import InputSpec
from plait.ir.values import convert
from plait.nodes.registry import Registry
from plait.runtime.compile import compile_raw, load_and_compile

CORPUS = Path(__file__).parent / "fuzz_corpus"
Run = Callable[..., Any]
Write = Callable[..., str]


def refused(text: str, fmt: str) -> dict[str, Any]:
    """The one problem the loader reports for text."""
    with pytest.raises(WorkflowInvalid) as info:
        load_text(text, fmt, file="wf")
    assert len(info.value.problems) == 1, info.value.problems
    return info.value.problems[0].to_dict()


def assert_json_data(value: Any) -> None:
    """What the loader returns prints as strict JSON and encodes as UTF-8."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")


# -- point 8: duplicate keys, NaN and infinities, YAML aliases ------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "line", "path"),
    [
        ('{"nodes": [\n  {"id": "a",\n   "type": "echo",\n   "id": "b"}]}', "json", 4, "nodes[0].id"),
        ('{"a": {"b": 1, "c": {"d": 1}, "b": 2}}', "json", 1, "a.b"),
        ('{"x": 1, "x": 1}', "json", 1, "x"),
        ("nodes:\n- id: a\n  type: echo\n  id: b\n", "yaml", 4, "nodes[0].id"),
        ("a: {b: 1, b: 2}", "yaml", 1, "a.b"),
        ("base: &b {x: 1}\nnode: {<<: *b, y: 1, y: 2}", "yaml", 2, "node.y"),
    ],
)
def test_duplicate_keys_are_errors_with_line_and_path(text: str, fmt: str, line: int, path: str) -> None:
    problem = refused(text, fmt)
    assert "duplicate key" in problem["message"], problem
    assert problem["line"] == line and problem["path"] == path, problem
    assert "once" in problem["hint"]


def test_yaml_merge_keys_may_be_overridden() -> None:
    data = load_text("base: &b {x: 1, y: 2}\nnode: {<<: *b, y: 3}", "yaml")
    assert data["node"] == {"x": 1, "y": 3}


@pytest.mark.parametrize(
    ("text", "fmt", "shown"),
    [
        ('{"a": NaN}', "json", "NaN"),
        ('{"a": [1, Infinity]}', "json", "Infinity"),
        ('{"a": -Infinity}', "json", "-Infinity"),
        ('{"a": 1e999}', "json", "too large"),
        ('{"a": -2.5e400}', "json", "too large"),
        ("a: .nan", "yaml", ".nan"),
        ("a: .NaN", "yaml", ".NaN"),
        ("a: [.inf]", "yaml", ".inf"),
        ("a: -.Inf", "yaml", "-.Inf"),
        ("a: 1.0e+999", "yaml", "too large"),
        ("a: !!float .inf", "yaml", ".inf"),
    ],
)
def test_nan_and_infinity_are_refused_with_the_line(text: str, fmt: str, shown: str) -> None:
    problem = refused("\n" + text, fmt)
    assert shown in problem["message"] and problem["line"] == 2, problem
    assert "NaN or Infinity" in problem["hint"]


def billion_laughs(levels: int) -> str:
    """A valid workflow whose echo node's params hold 9**levels "lol"s, in ~400 bytes."""
    text = "nodes:\n- id: a\n  type: echo\n  params:\n"
    text += '    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghijklmnop"[:levels]:
        text += f"    {name}: &{name} [" + ",".join(["*" + prev] * 9) + "]\n"
        prev = name
    return text


def test_a_yaml_alias_bomb_is_refused_at_the_alias_that_breaks_the_budget() -> None:
    text = billion_laughs(8)
    assert len(text) < 460  # about the size of the file in issue 10
    problem = refused(text, "yaml")
    assert f"more than {MAX_ALIAS_NODES} values" in problem["message"], problem
    # 9 + 90 + 900 + 9,000 fit; the first alias of the fifth list ('e', line 9) does not
    assert problem["line"] == 9 and problem["path"] == "nodes[0].params.e", problem


def test_aliases_within_the_budget_load() -> None:
    text = "shared: &s {timeout: 5, headers: {a: b}}\nnodes:\n" + "".join(
        f"- {{id: n{i}, params: *s}}\n" for i in range(200)
    )
    data = load_text(text, "yaml")
    assert data["nodes"][199]["params"] == {"timeout": 5, "headers": {"a": "b"}}


@pytest.mark.parametrize("text", ["a: &a [1, *a]", "a: &a {b: [*a]}", "nodes: &n\n- params: {x: *n}"])
def test_a_yaml_alias_inside_the_value_it_names_is_refused(text: str) -> None:
    problem = refused(text, "yaml")
    assert "inside the value it names" in problem["message"], problem
    assert problem["line"] in (1, 2)


# -- point 9: depth, long integers, surrogates, encodings, size --------------------


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("[" * 100_000 + "]" * 100_000, "json"),
        ('{"a": ' * 5000 + "1" + "}" * 5000, "json"),
        ("[" * 100_000 + "]" * 100_000, "yaml"),
        ("".join(" " * i + "-\n" for i in range(150)), "yaml"),
        ("a: &a " + "[" * 60 + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50, "yaml"),
    ],
)
def test_deep_nesting_is_refused_with_the_line(text: str, fmt: str) -> None:
    problem = refused(text, fmt)
    assert f"more than {MAX_DEPTH} levels" in problem["message"], problem
    assert problem["line"] >= 1 and problem["column"] >= 1


def test_nesting_up_to_the_limit_loads() -> None:
    assert_json_data(load_text("[" * MAX_DEPTH + "]" * MAX_DEPTH, "json"))
    assert_json_data(load_text("[" * MAX_DEPTH + "]" * MAX_DEPTH, "yaml"))


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{"n": ' + "9" * (MAX_INT_DIGITS + 1) + "}", "json"),
        ('{"n": -' + "1" * 5000 + "}", "json"),
        ("n: " + "9" * (MAX_INT_DIGITS + 1), "yaml"),
        ("n: 0x" + "f" * 3600, "yaml"),
    ],
)
def test_integers_over_4300_digits_are_refused(text: str, fmt: str) -> None:
    problem = refused(text, fmt)
    assert "too long" in problem["message"] and problem["path"] == "n", problem
    assert problem["line"] == 1


def test_integers_of_4300_digits_load() -> None:
    assert load_text('{"n": ' + "9" * MAX_INT_DIGITS + "}", "json")["n"] == 10**MAX_INT_DIGITS - 1


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{"x": "\\ud83d"}', "json"),
        ('{"x": ["ok", "tail \\udc00"]}', "json"),
        ('{"\\ud800": 1}', "json"),
        ('x: "\\ud83d"', "yaml"),
        ('x: "\\ud83d\\ude00"', "yaml"),  # YAML escapes are code points: no pairs
    ],
)
def test_lone_surrogates_are_refused(text: str, fmt: str) -> None:
    problem = refused(text, fmt)
    assert "lone surrogate" in problem["message"] and problem["line"] == 1, problem


def test_a_surrogate_pair_in_json_is_one_character() -> None:
    assert load_text('{"x": "\\ud83d\\ude00"}', "json") == {"x": "😀"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x: !!set {a, b}", "!!set is not supported"),
        ("x: !!binary aGk=", "!!binary is not supported"),
        ("x: !!omap [a: 1]", "!!omap is not supported"),
        ("x: !!int abc", "cannot read 'abc' as !!int"),
        ("x: !!bool maybe", "cannot read 'maybe' as !!bool"),
        ("x: !!float", "cannot read '' as !!float"),
        ("? [a, b]\n: c", "a key must be text"),
        ('x: "\x00"', "character #x0000"),
    ],
)
def test_yaml_outside_the_json_model_is_refused(text: str, message: str) -> None:
    problem = refused(text, "yaml")
    assert message in problem["message"] and problem["line"] == 1, problem


def test_yaml_dates_and_non_text_keys_load_as_the_text_written() -> None:
    data = load_text("when: 2024-13-45\nat: 2024-01-01 10:00:00\nm: {1: a, null: b, on: c}", "yaml")
    assert data == {"when": "2024-13-45", "at": "2024-01-01 10:00:00", "m": {"1": "a", "null": "b", "on": "c"}}


def test_invalid_utf8_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_bytes(b'{"nodes": [\n  {"id": "caf\xc3\xa9 \xff"}]}')
    with pytest.raises(WorkflowInvalid) as info:
        load_file(path)
    problem = info.value.problems[0].to_dict()
    assert "not valid UTF-8 (byte 0xff)" in problem["message"], problem
    assert (problem["line"], problem["column"]) == (2, 16)  # characters, not bytes


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_and_utf32_files_say_so(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("nodes: []\n", encoding=encoding)
    with pytest.raises(WorkflowInvalid) as info:
        load_file(path)
    assert info.value.problems[0].message == f"the workflow file is {encoding.upper()} text"
    assert info.value.problems[0].hint == "save it as UTF-8"


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_bytes(b'\xef\xbb\xbf{"nodes": []}')
    assert load_file(path) == {"nodes": []}


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    with open(path, "wb") as fh:
        fh.truncate(4 * MAX_FILE_BYTES)  # sparse: costs no disk
    with pytest.raises(WorkflowInvalid) as info:
        load_file(path)
    assert "larger than 16 MiB" in info.value.problems[0].message
    link = tmp_path / "endless.json"
    link.symlink_to("/dev/zero")
    with pytest.raises(WorkflowInvalid) as info:
        load_file(link)
    assert "larger than 16 MiB" in info.value.problems[0].message


def test_a_big_yaml_file_is_refused_before_parsing() -> None:
    problem = refused("# padding\n" * (MAX_YAML_CHARS // 10 + 1), "yaml")
    assert "more than 2 MiB" in problem["message"] and "JSON" in problem["hint"]


# -- through the CLI: exit 2 and a message, never an internal error --------------------


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("bomb.yaml", billion_laughs(8), "line 9"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested more than 100 levels"),
        (
            "wait.json",
            '{"nodes": [{"id": "a", "type": "echo", "params": {"x": 1},\n'
            ' "batch": {"items": [1], "retry_wait": 1e999}}]}',
            "line 2",
        ),
        ("surrogate.json", '{"nodes": [{"id": "a", "type": "echo", "params": {"x": "\\ud83d"}}]}', "surrogate"),
        ("nan.yaml", "nodes:\n- id: a\n  type: echo\n  params: {x: .nan}\n", "line 4"),
    ],
)
def test_the_cli_refuses_hostile_files_with_exit_2(
    plait: Run, workflow: Write, name: str, content: str, expect: str
) -> None:
    r = plait("run", "-o", "json", workflow(content, name=name))
    assert r.code == 2, r
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r
    assert expect in json.dumps(r.json) or expect in r.stderr, r


@pytest.mark.parametrize(
    ("arg", "expect"),
    [
        ("n=" + "9" * 5000, "at most 4300 digits"),
        ("f=1e999", "finite"),
        ("a=" + "[" * 5000 + "]" * 5000, "nested more than 100 levels"),
        ("a=[NaN]", "NaN is not a JSON number"),
        ("s=" + os.fsdecode(b"caf\xff"), "not valid UTF-8"),
    ],
)
def test_the_cli_refuses_hostile_values_with_exit_2(plait: Run, workflow: Write, arg: str, expect: str) -> None:
    wf = {
        "inputs": {
            "n": {"type": "integer", "required": False},
            "f": {"type": "number", "required": False},
            "a": {"type": "array", "required": False},
            "s": {"type": "string", "required": False},
        },
        "nodes": [{"id": "e", "type": "echo", "params": {"x": 1}}],
    }
    r = plait("run", workflow(wf), arg)
    assert r.code == 2, r
    assert expect in r.stderr and "internal error" not in r.stderr, r


def test_a_huge_number_input_that_is_whole_keeps_its_digits() -> None:
    spec = InputSpec(name="f", type="number")  # once OverflowError: int(float("9" * 400))
    assert convert(spec, "f", "9" * 400) == int("9" * 400)


# -- the corpus of past crashers --------------------------------------------------


@pytest.mark.parametrize(
    "path",
    sorted(p for p in CORPUS.iterdir() if p.name.startswith(("bad-", "ok-"))),
    ids=lambda p: p.name,
)
def test_corpus_file(path: Path) -> None:
    if path.name.startswith("bad-"):
        with pytest.raises(PlaitError) as info:
            load_and_compile(path, Registry())
        assert info.value.exit_code == 2
        assert isinstance(info.value, WorkflowInvalid) and info.value.problems
    else:
        compiled = load_and_compile(path, Registry())
        assert_json_data(load_file(path))
        assert compiled.nodes


# -- fuzzing: only plait's own errors ever come out ---------------------------------

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is repeatable
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Any code point, surrogates included (st.text() leaves them out by default)
ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=40)
JSON_TOKENS = [
    "{", "}", "[", "]", ":", ",", " ", "\n", '"a"', '"b"', '"\\ud83d"', '"\\ude00"',
    '"\\ud83d\\ude00"', '"\\u0000"', "1", "-0", "0.5", "1e999", "-1e999", "1e-999", "NaN",
    "-Infinity", "Infinity", "9" * (MAX_INT_DIGITS + 1), "true", "null", '"x', "\\", "\ufeff",
]
YAML_TOKENS = [
    "&a ", "&b ", "*a", "*b", "<<: ", "- ", ": ", "\n", "  ", "[", "]", "{", "}", ",", "? ",
    "!!int ", "!!float ", "!!bool ", "!!binary ", "!!set ", "!!omap ", "!!str ", "!!timestamp ",
    "!foo ", ".nan", ".inf", "-.inf", "1.0e+999", '"\\ud83d"', "key", "k2", "0x" + "f" * 3600,
    "9" * (MAX_INT_DIGITS + 1), "2024-13-45", "2024-01-01", '"', "'", "#", "|", ">",
    "%YAML 1.1\n", "---\n", "...\n", "\t", "\x00", "\x85", "~", "null", "yes", "on", "1:30",
    "0o17", "0b101", "=", "\\", " #c", '"\\x00"',
]


def soup(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(tokens), max_size=30).map("".join)


@FUZZ
@given(fmt=st.sampled_from(["json", "yaml"]), text=soup(JSON_TOKENS) | soup(YAML_TOKENS) | ANY_TEXT)
def test_fuzz_the_loader(fmt: str, text: str) -> None:
    try:
        value = load_text(text, fmt)
    except PlaitError as exc:
        assert exc.exit_code == 2
    else:
        assert_json_data(value)


@FUZZ
@given(suffix=st.sampled_from([".json", ".yaml"]), data=st.binary(max_size=60))
def test_fuzz_the_loader_with_bytes(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"wf{suffix}"
        path.write_bytes(data)
        try:
            assert_json_data(load_file(path))
        except PlaitError as exc:
            assert exc.exit_code == 2


VALUE_TYPES = ["string", "integer", "number", "boolean", "object", "array", "any"]
HOSTILE_VALUES = st.sampled_from(
    ["9" * 5000, "-" + "9" * 400, "9" * 400, "1e999", "[" * 5000, "1_000", "nan", "inf", "\udcff", "0x10"]
)


@FUZZ
@given(type_=st.sampled_from(VALUE_TYPES), text=ANY_TEXT | soup(JSON_TOKENS) | HOSTILE_VALUES)
def test_fuzz_value_conversion(type_: str, text: str) -> None:
    try:
        value = convert(InputSpec(name="x", type=type_), "x", text)
    except UsageError:
        return
    assert_json_data(value)


@FUZZ
@given(words=st.lists(st.sampled_from(["n=", "s=", "a=", "=", "n", "zz=1", "s=x"]).flatmap(
    lambda start: (ANY_TEXT | HOSTILE_VALUES).map(lambda rest: start + rest)), max_size=4))
def test_fuzz_command_line_inputs(words: list[str]) -> None:
    specs = {
        "n": InputSpec(name="n", type="integer"),
        "s": InputSpec(name="s", type="string"),
        "a": InputSpec(name="a", type="any"),
    }
    try:
        assert_json_data(parse_args(words, specs))
    except UsageError:
        pass


ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**1023, max_value=10**MAX_INT_DIGITS - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(
        ["${x}", "${a.b}", "${item}", "${env.HOME}", "${a[99999999999999999999]}", "$${x}", "${",
         "${__index__}", "${a.", "default", "error", "continue", "fail_fast", "exponential", "-1"]
    ),
)
JSON_VALUE = st.recursive(
    ODD, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
NODE_TYPES = st.sampled_from(
    ["echo", "shell", "read-file", "write-file", "copy-file", "list-files", "http", "code", "workflow",
     "delete-file", "move-file", "nope"]
)
PARAM_NAMES = st.sampled_from(
    ["command", "file_path", "content", "x", "url", "timeout", "code", "inputs", "workflow_ir",
     "workflow", "max_bytes", "pattern", "headers"]
)
BATCH = st.fixed_dictionaries(
    {},
    optional={
        field: ODD | JSON_VALUE
        for field in ("items", "as", "parallel", "max_concurrent", "error_handling", "max_retries",
                      "retry_wait", "retry_backoff", "max_failures", "max_failure_rate", "other")
    },
)
NODE = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c"]) | ODD, "type": NODE_TYPES | ODD},
    optional={
        "params": st.dictionaries(PARAM_NAMES, JSON_VALUE, max_size=3) | ODD,
        "batch": BATCH | ODD,
        "retry": st.dictionaries(st.sampled_from(["max", "wait", "backoff", "max_retries", "retry_wait"]), ODD)
        | ODD,
        "purpose": ODD,
    },
)
WORKFLOW = st.fixed_dictionaries(
    {"nodes": st.lists(NODE, max_size=3) | ODD},
    optional={
        "edges": st.lists(
            st.fixed_dictionaries({"from": st.sampled_from(["a", "b", "c"]) | ODD, "to": st.sampled_from(["a", "b"])},
                                  optional={"action": ODD}),
            max_size=3,
        ) | ODD,
        "inputs": st.dictionaries(
            st.sampled_from(["x", "a", "item", "env"]) | st.text(max_size=4),
            st.fixed_dictionaries({}, optional={"type": st.sampled_from(VALUE_TYPES) | ODD, "required": ODD,
                                                "default": JSON_VALUE, "stdin": ODD}) | ODD,
            max_size=2,
        ) | ODD,
        "outputs": st.dictionaries(st.text(max_size=3), st.fixed_dictionaries({"source": ODD}) | ODD, max_size=2)
        | ODD,
        "ir_version": ODD | st.sampled_from(["1.0.0", "0.1", "99.0.0", "0.1.0-rc"]),
        "start_node": ODD,
    },
)
REGISTRY = Registry()


@settings(FUZZ, max_examples=300)
@given(raw=WORKFLOW)
def test_fuzz_the_validator(raw: dict[str, Any]) -> None:
    try:
        compile_raw(raw, REGISTRY)
    except PlaitError as exc:
        assert exc.exit_code == 2
