"""pflow's markdown workflows (.pflow.md): reading, errors with their lines, running, converting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from plait.errors import WorkflowInvalid
from plait.ir import load_file
from plait.ir.markdown import parse_markdown, to_markdown
from plait.nodes.registry import Registry
from plait.runtime.compile import load_and_compile

FIXTURES = Path(__file__).parent / "fixtures" / "pflow_md"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def md(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def step(node_id: str, *body: str, prose: str = "Does a thing.") -> list[str]:
    return [f"### {node_id}", "", prose, "", *body, ""]


def problems_of(text: str) -> list[tuple[int | None, str]]:
    return [(p.line, p.message) for p in parse_markdown(text).problems]


def line_of(text: str, needle: str, start: int = 0) -> int:
    """The 1-based line number of the first line containing ``needle`` (after line ``start``)."""
    for i, line in enumerate(text.splitlines()[start:], start=start + 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in the text")


# --------------------------------------------------------------------------- reading


def test_every_construct_reads_to_the_ir_pflow_builds():
    # The expected IR was checked against pflow 0.16's own parser (identical, apart
    # from pflow's _source_line(s) bookkeeping and the description it keeps beside its IR).
    doc = parse_markdown((FIXTURES / "every-construct.pflow.md").read_text())
    assert doc.problems == []
    expected = json.loads((FIXTURES / "every-construct.ir.json").read_text())
    assert doc.ir == expected
    ir = doc.ir

    assert doc.title == "Every construct"
    assert doc.frontmatter == {"created_by": "the plait test suite", "version": 3}
    assert "created_by" not in json.dumps(ir)  # frontmatter is not part of the IR
    # The prose under the title is the description; a '*' bullet is prose too.
    assert ir["description"].splitlines() == [
        "Exercises each part of the format that plait reads.",
        "It spans two lines, and a note bullet follows.",
        "* this star bullet is prose, not a parameter",
    ]
    assert ir["inputs"]["limit"] == {
        "description": "How many words to keep.",
        "type": "integer",
        "required": False,
        "default": 3,
    }
    words, settings, shout, count, recover, report = ir["nodes"]
    assert words["type"] == "shell" and "type" not in words["params"]
    assert words["purpose"].endswith("* a note about this step, kept in its purpose")
    assert words["params"]["command"] == "printf '%s\\n' ${topic} | head -n ${limit}"
    # batch and retry are node fields, lifted out of the params.
    assert shout["batch"] == {
        "items": "${words.stdout}",
        "as": "word",
        "parallel": True,
        "max_concurrent": 4,
    }
    assert shout["retry"] == {"max": 2, "wait": 0}
    assert set(shout["params"]) == {"command"}
    # A longer fence keeps a ``` line inside the block as text.
    assert shout["params"]["command"].splitlines()[1] == "# ```"
    assert count["params"]["inputs"] == {"shouted": "${shout.results}"}  # a ```yaml block is YAML
    assert settings["params"]["letter"].splitlines()[1].startswith("## this line")
    assert ir["outputs"]["summary"] == {"description": "The report line.", "source": "${report.text}"}
    # Document order, then '- next:' and '- on-error:'.
    assert ir["edges"] == [
        {"from": "words", "to": "settings"},
        {"from": "settings", "to": "shout"},
        {"from": "shout", "to": "count"},
        {"from": "count", "to": "report", "action": "default"},
        {"from": "count", "to": "recover", "action": "error"},
    ]
    assert recover["params"] == {"message": "counting failed"} and report["id"] == "report"


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("echo a: b # not a comment", "echo a: b # not a comment"),
        ('"tab\\there \\"quoted\\""', 'tab\there "quoted"'),
        ("'it''s'", "it's"),
        ("", None),
        ("~", None),
        ("yes", True),
        ("Off", False),
        ("42", 42),
        ("-0.5", -0.5),
        ("1.2.3", "1.2.3"),
        ("1e5", "1e5"),
        ("007", 7),
        ("2024-01-31", "2024-01-31"),
        ("[a, ${x.y}, 3]", ["a", "${x.y}", 3]),
        ("{k: ${x}, n: [1, 2]}", {"k": "${x}", "n": [1, 2]}),
        ("https://example.com/a?b=c", "https://example.com/a?b=c"),
    ],
)
def test_a_one_line_bullet_takes_yaml_scalars_and_otherwise_the_text_as_written(written, value):
    text = md("# T", "", "## Steps", "", *step("a", "- type: echo", f"- v: {written}".rstrip()))
    doc = parse_markdown(text)
    assert doc.problems == []
    assert doc.ir["nodes"][0]["params"]["v"] == value


def test_multi_line_bullets_and_block_scalars_are_yaml():
    text = md(
        "# T",
        "",
        "## Steps",
        "",
        *step(
            "a",
            "- type: echo",
            "- headers:",
            "    Accept: application/json",
            "    X-Token: ${token}",
            "- body: |",
            "    first line",
            "",
            "    ### not a heading: still the block scalar",
            "- after: 1",
        ),
    )
    doc = parse_markdown(text)
    assert doc.problems == []
    params = doc.ir["nodes"][0]["params"]
    assert params["headers"] == {"Accept": "application/json", "X-Token": "${token}"}
    # as in pflow: the item ends the YAML text, so the scalar keeps no final newline
    assert params["body"] == "first line\n\n### not a heading: still the block scalar"
    assert params["after"] == 1


def test_edges_come_from_document_order_next_and_on_error():
    text = md(
        "# T",
        "",
        "## Steps",
        "",
        *step("a", "- type: echo"),
        *step("b", "- type: echo", "- next: d", "- on-error: c"),
        *step("c", "- type: echo", "- next: end"),
        *step("d", "- type: echo"),
    )
    doc = parse_markdown(text)
    assert doc.problems == []
    assert doc.ir["edges"] == [
        {"from": "a", "to": "b"},
        {"from": "b", "to": "d", "action": "default"},
        {"from": "b", "to": "c", "action": "error"},
    ]
    single = md("# T", "", "## Steps", "", *step("only", "- type: echo"))
    assert parse_markdown(single).ir["edges"] == []
    choice = md(
        "# T",
        "",
        "## Steps",
        "",
        *step("pick", "- type: echo", "- next: yes-path, no-path"),
        *step("yes-path", "- type: echo", "- next: end"),
        *step("no-path", "- type: echo", "- next: end"),
    )
    doc = parse_markdown(choice)
    assert doc.problems == []
    assert doc.ir["edges"] == [
        {"from": "pick", "to": "yes-path", "action": "yes-path"},
        {"from": "pick", "to": "no-path", "action": "no-path"},
        {"from": "pick", "to": "yes-path", "action": "default"},
    ]


def test_a_branch_target_must_say_where_it_goes_as_pflow_requires():
    text = md(
        "# T",
        "",
        "## Steps",
        "",
        *step("a", "- type: echo", "- on-error: c"),
        *step("b", "- type: echo"),
        *step("c", "- type: echo"),
        *step("d", "- type: echo"),
    )
    found = problems_of(text)
    # b falls through into the error route c; c falls through into d.
    assert [line for line, _ in found] == [line_of(text, "### b"), line_of(text, "### c")]
    assert "falls through to 'c'" in found[0][1]
    assert "branch target of 'a' (on-error)" in found[1][1]


def test_routing_from_python_code_is_refused_not_ignored():
    text = md(
        "# T",
        "",
        "## Steps",
        "",
        *step("pick", "- type: code", "", "```python code", "x = 1", 'next = "b"', "```"),
        *step("b", "- type: echo", "- next: end"),
    )
    [(line, message)] = problems_of(text)
    assert line == line_of(text, 'next = "b"')
    assert "not supported by plait yet" in message


def test_a_cache_section_is_refused_and_a_near_miss_section_warned_about():
    text = md(
        "# T", "", "## Step", "", *step("x", "- type: echo"), "## Steps", "", *step("a", "- type: echo"),
        "## Cache", "", "```cache", "${a.text}", "```",
    )  # fmt: skip
    doc = parse_markdown(text)
    assert [(p.line, "not supported" in p.message) for p in doc.problems] == [(line_of(text, "## Cache"), True)]
    assert any("'## Step'" in w and "'## Steps'" in w for w in doc.warnings)
    assert [n["id"] for n in doc.ir["nodes"]] == ["a"]  # entries of an unknown section are not steps


def test_markdown_warnings_reach_the_compiled_workflow(tmp_path):
    text = md("# T", "", "## Output", "", "### o", "", "Out.", "", "## Steps", "", "stray", "", *step("a", "- type: echo"))
    path = tmp_path / "warned.pflow.md"
    path.write_text(text)
    warnings = load_and_compile(path, Registry()).warnings
    assert any("'## Output'" in w and "'## Outputs'" in w for w in warnings)
    assert any(w.startswith(f"line {line_of(text, 'stray')}:") and "## Steps" in w for w in warnings)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "needle", "fragment"),
    [
        (["### Fetch", "", "Prose.", "", "- type: echo"], "### Fetch", "invalid id 'Fetch'"),
        (["### a", "", "- type: echo"], "### a", "'a' has no description"),
        (step("a", "- type: echo", "", "```", "x", "```"), "```", "without an info string"),
        (step("a", "- type: shell", "- command: x", "", "```shell command", "y", "```"), "```shell", "given twice"),
        (step("a", "- type: shell", "", "```shell command", "x", "```", "```bash command", "y", "```"), "```bash", "second code block"),
        (step("a", "- type: shell", "", "```shell command", "x"), "```shell", "never closed"),
        (step("a", "- type: echo", "- v: [1, 2"), "- v:", "malformed YAML"),
        (step("a", "- type: echo", "- v:", "    k: [1", "    j: 2"), "j: 2", "starts at line 11"),
        (step("a", "- type: echo", "- v: 'open"), "- v:", "never closes"),
        (step("a", "- type: echo", "- just text"), "- just text", "not a 'key: value'"),
        (step("a", "- command: x"), "### a", "has no type"),
        (step("a", "- type: echo", "", "```yaml batch", "items: [1]", "as: {x", "```"), "as: {x", "malformed YAML"),
        (step("a", "- type: code", "", "```python code", "x = 1", "", "def f(:", "```"), "def f(:", "Python syntax error"),
        (step("end", "- type: echo"), "### end", "'end' cannot be a step id"),
        (["## Steps", "", *step("b", "- type: echo")], "## Steps", "a second '## Steps' section"),
        (step("a", "- type: echo", "- next: end"), "- next: end", "only 'a' would run"),
    ],
)  # fmt: skip
def test_each_markdown_error_names_its_line_and_a_fix(body, needle, fragment):
    text = md("# T", "", "## Steps", "", *body, *step("z", "- type: echo"))
    doc = parse_markdown(text)
    assert len(doc.problems) == 1, doc.problems
    [p] = doc.problems
    assert fragment in p.message
    assert p.line == line_of(text, needle, start=4)
    assert p.hint


def test_a_python_syntax_error_points_at_the_offending_line_and_column():
    text = md("# T", "", "## Steps", "", *step("a", "- type: code", "", "```python code", "total = 1", "if total >", "    pass", "```"))
    [p] = parse_markdown(text).problems
    assert (p.line, p.column) == (line_of(text, "if total >"), 11)


def test_missing_steps_and_empty_steps_are_errors():
    no_steps = md("# T", "", "## Inputs", "", "### x", "", "An input.", "", "- type: string")
    [(line, message)] = problems_of(no_steps)
    assert "no '## Steps' section" in message and line == len(no_steps.splitlines())
    empty = md("# T", "", "## Steps", "", "## Outputs")
    [(line, message)] = problems_of(empty)
    assert "has no steps" in message and line == 3
    orphan = md("# T", "", "## Steps", "", "- type: shell")
    [(line, message)] = problems_of(orphan)
    assert "no ### entries" in message and line == 5


def test_malformed_frontmatter_is_reported_at_its_line():
    text = md("---", "a: 1", "b: [", "---", "# T", "", "## Steps", "", *step("a", "- type: echo"))
    [(line, message)] = problems_of(text)
    assert "frontmatter" in message and line in (3, 4)


def test_validate_reports_every_error_of_the_file_at_once(plait, tmp_path):
    shutil.copy(FIXTURES / "many-errors.pflow.md", tmp_path)
    text = (FIXTURES / "many-errors.pflow.md").read_text()
    r = plait("validate", "many-errors.pflow.md", "-o", "json")
    assert r.code == 2, r
    errors = r.json["errors"]
    got = [(e["line"], e["message"]) for e in errors]
    fetch_2 = line_of(text, "### fetch", start=line_of(text, "### fetch"))
    expected = [
        (line_of(text, "### Bad_Name"), "invalid id"),
        (line_of(text, "### fetch"), "has no description"),
        (fetch_2, "duplicate id 'fetch'"),
        (line_of(text, "```", start=line_of(text, "### bare")), "without an info string"),
        (line_of(text, "```shell command"), "given twice"),
        (line_of(text, "- tags: [one, two"), "malformed YAML"),
        (line_of(text, "if total >"), "Python syntax error"),
        (line_of(text, "as: [unclosed"), "malformed YAML"),
        (line_of(text, "### untyped"), "has no type"),
        (line_of(text, "```shell command", start=line_of(text, "### tail")), "never closed"),
    ]
    assert len(got) == len(expected), got
    for (line, message), (want_line, fragment) in zip(got, expected, strict=True):
        assert line == want_line and fragment in message, (line, message)
    assert all(e["file"] == "many-errors.pflow.md" and e["hint"] for e in errors)
    r = plait("validate", "many-errors.pflow.md")
    assert r.code == 2 and r.stderr.count("✗") == len(expected) and "line 64, column 11" in r.stderr


def test_problems_found_on_the_ir_point_at_the_markdown_line(tmp_path):
    text = md(
        "# T",
        "",
        "## Steps",
        "",
        *step("list", "- type: shel"),
        *step("each", "- type: shell", "- timout: 5", "", "```yaml batch", "items: [1, 2]", "as: list", "```",
              "```shell command", "echo start", "echo ${nowhere.stdout}", "```"),
        *step("last", "- type: write-file"),
        "## Outputs", "", "### out", "", "The output.", "", "- source: ${lst.stdout}",
    )  # fmt: skip
    path = tmp_path / "located.pflow.md"
    path.write_text(text)
    with pytest.raises(WorkflowInvalid) as caught:
        load_and_compile(path, Registry())
    where = {p.path: (p.line, p.column) for p in caught.value.problems}
    assert where["nodes[0].type"] == (line_of(text, "- type: shel"), 9)
    assert where["nodes[1].params.timout"][0] == line_of(text, "- timout")
    assert where["nodes[1].batch.as"][0] == line_of(text, "as: list")
    # A template inside a code block: the line of the template, not of the fence.
    assert where["nodes[1].params.command"] == (line_of(text, "${nowhere.stdout}"), 6)
    assert where["nodes[2].params"][0] == line_of(text, "### last")  # missing required params
    assert where["outputs.out.source"] == (line_of(text, "${lst.stdout}"), 11)
    lines = [p.line for p in caught.value.problems]
    assert lines == sorted(lines)  # in the order the file reads


def test_markdown_errors_and_validation_errors_come_in_one_report(tmp_path):
    text = md(
        "# T",
        "",
        "## Steps",
        "",
        *step("a", "- type: shell", "", "```", "echo no tag", "```"),
        *step("b", "- type: nosuchtype"),
    )
    path = tmp_path / "mixed.pflow.md"
    path.write_text(text)
    with pytest.raises(WorkflowInvalid) as caught:
        load_and_compile(path, Registry())
    got = [(p.line, p.message) for p in caught.value.problems]
    # Node a's missing 'command' only repeats its markdown error, so it is not reported.
    assert [line for line, _ in got] == [line_of(text, "```"), line_of(text, "- type: nosuchtype")]
    assert "unknown node type 'nosuchtype'" in got[1][1]
    with pytest.raises(WorkflowInvalid):
        load_file(path)  # the plain loader raises on the markdown errors alone


def test_a_plain_md_file_is_refused_with_the_name_pflow_uses(tmp_path):
    path = tmp_path / "flow.md"
    path.write_text(md("# T", "", "## Steps", "", *step("a", "- type: echo")))
    with pytest.raises(WorkflowInvalid) as caught:
        load_file(path)
    assert ".pflow.md" in caught.value.problems[0].hint


# --------------------------------------------------------------------------- running


def test_a_pflow_md_workflow_runs_end_to_end_with_a_markdown_sub_workflow(plait, tmp_path):
    for name in ("word-report.pflow.md", "reports.pflow.md"):
        shutil.copy(FIXTURES / name, tmp_path)
    r = plait("run", "word-report.pflow.md", "-o", "json", input="one two three")
    assert r.code == 0, r
    assert r.json["outputs"] == {"line": "ONE! TWO! THREE!", "total": 3}
    (tmp_path / "sub").mkdir()
    # The shorthand, from another folder: the child path is relative to the parent file.
    r = plait("../reports.pflow.md", 'texts=["a b", "c d e", "f"]', cwd=tmp_path / "sub")
    assert r.code == 0, r
    assert json.loads(r.stdout) == ["2: A? B?", "3: C? D? E?", "1: F?"]


def test_an_invalid_markdown_child_fails_the_run_with_its_line(plait, tmp_path):
    (tmp_path / "child.pflow.md").write_text(md("# C", "", "## Steps", "", "### Bad", "", "x", "", "- type: echo"))
    parent = {"nodes": [{"id": "run", "type": "workflow", "params": {"workflow": "child.pflow.md"}}]}
    (tmp_path / "parent.json").write_text(json.dumps(parent))
    r = plait("run", "parent.json")
    assert r.code != 0
    assert "child.pflow.md" in r.stderr and "Bad" in r.stderr


# --------------------------------------------------------------------------- converting


def test_convert_to_json_writes_the_ir_the_loader_reads(plait, tmp_path):
    shutil.copy(FIXTURES / "every-construct.pflow.md", tmp_path)
    r = plait("convert", "every-construct.pflow.md", "--to", "json")
    assert r.code == 0, r
    assert r.json == json.loads((FIXTURES / "every-construct.ir.json").read_text())
    assert "title 'Every construct'" in r.stderr and "frontmatter" in r.stderr
    r = plait("convert", "every-construct.pflow.md", "--to", "md", "-o", "again.pflow.md")
    assert r.code == 0, r
    again = parse_markdown((tmp_path / "again.pflow.md").read_text())
    assert again.ir == json.loads((FIXTURES / "every-construct.ir.json").read_text())
    assert again.title == "Every construct" and again.frontmatter == {"created_by": "the plait test suite", "version": 3}
    r = plait("convert", "again.pflow.md", "--to", "md", "-o", "again.pflow.md")
    assert r.code == 2 and "the file being converted" in r.stderr


@pytest.mark.parametrize("name", ["code_transform.json", "nested.json", "hello.json"])
def test_linear_json_workflows_survive_the_round_trip_through_markdown(name):
    raw = json.loads((EXAMPLES / name).read_text())
    text, notes = to_markdown(raw, title="Example")
    back = parse_markdown(text)
    assert back.problems == []
    expected = {k: v for k, v in raw.items() if k != "ir_version"}  # 0.1.0 is the default
    expected.setdefault("edges", [])
    if not raw.get("edges") and len(raw["nodes"]) > 1:
        pairs = zip(raw["nodes"], raw["nodes"][1:], strict=False)
        expected["edges"] = [{"from": a["id"], "to": b["id"]} for a, b in pairs]
    assert back.ir == expected
    assert notes == []


def test_tricky_values_survive_the_round_trip():
    values = {
        "colon": "a: b # c",
        "looks_true": "true",
        "looks_int": "123",
        "empty": "",
        "padded": "  x  ",
        "quotes": "'single' and \"double\"",
        "backslash": "C:\\path\\n",
        "unicode": "naïve — ✓",
        "separator": "a\u2028b",
        "fence_inside": "before\n```\nafter\n",
        "multi": "line 1\n\n  line 3\n",
        "carriage": "a\r\nb",
        "starts_bracket": "[not a list",
        "pipe": "|",
        "float": 1e16,
        "small": 0.1,
        "none": None,
        "nested": {"list": [1, "two", {"three": "${x.y}"}], "empty": {}, "blank": [], "# key": "v"},
        "deep_text": ["# looks like a heading", "```"],
    }
    raw = {
        "inputs": {"x": {"description": "An input.", "type": "string", "default": "multi\nline"}},
        "nodes": [
            {"id": "a", "type": "echo", "purpose": "Everything.", "params": dict(values)},
            {"id": "b", "type": "shell", "purpose": "A command.", "params": {"command": "echo ${a.colon}\n"}},
        ],
        "edges": [{"from": "a", "to": "b"}],
    }
    text, notes = to_markdown(raw, title="Tricky")
    back = parse_markdown(text)
    assert back.problems == []
    assert back.ir == raw
    assert notes == []

    prose = {"nodes": [{"id": "a", "type": "echo", "purpose": "One.\n\n- not a bullet\n## nor a heading"}]}
    text, notes = to_markdown(prose)
    assert parse_markdown(text).ir["nodes"][0]["purpose"] == "One.\n\\- not a bullet\n\\## nor a heading"
    assert len(notes) == 1 and "nodes[0].purpose" in notes[0]


def test_branches_that_markdown_can_say_are_written_and_others_refused():
    def node(i: str) -> dict[str, str]:
        return {"id": i, "type": "echo", "purpose": f"Step {i}."}

    branching = {
        "nodes": [node("a"), node("b"), node("c"), node("d")],
        "edges": [
            {"from": "a", "to": "b"},
            {"from": "b", "to": "d"},
            {"from": "b", "to": "c", "action": "error"},
            {"from": "c", "to": "d"},
        ],
    }
    text, _ = to_markdown(branching, title="Branches")
    back = parse_markdown(text)
    assert back.problems == []
    as_set = {(e["from"], e["to"], e.get("action", "default")) for e in back.ir["edges"]}
    assert as_set == {(e["from"], e["to"], e.get("action", "default")) for e in branching["edges"]}

    fan_out = {"nodes": [node("a"), node("b"), node("c")], "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}]}
    with pytest.raises(WorkflowInvalid) as caught:
        to_markdown(fan_out)
    assert "fans out" in caught.value.problems[0].message
    with pytest.raises(WorkflowInvalid) as caught:
        to_markdown({"nodes": [node("a"), node("b")], "start_node": "b"})
    assert caught.value.problems[0].path == "start_node"
    with pytest.raises(WorkflowInvalid) as caught:
        to_markdown({"nodes": [{"id": "Upper", "type": "echo"}]})
    assert "not an id" in caught.value.problems[0].message


def test_convert_from_yaml_and_the_notes_on_what_changed_in_form(plait, tmp_path):
    (tmp_path / "release-notes.yaml").write_text(
        "ir_version: 1.0.0\nnodes:\n  - id: hello\n    type: echo\n    params: {text: hi}\n"
    )
    r = plait("convert", "release-notes.yaml", "--to", "md", "-o", "out.pflow.md")
    assert r.code == 0, r
    written = (tmp_path / "out.pflow.md").read_text()
    assert written.startswith("# Release notes\n")
    assert "placeholder" in r.stderr and "'ir_version'" in r.stderr
    r = plait("convert", "release-notes.yaml", "--to", "json")
    assert r.code == 0 and r.json["nodes"][0]["params"] == {"text": "hi"}
    r = plait("out.pflow.md", "-o", "json")
    assert r.code == 0 and r.json["outputs"] == {"text": "hi"}
    (tmp_path / "fan.json").write_text(
        json.dumps(
            {
                "nodes": [{"id": "a", "type": "echo"}, {"id": "b", "type": "echo"}, {"id": "c", "type": "echo"}],
                "edges": [{"from": "a", "to": "b"}, {"from": "a", "to": "c"}],
            }
        )
    )
    r = plait("convert", "fan.json", "--to", "md")
    assert r.code == 2 and "fans out" in r.stderr and r.stdout == ""
