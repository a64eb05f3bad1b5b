"""The workflow node: a workflow that runs another one, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write(path: Path, content: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2))
    return str(path)


GREETER = {
    "description": "Greets someone",
    "inputs": {"name": {"type": "string"}, "punct": {"type": "string", "default": "!"}},
    "outputs": {
        "greeting": {"source": "${hi.stdout}"},
        "shout": {"source": "${loud.stdout}"},
    },
    "nodes": [
        {
            "id": "hi",
            "type": "shell",
            "params": {"command": "printf 'hello %s%s' '${name}' '${punct}'"},
        },
        {
            "id": "loud",
            "type": "shell",
            "params": {"command": "printf '%s' '${hi.stdout}' | tr a-z A-Z"},
        },
    ],
}


def test_child_file_is_found_next_to_the_parent_from_any_working_directory(tmp_path, plait):
    write(tmp_path / "flows" / "lib" / "greeter.json", GREETER)
    parent = write(
        tmp_path / "flows" / "main.json",
        {
            "inputs": {"who": {"type": "string"}},
            "nodes": [
                {
                    "id": "greet",
                    "type": "workflow",
                    "params": {"workflow": "lib/greeter.json", "inputs": {"name": "${who}"}},
                },
                {
                    "id": "report",
                    "type": "shell",
                    "params": {"command": "echo '${greet.greeting} / ${greet.shout}'"},
                },
            ],
        },
    )
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    r = plait("run", parent, "who=ada", "-q", cwd=elsewhere)
    assert r.code == 0, r
    assert r.stdout == "hello ada! / HELLO ADA!\n"


def test_outputs_are_the_childs_declared_outputs(workflow, plait):
    workflow(GREETER, "greeter.json")
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "greet",
                    "type": "workflow",
                    "params": {"workflow": "greeter.json", "inputs": {"name": "bob", "punct": "?"}},
                }
            ]
        }
    )
    r = plait("run", parent, "-o", "json", "-q")
    assert r.code == 0, r
    # exactly the declared outputs: nothing of the child's nodes leaks out
    assert r.json["outputs"] == {"greeting": "hello bob?", "shout": "HELLO BOB?"}


def test_inputs_keep_their_types_and_defaults_apply(workflow, plait):
    workflow(
        {
            "inputs": {
                "numbers": {"type": "array"},
                "meta": {"type": "object"},
                "scale": {"type": "integer", "default": 10},
            },
            "outputs": {"echoed": {"source": "${e}"}},
            "nodes": [
                {
                    "id": "e",
                    "type": "echo",
                    "params": {
                        "first": "${numbers[0]}",
                        "owner": "${meta.owner}",
                        "scale": "${scale}",
                    },
                }
            ],
        },
        "child.json",
    )
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "src",
                    "type": "echo",
                    "params": {"list": [3, 1, 2], "meta": {"owner": "ops"}},
                },
                {
                    "id": "sub",
                    "type": "workflow",
                    "params": {
                        "workflow": "child.json",
                        "inputs": {"numbers": "${src.list}", "meta": "${src.meta}"},
                    },
                },
            ],
            "outputs": {"got": {"source": "${sub.echoed}"}},
        }
    )
    r = plait("run", parent, "-q")
    assert r.code == 0, r
    assert json.loads(r.stdout) == {"first": 3, "owner": "ops", "scale": 10}


def test_inline_workflow_ir_runs_with_inputs_from_the_parent(workflow, plait):
    parent = workflow(
        {
            "inputs": {"city": {"type": "string"}},
            "nodes": [
                {
                    "id": "sub",
                    "type": "workflow",
                    "params": {
                        "workflow_ir": {
                            "inputs": {"place": {"type": "string"}},
                            "outputs": {"line": {"source": "${fmt.stdout}"}},
                            "nodes": [
                                {
                                    "id": "fmt",
                                    "type": "shell",
                                    "params": {"command": "printf 'weather in %s' '${place}'"},
                                }
                            ],
                        },
                        "inputs": {"place": "${city}"},
                    },
                },
                {"id": "out", "type": "echo", "params": {"text": "${sub.line}"}},
            ],
            "outputs": {"text": {"source": "${out.text}"}},
        }
    )
    r = plait("run", parent, "city=Oslo", "-q")
    assert r.code == 0, r
    assert r.stdout == "weather in Oslo\n"


def test_inline_workflow_ir_in_a_parallel_batch_sees_each_items_inputs(workflow, plait):
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "each",
                    "type": "workflow",
                    "batch": {"items": list(range(12)), "as": "n", "parallel": True},
                    "params": {
                        "workflow_ir": {
                            "inputs": {"n": {"type": "integer"}},
                            "outputs": {"square": {"source": "${sq.result}"}},
                            "nodes": [
                                {
                                    "id": "sq",
                                    "type": "code",
                                    "params": {"code": "result = n * n", "inputs": {"n": "${n}"}},
                                }
                            ],
                        },
                        "inputs": {"n": "${n}"},
                    },
                }
            ],
            "outputs": {"results": {"source": "${each.results}"}},
        }
    )
    r = plait("run", parent, "-q")
    assert r.code == 0, r
    assert [x["square"] for x in json.loads(r.stdout)] == [n * n for n in range(12)]


def test_a_child_without_declared_outputs_gives_its_last_nodes_outputs(workflow, plait):
    workflow(
        {"nodes": [{"id": "last", "type": "echo", "params": {"a": 1, "b": [2, 3]}}]},
        "child.json",
    )
    parent = workflow(
        {
            "nodes": [
                {"id": "sub", "type": "workflow", "params": {"workflow": "child.json"}},
                {"id": "use", "type": "echo", "params": {"b1": "${sub.b[1]}"}},
            ]
        }
    )
    r = plait("run", parent, "-q")
    assert r.code == 0, r
    assert json.loads(r.stdout) == {"b1": 3}


def test_giving_both_or_neither_of_workflow_and_workflow_ir_is_a_clear_error(workflow, plait):
    workflow(GREETER, "greeter.json")
    both = workflow(
        {
            "nodes": [
                {
                    "id": "sub",
                    "type": "workflow",
                    "params": {
                        "workflow": "greeter.json",
                        "workflow_ir": {"nodes": [{"id": "x", "type": "echo"}]},
                    },
                }
            ]
        }
    )
    r = plait("run", both, "-q")
    assert r.code == 2, r
    assert "exactly one of 'workflow'" in r.stderr and "not both" in r.stderr

    neither = workflow({"nodes": [{"id": "sub", "type": "workflow", "params": {"inputs": {}}}]})
    r = plait("run", neither, "-q")
    assert r.code == 2, r
    assert "exactly one of 'workflow'" in r.stderr


def test_a_failing_child_fails_the_parent_naming_the_child_and_its_node(workflow, plait):
    workflow(
        {
            "nodes": [
                {"id": "fine", "type": "shell", "params": {"command": "true"}},
                {
                    "id": "breaks",
                    "type": "shell",
                    "params": {"command": "echo disk full >&2; exit 3"},
                },
            ]
        },
        "child.json",
    )
    parent = workflow(
        {
            "nodes": [
                {"id": "sub", "type": "workflow", "params": {"workflow": "child.json"}},
                {"id": "after", "type": "shell", "params": {"command": "echo should not run"}},
            ]
        }
    )
    r = plait("run", parent, "-q")
    assert r.code == 1, r
    assert "node 'sub' failed" in r.stderr
    assert "sub-workflow child.json failed at node 'breaks'" in r.stderr
    assert "disk full" in r.stderr or "exit" in r.stderr
    assert "should not run" not in r.stdout


def test_an_error_edge_handles_a_failing_child(workflow, plait):
    workflow(
        {"nodes": [{"id": "boom", "type": "shell", "params": {"command": "exit 7"}}]},
        "child.json",
    )
    parent = workflow(
        {
            "nodes": [
                {"id": "sub", "type": "workflow", "params": {"workflow": "child.json"}},
                {"id": "ok", "type": "shell", "params": {"command": "echo fine"}},
                {
                    "id": "recover",
                    "type": "shell",
                    "params": {"command": "echo 'recovered: ${sub.error}'"},
                },
            ],
            "edges": [
                {"from": "sub", "to": "ok"},
                {"from": "sub", "to": "recover", "action": "error"},
            ],
        }
    )
    r = plait("run", parent, "-q")
    assert r.code == 0, r
    assert r.stdout.startswith("recovered: sub-workflow child.json failed at node 'boom'")


def test_a_missing_child_file_is_named(workflow, plait):
    parent = workflow(
        {"nodes": [{"id": "sub", "type": "workflow", "params": {"workflow": "nope/missing.json"}}]}
    )
    r = plait("run", parent, "-q")
    assert r.code == 1, r
    assert "sub-workflow nope/missing.json is invalid" in r.stderr
    assert "not found" in r.stderr and "missing.json" in r.stderr


def test_an_invalid_child_names_its_problems(workflow, plait):
    workflow(
        {
            "nodes": [
                {"id": "a", "type": "shel", "params": {"command": "true"}},
                {"id": "b", "type": "echo", "params": {"v": "${nowhere.x}"}},
            ]
        },
        "child.json",
    )
    parent = workflow(
        {"nodes": [{"id": "sub", "type": "workflow", "params": {"workflow": "child.json"}}]}
    )
    r = plait("run", parent, "-q")
    assert r.code == 2, r  # found when the parent is validated, before anything runs
    assert "nodes[0].params.workflow: sub-workflow child.json is invalid" in r.stderr
    assert "unknown node type 'shel'" in r.stderr
    assert "nodes[0].type" in r.stderr


def test_nesting_deeper_than_the_limit_is_refused(tmp_path, plait):
    # level0 -> level1 -> ... -> level12: twelve levels of sub-workflows, no cycle
    for i in range(13):
        if i == 12:
            nodes = [{"id": "leaf", "type": "echo", "params": {"v": "bottom"}}]
        else:
            nodes = [
                {"id": f"down{i}", "type": "workflow", "params": {"workflow": f"level{i + 1}.json"}}
            ]
        write(tmp_path / f"level{i}.json", {"nodes": nodes})
    r = plait("run", str(tmp_path / "level0.json"), "-q")
    assert r.code == 1, r
    assert "sub-workflows nested more than 10 deep" in r.stderr
    assert "level10.json cannot run level11.json" in r.stderr
    assert "sub-workflow level1.json failed at node 'down1'" in r.stderr

    # ten levels is fine
    r = plait("run", str(tmp_path / "level2.json"), "-q")
    assert r.code == 0, r
    assert "bottom" in r.stdout


def test_a_cycle_between_workflows_is_reported_with_its_chain(workflow, plait):
    a = workflow(
        {"nodes": [{"id": "to_b", "type": "workflow", "params": {"workflow": "b.json"}}]}, "a.json"
    )
    workflow(
        {"nodes": [{"id": "to_a", "type": "workflow", "params": {"workflow": "a.json"}}]}, "b.json"
    )
    r = plait("run", a, "-q")
    assert r.code == 2, r  # found by validation: the paths are written out
    assert "sub-workflow b.json is invalid: nodes[0].params.workflow: sub-workflow cycle: a.json -> b.json -> a.json" in r.stderr


def test_a_workflow_calling_itself_is_a_cycle(workflow, plait):
    me = workflow(
        {"nodes": [{"id": "again", "type": "workflow", "params": {"workflow": "me.json"}}]},
        "me.json",
    )
    r = plait("run", me, "-q")
    assert r.code == 2, r
    assert "nodes[0].params.workflow: sub-workflow cycle: me.json -> me.json" in r.stderr
    # a path given by a template is known only at run time: the cycle is found there
    templated = workflow(
        {
            "inputs": {"child": {"type": "string", "default": "again.json"}},
            "nodes": [{"id": "again", "type": "workflow", "params": {"workflow": "${child}"}}],
        },
        "again.json",
    )
    r = plait("run", templated, "-q")
    assert r.code == 1, r
    assert "sub-workflow cycle: again.json -> again.json" in r.stderr


def test_a_child_named_by_its_path_is_checked_before_anything_runs(workflow, plait, tmp_path):
    workflow(
        {
            "inputs": {"name": {"type": "string"}, "greeting": {"type": "string", "default": "hi"}},
            "nodes": [{"id": "g", "type": "shell", "params": {"command": "printf '%s %s' ${greeting} ${name}"}}],
            "outputs": {"said": {"source": "${g.stdout}"}},
        },
        "greet.json",
    )
    marker = tmp_path / "ran"
    first = {"id": "first", "type": "write-file", "params": {"file_path": str(marker), "content": "x"}}

    def parent(params, name="parent.json"):
        return workflow({"nodes": [first, {"id": "sub", "type": "workflow", "params": params}]}, name)

    # a misspelt input is one problem (its hint names the input it is taken for)
    r = plait("run", parent({"workflow": "greet.json", "inputs": {"nam": "ada"}}), "-q")
    assert r.code == 2, r
    assert "nodes[1].params.inputs.nam: sub-workflow greet.json has no input 'nam'" in r.stderr
    assert "did you mean 'name'? (a required input, missing)" in r.stderr
    assert "1 problem" in r.stderr
    # a required input not given, through pflow's param_mapping too
    r = plait("run", parent({"workflow_ref": "greet.json", "param_mapping": {}}), "-q")
    assert r.code == 2 and "sub-workflow greet.json needs input name" in r.stderr, r
    assert "add 'name' to the 'param_mapping' of node 'sub'" in r.stderr
    assert not marker.exists()  # refused whole: nothing ran
    # a child not there yet may be written by an earlier node: a warning, and the run goes on
    r = plait("run", parent({"workflow": "later.json"}), "-q")
    assert r.code == 1, r
    assert "warning: node 'sub': sub-workflow later.json is not there yet" in r.stderr
    assert marker.exists()
    # ~ is the home folder, as for pflow's saved workflows
    home = tmp_path / "home"
    (home / ".pflow" / "workflows").mkdir(parents=True)
    (home / ".pflow" / "workflows" / "greet.json").write_text((tmp_path / "greet.json").read_text())
    r = plait("run", parent({"workflow": "~/.pflow/workflows/greet.json", "inputs": {"name": "ada"}}), "-q",
              env={"HOME": str(home)})
    assert r.code == 0, r
    assert json.loads(r.stdout) == {"said": "hi ada"}


def test_the_child_reads_the_environment(workflow, plait):
    workflow(
        {
            "outputs": {"v": {"source": "${e.v}"}},
            "nodes": [
                {"id": "e", "type": "echo", "params": {"v": "region=${env.PLAIT_TEST_REGION}"}}
            ],
        },
        "child.json",
    )
    parent = workflow(
        {"nodes": [{"id": "sub", "type": "workflow", "params": {"workflow": "child.json"}}]}
    )
    r = plait("run", parent, "-q", env={"PLAIT_TEST_REGION": "eu-north"})
    assert r.code == 0, r
    assert json.loads(r.stdout) == {"v": "region=eu-north"}


def test_a_parallel_batch_of_children_with_their_own_parallel_batches_keeps_order(
    tmp_path, workflow, plait
):
    # The child splits its word into letters (a list derived from the parent's
    # item) and handles each in a parallel batch of shell commands; the earlier
    # letters sleep longer, so they finish last.
    split = "result = [{'ch': c, 'delay': 0.01 * (len(word) - i)} for i, c in enumerate(word)]"
    workflow(
        {
            "inputs": {"word": {"type": "string"}, "n": {"type": "integer"}},
            "outputs": {
                "letters": {"source": "${letters.results}"},
                "count": {"source": "${letters.count}"},
            },
            "nodes": [
                {
                    "id": "split",
                    "type": "code",
                    "params": {"code": split, "inputs": {"word": "${word}"}},
                },
                {
                    "id": "letters",
                    "type": "shell",
                    "batch": {
                        "items": "${split.result}",
                        "as": "x",
                        "parallel": True,
                        "max_concurrent": 4,
                    },
                    "params": {
                        "command": "sleep ${x.delay}; printf '%s:%s:%s' '${n}' '${__index__}' '${x.ch}'"
                    },
                },
            ],
        },
        "letters.json",
    )
    # earlier words are longer, so they also take longer than later ones
    words = ["abcdefg"[: 7 - i % 5] + f"{i:02d}" for i in range(40)]
    items = [{"word": w, "n": i} for i, w in enumerate(words)]
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "each",
                    "type": "workflow",
                    "batch": {"items": items, "parallel": True, "max_concurrent": 8},
                    "params": {
                        "workflow": "letters.json",
                        "inputs": {"word": "${item.word}", "n": "${item.n}"},
                    },
                },
                {
                    "id": "third",
                    "type": "echo",
                    "params": {"letters": "${each.results[3].letters}"},
                },
            ],
            "outputs": {"each": {"source": "${each}"}, "third": {"source": "${third.letters}"}},
        }
    )
    r = plait("run", parent, "-o", "json", "-q")
    assert r.code == 0, r
    each = r.json["outputs"]["each"]
    assert each["count"] == 40 and each["error_count"] == 0
    assert [res["index"] for res in each["results"]] == list(range(40))
    for i, res in enumerate(each["results"]):
        assert res["item"] == items[i]
        assert res["count"] == len(words[i])
        got = [x["stdout"] for x in res["letters"]]
        assert got == [f"{i}:{j}:{c}" for j, c in enumerate(words[i])], (i, got)
        assert [x["index"] for x in res["letters"]] == list(range(len(words[i])))
    # a downstream node templates into the nested results
    third = r.json["outputs"]["third"]
    assert [x["stdout"] for x in third] == [f"3:{j}:{c}" for j, c in enumerate(words[3])]


def test_a_failing_item_in_a_batch_of_children_is_reported_with_its_index(workflow, plait):
    workflow(
        {
            "inputs": {"n": {"type": "integer"}},
            "outputs": {"v": {"source": "${check.stdout}"}},
            "nodes": [
                {
                    "id": "check",
                    "type": "shell",
                    "params": {
                        "command": "test '${n}' != 5 || { echo five is bad >&2; exit 1; }; printf ok"
                    },
                }
            ],
        },
        "child.json",
    )
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "each",
                    "type": "workflow",
                    "batch": {
                        "items": list(range(8)),
                        "parallel": True,
                        "error_handling": "continue",
                    },
                    "params": {"workflow": "child.json", "inputs": {"n": "${item}"}},
                }
            ]
        }
    )
    r = plait("run", parent, "-o", "json", "-q")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert out["error_count"] == 1
    assert out["errors"][0]["index"] == 5
    assert "sub-workflow child.json failed at node 'check'" in out["errors"][0]["error"]
    assert [res.get("v") for res in out["results"]] == ["ok"] * 5 + [None] + ["ok"] * 2


def test_llm_usage_in_a_child_counts_for_the_parent(workflow, plait):
    workflow(
        {
            "inputs": {"text": {"type": "string"}},
            "outputs": {"answer": {"source": "${ask.response}"}},
            "nodes": [
                {
                    "id": "ask",
                    "type": "llm",
                    "params": {"prompt": "classify: ${text}", "model": "echo"},
                }
            ],
        },
        "child.json",
    )
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "each",
                    "type": "workflow",
                    "batch": {"items": ["red", "green", "blue"], "parallel": True},
                    "params": {"workflow": "child.json", "inputs": {"text": "${item}"}},
                }
            ]
        }
    )
    r = plait("run", parent, "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["llm_usage"]["calls"] == 3
    assert r.json["outputs"]["batch_metadata"]["llm_usage"]["calls"] == 3
    assert "classify: green" in r.json["outputs"]["results"][1]["answer"]


def test_child_events_carry_their_place_in_the_parent_run(tmp_path):
    # No CLI view shows child events yet, so listen on the run's event bus the
    # way the progress display and the run records do.
    from plait.nodes.registry import Registry
    from plait.runtime.compile import load_and_compile
    from plait.runtime.engine import Runner
    from plait.runtime.events import (
        Event,
        EventBus,
        ItemFinished,
        ItemStarted,
        NodeFinished,
        RunFinished,
        RunStarted,
    )
    from plait.runtime.services import RunServices

    write(tmp_path / "child.json", GREETER)
    parent = write(
        tmp_path / "parent.json",
        {
            "nodes": [
                {
                    "id": "each",
                    "type": "workflow",
                    "batch": {"items": ["x", "y"], "parallel": True},
                    "params": {"workflow": "child.json", "inputs": {"name": "${item}"}},
                }
            ]
        },
    )
    seen: list[Event] = []
    bus = EventBus()
    bus.subscribe(seen.append)
    registry = Registry()
    compiled = load_and_compile(parent, registry)
    services = RunServices(registry, bus, compiled.directory)
    try:
        result = Runner(compiled, services).run({})
    finally:
        services.close()
    assert result.status == "success"
    for i in (0, 1):
        began = next(
            k for k, e in enumerate(seen) if isinstance(e, ItemStarted) and e.loc.node_id == "each" and e.index == i
        )
        ended = next(
            k for k, e in enumerate(seen) if isinstance(e, ItemFinished) and e.loc.node_id == "each" and e.index == i
        )
        inside = [e for e in seen[began:ended] if getattr(e, "path", None) == (("each", i),)
                  or (getattr(e, "loc", None) is not None and e.loc.path == (("each", i),))]  # type: ignore[attr-defined]
        assert isinstance(inside[0], RunStarted) and inside[0].run_id == result.run_id
        assert isinstance(inside[-1], RunFinished) and inside[-1].status == "success"
        finished = {str(e.loc): e.status for e in inside if isinstance(e, NodeFinished)}
        assert finished == {f"each[{i}]/hi": "success", f"each[{i}]/loud": "success"}
        assert all(e.loc.top == ("each", i) for e in inside if isinstance(e, NodeFinished))
    top = [e for e in seen if isinstance(e, NodeFinished) and e.loc.top_level]
    assert [(e.loc.node_id, e.status) for e in top] == [("each", "success")]
    assert isinstance(seen[-1], RunFinished) and seen[-1].path == () and seen[-1].status == "success"


def test_the_run_record_counts_the_node_runs_inside_children(tmp_path, workflow, plait):
    workflow(GREETER, "greeter.json")
    parent = workflow(
        {
            "nodes": [
                {
                    "id": "each",
                    "type": "workflow",
                    "batch": {"items": ["x", "y", "z"], "parallel": True},
                    "params": {"workflow": "greeter.json", "inputs": {"name": "${item}"}},
                }
            ]
        }
    )
    r = plait("run", parent, "-q")
    assert r.code == 0, r
    r = plait("show", "last")
    assert r.code == 0, r
    assert "6 node runs inside sub-workflows" in r.stdout  # 3 children x 2 nodes


def test_child_inputs_are_converted_to_their_declared_types_or_refused(workflow, plait):
    child = {
        "inputs": {"n": {"type": "integer"}},
        "nodes": [{"id": "double", "type": "echo", "params": {"v": "${n}"}}],
        "outputs": {"v": {"source": "${double.v}"}},
    }

    def parent(value: str) -> str:
        return workflow(
            {
                "nodes": [
                    {"id": "s", "type": "shell", "params": {"command": f"echo {value}"}},
                    {
                        "id": "sub",
                        "type": "workflow",
                        "params": {"workflow_ir": child, "inputs": {"n": "${s.stdout}"}},
                    },
                ]
            }
        )

    r = plait("run", parent("41"), "-o", "json", "-q")
    assert r.code == 0, r
    assert r.json["outputs"] == {"v": 41}  # shell text "41\n" became the integer 41

    r = plait("run", parent("abc"), "-q")
    assert r.code == 1, r
    assert "input 'n' is declared as integer, but got 'abc'" in r.stderr


def test_a_sub_workflows_own_budget_is_reported_as_not_applied(tmp_path, plait):
    child = write(
        tmp_path / "child.json",
        {
            "budget": {"usd": 0.5},
            "outputs": {"said": {"source": "${say.text}"}},
            "nodes": [{"id": "say", "type": "echo", "params": {"text": "hi ${who}"}}],
            "inputs": {"who": {"type": "string"}},
        },
    )
    parent = write(
        tmp_path / "parent.json",
        {
            "nodes": [
                {
                    "id": "sub",
                    "type": "workflow",
                    "params": {"workflow": child, "inputs": {"who": "${item}"}},
                    "batch": {"items": ["a", "b", "c"]},
                }
            ]
        },
    )
    r = plait("run", parent, "-q", "-o", "json")
    assert r.code == 0, r
    # said once for the run, not once per item, and the run is not stopped by it
    assert r.stderr.count("declares budget.usd=0.5, which is not applied") == 1, r.stderr
    assert "set the budget on the top-level workflow" in r.stderr
    assert [x["said"] for x in r.json["outputs"]["results"]] == ["hi a", "hi b", "hi c"]


def test_an_inline_child_is_checked_before_anything_runs(workflow, plait, tmp_path):
    marker = tmp_path / "ran"
    child = {
        "inputs": {"name": {"type": "string"}},
        "nodes": [{"id": "g", "type": "shel", "params": {"command": "printf 'hi %s' ${name}"}}],
        "outputs": {"said": {"source": "${g.stdout}"}},
    }

    def parent(ir, inputs):
        first = {"id": "first", "type": "write-file", "params": {"file_path": str(marker), "content": "x"}}
        sub = {"id": "sub", "type": "workflow", "params": {"workflow_ir": ir, "inputs": inputs}}
        return workflow({"nodes": [first, sub]})

    r = plait("run", parent(child, {"name": "ada"}), "-q")
    assert r.code == 2, r
    assert "nodes[1].params.workflow_ir: inline workflow_ir is invalid: nodes[0].type: unknown node type 'shel'" in r.stderr
    child["nodes"][0]["type"] = "shell"
    r = plait("run", parent(child, {"nme": "ada"}), "-q")
    assert r.code == 2, r
    assert "nodes[1].params.inputs.nme: the inline workflow_ir has no input 'nme'" in r.stderr
    assert not marker.exists()
    r = plait("run", parent(child, {"name": "ada"}), "-q")
    assert r.code == 0 and json.loads(r.stdout) == {"said": "hi ada"}, r


def test_a_template_reading_an_output_the_child_does_not_declare_is_refused(workflow, plait):
    workflow(
        {
            "inputs": {"name": {"type": "string"}},
            "nodes": [{"id": "g", "type": "shell", "params": {"command": "printf 'hi %s' ${name}"}}],
            "outputs": {"greeting": {"source": "${g.stdout}"}},
        },
        "greet.json",
    )
    sub = {"id": "sub", "type": "workflow", "params": {"workflow": "greet.json", "inputs": {"name": "ada"}}}
    r = plait("validate", workflow({"nodes": [sub, {"id": "e", "type": "echo", "params": {"v": "${sub.greting}"}}]}))
    assert r.code == 2, r
    assert "${sub.greting}: node 'sub' (workflow) has no output 'greting'" in r.stderr
    assert "did you mean 'greeting'?" in r.stderr
    r = plait("run", workflow({"nodes": [sub, {"id": "e", "type": "echo", "params": {"v": "${sub.greeting}"}}]}), "-q")
    assert r.code == 0 and json.loads(r.stdout) == {"v": "hi ada"}, r
    # a child that declares no outputs gives its last node's: not known before the run, not refused
    workflow({"nodes": [{"id": "g", "type": "shell", "params": {"command": "echo hi"}}]}, "bare.json")
    bare = {"id": "sub", "type": "workflow", "params": {"workflow": "bare.json"}}
    r = plait("validate", workflow({"nodes": [bare, {"id": "e", "type": "echo", "params": {"v": "${sub.stdout}"}}]}))
    assert r.code == 0, r
