"""MCP tool nodes against a real MCP server (tests/mcp_server.py, the official SDK's
server API) that the tests start themselves: stdio processes, and one streamable-HTTP
server on 127.0.0.1. What a user sees: `plait mcp sync` caching the tools, `plait
nodes` and `plait validate` using them, and runs where a whole batch talks to one
server process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import plait_env, run_inprocess

pytest.importorskip("mcp", reason="the mcp extra is not installed (pip install -e '.[dev,mcp]')")

SERVER = Path(__file__).resolve().parent / "mcp_server.py"
DEMO_TOOLS = ["echo", "add", "fail", "as_text", "mixed", "seen", "rendezvous", "slow", "crash"]


def _stdio(pids: Path | None = None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"command": sys.executable, "args": [str(SERVER)], "env": {"MCP_TEST_LIFETIME": "90"}}
    if pids is not None:
        entry["env"]["MCP_TEST_PIDS"] = str(pids)
    entry.update(extra)
    return entry


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One `plait mcp sync` for the module: plait's config and pflow's, good and bad servers."""
    root = tmp_path_factory.mktemp("mcp")
    home, user = root / "plait-home", root / "user"
    _write_json(
        home / "mcp-servers.json",
        {
            "mcpServers": {
                "demo": _stdio(),
                "broken": {"command": str(root / "no-such-server")},
                "needs_env": _stdio(env={"TOKEN": "${PLAIT_TEST_MCP_UNSET}"}),
                "odd": {"url": "ftp://example.invalid/mcp"},
                "typo": {"comand": "true"},
            }
        },
    )
    # pflow's own file: its servers are read too; plait's file wins for a name in both.
    _write_json(
        user / ".pflow" / "mcp-servers.json",
        {"mcpServers": {"pf": _stdio(), "demo": {"command": str(root / "shadowed")}}},
    )
    env = {"PLAIT_HOME": str(home), "HOME": str(user)}
    os.environ.pop("PLAIT_TEST_MCP_UNSET", None)
    result = run_inprocess("mcp", "sync", "--json", cwd=root, env=env)
    return {"result": result, "home": home, "user": user, "cache": (home / "mcp-tools.json").read_text()}


