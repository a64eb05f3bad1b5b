"""The examples in examples/ run as their descriptions say, through the real CLI.

Each runs from a temporary working directory, so none depends on being started
from the repository root. The HTTP example runs against a local server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ALL = sorted(p.name for p in EXAMPLES.glob("*.json"))


def example(name: str) -> str:
    return str(EXAMPLES / name)


@pytest.mark.parametrize("name", ALL)
def test_every_example_is_valid_and_says_what_it_needs_and_how_to_run_it(name, plait):
    r = plait("validate", example(name))
    assert r.code == 0, r
    description = json.loads((EXAMPLES / name).read_text())["description"]
    assert f"plait run examples/{name}" in description
    assert "Needs" in description


def test_every_example_has_a_test_here():
    tested = {
        "hello.json",
        "http_batch.json",
        "llm_classify.json",
        "code_transform.json",
        "nested.json",
        "nested_child.json",
    }
    assert set(ALL) == tested


def test_hello_prints_a_card_per_name_in_order_and_leaves_nothing_behind(tmp_path, plait):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    r = plait("run", example("hello.json"), env={"TMPDIR": str(scratch)})
    assert r.code == 0, r
    lines = r.stdout.splitlines()
    assert lines[:4] == [
        "0. HELLO, ADA!",
        "1. HELLO, GRACE!",
        "2. HELLO, LINUS!",
        "3. HELLO, MARGARET!",
    ]
    assert "4 cards" in lines[4]
    assert list(scratch.iterdir()) == []
    # nothing in the working directory but plait's own run records
    assert {p.name for p in tmp_path.iterdir()} <= {"tmp", ".plait"}


def test_hello_takes_names_and_greeting_from_the_command_line(tmp_path, plait):
    names = json.dumps([f"guest{i}" for i in range(12)])
    r = plait("run", example("hello.json"), f"names={names}", "greeting=Hi", "-q")
    assert r.code == 0, r
    assert r.stdout.splitlines()[:12] == [f"{i}. HI, GUEST{i}!" for i in range(12)]


class TodoApi(BaseHTTPRequestHandler):
    """GET /todos/<id>, shaped like JSONPlaceholder's."""

    protocol_version = "HTTP/1.1"
    seen: list[str]

    def do_GET(self) -> None:
        prefix = "/todos/"
        if self.path.startswith(prefix) and self.path[len(prefix) :].isdigit():
            n = int(self.path[len(prefix) :])
            status, payload = (
                200,
                {"userId": 1, "id": n, "title": f"todo {n}", "completed": n % 3 == 0},
            )
        else:
            status, payload = 404, {"error": "no such route"}
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def todo_api() -> Iterator[tuple[str, list[str]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TodoApi)
    server.daemon_threads = True
    server.seen = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.seen  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


def test_http_batch_fetches_every_id_from_the_given_server(todo_api, plait):
    base_url, seen = todo_api
    ids = list(range(1, 16))
    r = plait(
        "run", example("http_batch.json"), f"base_url={base_url}", f"ids={json.dumps(ids)}", "-q"
    )
    assert r.code == 0, r
    summary = json.loads(r.stdout)
    assert summary["todos"] == [f"{n:>3} [{'x' if n % 3 == 0 else ' '}] todo {n}" for n in ids]
    assert summary["done"] == 5 and summary["open"] == 10
    assert sorted(seen) == sorted(f"/todos/{n}" for n in ids)


def test_http_batch_names_the_failing_request(todo_api, plait):
    base_url, _ = todo_api
    r = plait("run", example("http_batch.json"), f"base_url={base_url}/missing", "ids=[1]", "-q")
    assert r.code == 1, r
    assert "fetch" in r.stderr and "404" in r.stderr


def test_llm_classify_runs_offline_on_the_echo_model(tmp_path, plait):
    # An empty llm user directory: no keys, no default model, nothing of the machine's
    r = plait(
        "run",
        example("llm_classify.json"),
        "-o",
        "json",
        "-q",
        env={"LLM_USER_PATH": str(tmp_path / "llm"), "OPENAI_API_KEY": ""},
    )
    assert r.code == 0, r
    out = r.json["outputs"]
    messages = json.loads((EXAMPLES / "llm_classify.json").read_text())["inputs"]["messages"][
        "default"
    ]
    assert [x["message"] for x in out["labels"]] == messages
    # echo answers with the prompt it got, so each answer names its own message
    for x in out["labels"]:
        assert x["label"] == "unclear"
        assert x["message"][:30] in x["answer"]
    assert out["counts"] == {"unclear": len(messages)}
    assert out["llm_usage"]["calls"] == len(messages)
    assert r.json["llm_usage"]["calls"] == len(messages)


def test_code_transform_totals_by_region(plait):
    r = plait("run", example("code_transform.json"), "-q")
    assert r.code == 0, r
    assert json.loads(r.stdout) == [
        {"region": "east", "rows": 2, "net": 79.75, "gross": 95.7},
        {"region": "north", "rows": 2, "net": 49.99, "gross": 59.99},
        {"region": "south", "rows": 2, "net": 47.48, "gross": 56.98},
    ]


def test_code_transform_reads_csv_from_stdin_or_the_command_line(plait):
    csv = "region,product,units,unit_price\nwest,widget,4,2.5\nwest,gizmo,1,5\neast,gizmo,1,5\n"
    expected = [
        {"region": "west", "rows": 2, "net": 15.0, "gross": 15.0},
        {"region": "east", "rows": 1, "net": 5.0, "gross": 5.0},
    ]
    r = plait("run", example("code_transform.json"), "vat=0", "-q", input=csv)
    assert r.code == 0, r
    assert json.loads(r.stdout) == expected
    r = plait("run", example("code_transform.json"), f"csv={csv}", "vat=0", "-q")
    assert r.code == 0, r
    assert json.loads(r.stdout) == expected


def test_code_transform_names_the_bad_csv_line(plait):
    csv = "region,product,units,unit_price\nwest,widget,4,2.5\nwest,gizmo,many,5\n"
    r = plait("run", example("code_transform.json"), "-q", input=csv)
    assert r.code == 1, r
    assert "node 'parse' failed" in r.stderr and "CSV line 3" in r.stderr


def test_nested_prices_each_order_through_the_child_workflow_in_order(plait):
    r = plait("run", example("nested.json"), "discount=0.1", "-q")
    assert r.code == 0, r
    report = json.loads(r.stdout)
    assert [o["order"] for o in report["orders"]] == ["A1", "B2", "C3", "D4"]
    assert report["orders"][2]["lines"] == [
        "#0 10 x pen = 10.80",
        "#1 2 x ink = 13.05",
        "#2 100 x clip = 1.80",
    ]
    assert [o["total"] for o in report["orders"]] == [9.54, 6.53, 25.65, 16.65]
    assert report["grand_total"] == 58.37


def test_nested_child_runs_on_its_own(plait):
    order = {"id": "Z9", "lines": [{"sku": "pen", "qty": 3, "price": 1.2}]}
    r = plait("run", example("nested_child.json"), f"order={json.dumps(order)}", "-q")
    assert r.code == 0, r
    assert json.loads(r.stdout) == {"order_id": "Z9", "lines": ["#0 3 x pen = 3.60"], "total": 3.6}