@pytest.fixture
def mcp_env(synced: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """This test's PLAIT_HOME holds the module's tool cache and a config whose servers
    write their pid per call to a file of this test. Returns a function that writes the
    config (more servers may be given) and returns the pid file."""
    home = Path(os.environ["PLAIT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "mcp-tools.json").write_text(synced["cache"])
    monkeypatch.setenv("HOME", str(synced["user"]))
    pids = tmp_path / "pids"

    def configure(**servers: Any) -> Path:
        _write_json(home / "mcp-servers.json", {"mcpServers": {"demo": _stdio(pids), **servers}})
        return pids

    configure()
    return configure


def _pids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- sync, nodes, list


def test_sync_caches_each_server_and_reports_each_failure(synced: dict[str, Any]) -> None:
    r = synced["result"]
    assert r.code == 1, r  # some servers failed, and the run says so
    rows = {row["server"]: row for row in r.json["servers"]}
    assert rows["demo"]["tools"] == DEMO_TOOLS
    assert rows["demo"]["config"] == str(synced["home"] / "mcp-servers.json")
    assert rows["pf"]["tools"] == DEMO_TOOLS
    assert rows["pf"]["config"] == str(synced["user"] / ".pflow" / "mcp-servers.json")
    assert "no-such-server" in rows["broken"]["error"] and "No such file" in rows["broken"]["error"]
    assert "PLAIT_TEST_MCP_UNSET" in rows["needs_env"]["error"] and "not set" in rows["needs_env"]["error"]
    assert "http:// or https://" in rows["odd"]["error"]
    assert "'command' (the program to start) is missing; is 'comand' meant to be 'command'?" in rows["typo"]["error"]

    cache = json.loads(synced["cache"])
    assert sorted(cache["servers"]) == ["demo", "pf"]
    echo = next(t for t in cache["servers"]["demo"]["tools"] if t["name"] == "echo")
    assert echo["input_schema"]["required"] == ["text"]
    assert echo["input_schema"]["properties"]["style"]["enum"] == ["plain", "upper"]
    assert set(echo["output_schema"]["properties"]) == {"text", "times", "shout"}
    assert "TOKEN" not in synced["cache"]  # no config, let alone a secret, goes into the cache


def test_nodes_and_mcp_list_document_the_synced_tools(plait: Any, mcp_env: Any) -> None:
    r = plait("nodes", "mcp-demo-echo")
    assert r.code == 0, r
    assert "mcp-demo-echo  — Repeat a text; structured output." in r.stdout
    assert "from MCP server 'demo'" in r.stdout
    assert "text: string (required)" in r.stdout
    assert 'style: string (default "plain") — Style (one of "plain", "upper")' in r.stdout
    assert "timeout: number (optional)" in r.stdout
    assert "shout: string" in r.stdout

    r = plait("nodes", "--json")
    decls = {d["type"]: d for d in r.json}
    assert {f"mcp-demo-{t}" for t in DEMO_TOOLS} | {f"mcp-pf-{t}" for t in DEMO_TOOLS} <= set(decls)
    assert decls["mcp-demo-add"]["mcp"]["input"]["required"] == ["a", "b"]
    assert [p["name"] for p in decls["mcp-demo-add"]["params"]] == ["a", "b", "timeout"]

    r = plait("mcp", "list")
    assert r.code == 0, r
    assert "demo (stdio, from " in r.stdout
    assert "mcp-demo-crash — Kills this server process" in r.stdout
    assert f"pf (stdio, from {Path.home() / '.pflow' / 'mcp-servers.json'})" in r.stdout
    listed = plait("mcp", "list", "--json").json
    assert [s["server"] for s in listed["servers"]] == ["demo", "pf"]


# -- validation


def test_validate_checks_mcp_nodes_statically(plait: Any, workflow: Any, mcp_env: Any) -> None:
    path = workflow(
        {
            "nodes": [
                {"id": "typo", "type": "mcp-demo-ecko", "params": {"text": "a"}},
                {"id": "nosrv", "type": "mcp-dmeo-echo", "params": {"text": "a"}},
                {"id": "p", "type": "mcp-demo-echo", "params": {"txt": "a", "times": "two", "style": "loud"}},
                {"id": "ok", "type": "mcp-demo-add", "params": {"a": 1, "b": "${p.times}", "timeout": 5}},
                {"id": "out", "type": "echo", "params": {"x": "${p.shouted}", "y": "${ok.result}"}},
            ]
        }
    )
    r = plait("validate", path, "-o", "json")
    assert r.code == 2, r
    errors = {(e["path"], e["message"]): e.get("hint", "") for e in r.json["errors"]}
    hint = errors[("nodes[0].type", "unknown node type 'mcp-demo-ecko'")]
    assert "MCP server 'demo' has no tool 'ecko'" in hint and "did you mean 'mcp-demo-echo'" in hint
    assert "`plait mcp sync demo`" in hint
    hint = errors[("nodes[1].type", "unknown node type 'mcp-dmeo-echo'")]
    assert "no synced MCP server matches" in hint and "did you mean 'mcp-demo-echo'" in hint
    assert errors[("nodes[2].params.txt", "unknown param 'txt' for node type 'mcp-demo-echo'")] == (
        "did you mean 'text'? (a required param, missing)"
    )
    assert ("nodes[2].params", "missing required param 'text' for node type 'mcp-demo-echo'") not in errors
    assert ("nodes[2].params.times", "param 'times' of node 'p' must be integer, not string ('two')") in errors
    assert ("nodes[2].params.style", 'param \'style\' must be one of "plain", "upper", not "loud"') in errors
    assert any(m.startswith("${p.shouted}: node 'p' (mcp-demo-echo) has no output 'shouted'") for _, m in errors)
    assert len(errors) == 6  # the misspelt required param is one problem; node 'ok' and ${ok.result} are fine


def test_an_mcp_type_without_a_cache_says_to_sync(plait: Any, workflow: Any) -> None:
    path = workflow({"nodes": [{"id": "a", "type": "mcp-github-create_issue", "params": {}}]})
    r = plait("validate", path, "-o", "json")
    assert r.code == 2
    assert "no MCP tools are known yet" in r.json["errors"][0]["hint"]
    assert "then run `plait mcp sync`" in r.json["errors"][0]["hint"]

    home = Path(os.environ["PLAIT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "mcp-tools.json").write_text("{not json")
    r = plait("validate", path)
    assert r.code == 2
    assert "mcp-tools.json cannot be read" in r.stderr and "plait mcp sync" in r.stderr
    # A typo in another node type is about that type, not about the MCP cache.
    r = plait("validate", workflow({"nodes": [{"id": "a", "type": "shel", "params": {"command": "ls"}}]}), "-o", "json")
    assert r.code == 2
    assert r.json["errors"][0]["message"] == "unknown node type 'shel'"
    assert r.json["errors"][0]["hint"] == "did you mean 'shell'?"


# -- runs


def test_a_200_item_batch_runs_on_one_server_process(plait: Any, workflow: Any, mcp_env: Any) -> None:
    pids = mcp_env()
    path = workflow(
        {
            "nodes": [
                {"id": "one", "type": "mcp-demo-echo", "params": {"text": "hi", "times": 2, "style": "upper"}},
                {"id": "sum", "type": "mcp-demo-add", "params": {"a": 40, "b": "${one.times}"}},
                {"id": "txt", "type": "mcp-demo-as_text", "params": {"value": "${one.text}"}},
                {"id": "pic", "type": "mcp-demo-mixed", "params": {"caption": "a [b] c"}},
                {"id": "quiet", "type": "mcp-demo-seen", "params": {}},
                {"id": "some", "type": "mcp-demo-seen", "params": {"maybe": None, "count": "${one.times}"}},
                {
                    "id": "many",
                    "type": "mcp-demo-echo",
                    "params": {"text": "n${item}"},
                    "batch": {"items": list(range(200)), "parallel": True, "max_concurrent": 25},
                },
                {
                    # Each call waits until 8 are in flight on the server at once.
                    "id": "meet",
                    "type": "mcp-demo-rendezvous",
                    "params": {"tag": "${item}", "peers": 8},
                    "batch": {"items": list(range(8)), "parallel": True, "max_concurrent": 8},
                },
                {
                    "id": "bad",
                    "type": "mcp-demo-fail",
                    "params": {"message": "boom-${item}"},
                    "batch": {"items": ["a", "b"], "error_handling": "continue"},
                },
                {
                    "id": "late",
                    "type": "mcp-demo-slow",
                    "params": {"seconds": 3, "timeout": 0.3},
                    "batch": {"items": [1], "error_handling": "continue"},
                },
            ],
            "outputs": {
                "shout": {"source": "${one.shout}"},
                "whole": {"source": "${one.result}"},
                "sum": {"source": "${sum.result}"},
                "value": {"source": "${txt.result.value}"},
                "kind": {"source": "${txt.kind}"},
                "pic": {"source": "${pic.result}"},
                "quiet": {"source": "${quiet.result}"},
                "some": {"source": "${some.result}"},
                "many": {"source": "${many.results}"},
                "meet": {"source": "${meet.success_count}"},
                "bad": {"source": "${bad.errors}"},
                "late": {"source": "${late.errors}"},
            },
        }
    )
    r = plait("run", path, "-o", "json")
    assert r.code == 0, r
    out = r.json["outputs"]
    assert out["shout"] == "HIHI"
    assert out["whole"] == {"text": "hi", "times": 2, "shout": "HIHI"}  # structured content, not its text
    assert out["sum"] == 42  # a wrapped plain value reads as pflow reads it
    assert out["value"] == "hi" and out["kind"] == "text"  # JSON text content, parsed
    assert out["pic"] == ["a [b] c", {"type": "image", "data": "aGk=", "mime_type": "image/png"}]
    # Arguments left out are not sent (the server applies its defaults); an explicit null is.
    assert out["quiet"] == {"sent": [], "nulls": [], "header": ""}
    assert out["some"] == {"sent": ["count", "maybe"], "nulls": ["maybe"], "header": ""}
    assert [x["item"] for x in out["many"]] == list(range(200))
    assert [x["shout"] for x in out["many"]] == [f"n{i}" for i in range(200)]
    assert out["meet"] == 8  # so calls really were multiplexed on the one session
    assert [e["error"] for e in out["bad"]] == [
        "MCP tool 'fail' of server 'demo' failed: Error executing tool fail: boom-a",
        "MCP tool 'fail' of server 'demo' failed: Error executing tool fail: boom-b",
    ]
    assert out["late"][0]["error"] == "MCP tool 'slow' of server 'demo' did not answer within 0.3 s"
    calls = _pids(pids)
    assert len(calls) == 1 + 1 + 1 + 1 + 2 + 200 + 8 + 2 + 1
    assert len(set(calls)) == 1, "every call of the run went to one server process"


def test_a_dead_server_is_replaced_and_the_calls_are_sent_again(
    plait: Any, workflow: Any, mcp_env: Any, tmp_path: Path
) -> None:
    fragile_pids = tmp_path / "fragile-pids"
    pids = mcp_env(fragile=_stdio(fragile_pids, reconnects=0))
    home = Path(os.environ["PLAIT_HOME"])
    cache = json.loads((home / "mcp-tools.json").read_text())
    cache["servers"]["fragile"] = cache["servers"]["demo"]  # the same program, so the same tools
    (home / "mcp-tools.json").write_text(json.dumps(cache))
    path = workflow(
        {
            "nodes": [
                {"id": "before", "type": "mcp-demo-echo", "params": {"text": "a"}},
                {
                    # The first call to reach the server kills it; the calls in flight with it
                    # fail with it, and all of them are sent again to a new process.
                    "id": "crash",
                    "type": "mcp-demo-crash",
                    "params": {"marker": str(tmp_path / "marker")},
                    "batch": {"items": list(range(6)), "parallel": True, "max_concurrent": 6},
                },
                {"id": "after", "type": "mcp-demo-echo", "params": {"text": "b"}},
                {
                    "id": "once",
                    "type": "mcp-fragile-crash",
                    "params": {"marker": str(tmp_path / "fragile-marker")},
                    "batch": {"items": [0], "error_handling": "continue"},
                },
            ],
            "outputs": {
                "crash": {"source": "${crash.success_count}"},
                "after": {"source": "${after.text}"},
                "once": {"source": "${once.errors}"},
            },
        }
    )
    r = plait("run", path, "-o", "json")
    assert r.code == 0, r
    assert r.json["outputs"]["crash"] == 6
    assert r.json["outputs"]["after"] == "b"
    error = r.json["outputs"]["once"][0]["error"]
    assert error.startswith("lost the connection to MCP server 'fragile' while calling 'crash' 1 time")
    assert "Connection closed" in error
    calls = _pids(pids)
    assert len(set(calls)) == 2, "one server process, then one replacement"
    assert calls[0] != calls[-1]
    assert len(set(_pids(fragile_pids))) == 1  # reconnects: 0 means no second process


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """tests/mcp_server.py on streamable HTTP at 127.0.0.1 (a free port); stops by itself too."""
    port_file, pids = tmp_path / "port", tmp_path / "http-pids"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--http", str(port_file)],
        env=plait_env({"MCP_TEST_LIFETIME": "60", "MCP_TEST_PIDS": str(pids)}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the HTTP MCP server did not start: {proc.communicate(timeout=5)[1]}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text()}/mcp", pids
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_streamable_http_server_from_a_pflow_markdown_workflow(
    plait: Any, workflow: Any, mcp_env: Any, http_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, pids = http_server
    monkeypatch.setenv("PLAIT_TEST_MCP_URL", url)
    monkeypatch.setenv("PLAIT_TEST_MCP_TOKEN", "tok")
    # The three spellings of a variable in the config: pflow's two and plait's.
    headers = {"X-Test": "${env.PLAIT_TEST_MCP_TOKEN}-${PLAIT_TEST_MCP_UNSET:-dflt}"}
    mcp_env(web={"type": "http", "url": "${PLAIT_TEST_MCP_URL}", "headers": headers})
    r = plait("mcp", "sync", "web")
    assert r.code == 0, r
    assert "✓ web (http): 9 tools" in r.stdout and "mcp-web-rendezvous" in r.stdout
    path = workflow(
        """# Shout over HTTP

Every word through one HTTP session, several at once.

## Steps

### shout

Each word, shouted by the server.

- type: mcp-web-echo
- text: ${word}
- style: upper

```yaml batch
items: ["a", "b", "c", "d", "e", "f"]
as: word
parallel: true
max_concurrent: 6
```

### meet

Three calls that must be in flight together.

- type: mcp-web-rendezvous
- tag: t${item}
- peers: 3

```yaml batch
items: [1, 2, 3]
parallel: true
max_concurrent: 3
```

### who

What the server saw of the request.

- type: mcp-web-seen

## Outputs

### header

The X-Test header the server got.

- source: ${who.header}

### shouts

The shouted words.

- source: ${shout.results}

### met

How many calls met.

- source: ${meet.success_count}
""",
        name="shout.pflow.md",
    )
    r = plait("run", path, "-o", "json")
    assert r.code == 0, r
    assert [x["shout"] for x in r.json["outputs"]["shouts"]] == ["A", "B", "C", "D", "E", "F"]
    assert r.json["outputs"]["met"] == 3
    assert r.json["outputs"]["header"] == "tok-dflt"
    assert len(_pids(pids)) == 10 and len(set(_pids(pids))) == 1


def test_workflows_without_mcp_nodes_read_no_mcp_file_and_import_no_sdk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "mcp-servers.json").write_text("{broken")
    (home / "mcp-tools.json").write_text("{broken")
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"nodes": [{"id": "a", "type": "echo", "params": {"x": 1}}]}))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "plait", "run", str(wf), "-q"],
        capture_output=True,
        text=True,
        env=plait_env({"PLAIT_HOME": str(home)}),
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert {m for m in imported if m.split(".")[0] in ("mcp", "mcp_types", "httpx2") or "nodes.mcp" in m} == set()


def test_mcp_is_in_the_help_and_list_works_with_nothing_configured(plait: Any, monkeypatch: Any, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert "mcp sync | list" in plait("--help").stdout
    r = plait("mcp", "list")
    assert r.code == 0 and "no MCP servers configured" in r.stdout
    r = plait("mcp", "sync")
    assert r.code == 2 and "no MCP servers are configured" in r.stderr


def test_json_schema_shapes_become_declared_params(plait: Any, workflow: Any) -> None:
    # The cache is a documented file: write what a server with unusual schemas would list.
    tools = [
        {
            "name": "shapes",
            "description": "First line.\nMore prose that plait nodes does not show.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "maybe": {"type": ["string", "null"]},
                    "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                    "loose": {},
                    "opt": {"anyOf": [{"type": "number"}, {"type": "null"}], "default": None},
                    "timeout": {"type": "integer", "description": "the tool's own"},
                },
                "required": ["either"],
                "additionalProperties": False,
            },
            "output_schema": None,
        },
        {"name": "open", "input_schema": {"type": "object", "additionalProperties": True}},
    ]
    home = Path(os.environ["PLAIT_HOME"])
    _write_json(home / "mcp-tools.json", {"format": 1, "servers": {"x-y": {"synced": "now", "tools": tools}}})
    decl = {d["type"]: d for d in plait("nodes", "--json").json}
    shapes = decl["mcp-x-y-shapes"]
    assert shapes["description"] == "First line."
    assert [(p["name"], p["type"], p["required"]) for p in shapes["params"]] == [
        ("maybe", "string|null", False),
        ("either", "string|integer", True),
        ("loose", "any", False),
        ("opt", "number|null", False),
        ("timeout", "integer", False),  # the tool's: plait adds no timeout of its own
    ]
    assert decl["mcp-x-y-open"]["open_params"] is True
    path = workflow(
        {
            "nodes": [
                {"id": "s", "type": "mcp-x-y-shapes", "params": {"either": "${o.anything}", "maybe": None}},
                {"id": "o", "type": "mcp-x-y-open", "params": {"whatever": 1}},
                {"id": "t", "type": "mcp-x-y-shapes", "params": {"either": [1], "extra": 2}},
            ]
        }
    )
    r = plait("validate", path, "-o", "json")
    assert r.code == 2
    messages = sorted(e["message"] for e in r.json["errors"])
    assert messages == [
        "${o.anything}: node 'o' cannot have run before 's'",
        "param 'either' of node 't' must be string or integer, not array ([1])",
        "unknown param 'extra' for node type 'mcp-x-y-shapes'",
    ]  # no output of 'o' is unknown (no output schema), and 'maybe' may be null
