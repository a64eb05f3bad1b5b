"""The http node, against real servers on 127.0.0.1, on both of its paths.

Every behaviour test runs twice: on the thread path (``exec``, httpx, what the
``sequential`` and ``threads`` executors call) and on the async path
(``exec_async``, aiohttp, what the ``async`` executor awaits on the run's
event loop). The first half drives one item the way the runtime does
(``prep`` / ``exec`` / ``post`` with an ``ItemContext`` and the runtime's real
``RunServices``; the async path runs on that run's own loop); the second half
runs real workflows through the CLI with ``--executor threads`` and
``--executor async``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import plait_env, popen_cli
from direct import DirectServices, with_defaults
from plait.nodes.base import ItemContext, NodeError
from plait.nodes.http import SAFE_ACROSS_ORIGINS, HttpNode
from servers import DribbleServer, LocalServer, Reply, binary_payload, serve

server = pytest.fixture(serve)
PATHS = ("threads", "async")


@pytest.fixture
def services() -> Iterator[DirectServices]:
    s = DirectServices()
    yield s
    s.close()


class Driver:
    """One item on one of the node's two paths, with a run's real services."""

    def __init__(self, services: DirectServices, path: str) -> None:
        self.services = services
        self.path = path

    def _context(self, params: dict[str, Any], node: HttpNode, index: int | None) -> ItemContext:
        return ItemContext(node.node_id, index, with_defaults(HttpNode, params), self.services)

    async def run_async(
        self, params: dict[str, Any], node: HttpNode | None = None, index: int | None = None
    ) -> dict[str, Any]:
        node = node or HttpNode("get")
        ctx = self._context(params, node, index)
        prep_res = node.prep(ctx)  # on the loop, as the async executor calls it
        node.post(ctx, prep_res, await node.exec_async(prep_res))
        assert ctx.outputs is not None
        return ctx.outputs

    def run(
        self, params: dict[str, Any], node: HttpNode | None = None, index: int | None = None
    ) -> dict[str, Any]:
        if self.path == "async":
            return self.services.call_async(self.run_async(params, node, index))
        node = node or HttpNode("get")
        ctx = self._context(params, node, index)
        prep_res = node.prep(ctx)
        node.post(ctx, prep_res, node.exec(prep_res))
        assert ctx.outputs is not None
        return ctx.outputs

    def failure(self, params: dict[str, Any], node: HttpNode | None = None) -> NodeError:
        with pytest.raises(NodeError) as info:
            self.run(params, node)
        return info.value


@pytest.fixture(params=PATHS)
def http(request: pytest.FixtureRequest, services: DirectServices) -> Driver:
    return Driver(services, request.param)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# requests and responses


def test_get_returns_decoded_json_status_headers_and_time(server, http):
    out = http.run({"url": server.url("/json")})
    assert out["response"] == {"ok": True, "path": "/json", "query": {}}
    assert out["status_code"] == 200
    assert out["response_headers"]["content-type"] == "application/json"
    assert out["response_is_base64"] is False
    assert isinstance(out["response_time"], float) and out["response_time"] >= 0
    assert server.requests[0].method == "GET"


def test_json_param_is_posted_as_json_and_echoed(server, http):
    payload = {"name": "plait", "tags": ["a", "b"], "n": 3, "none": None}
    out = http.run({"url": server.url("/echo"), "json": payload})
    assert out["response"]["method"] == "POST"  # a body without a method means POST
    assert out["response"]["json"] == payload
    assert out["response"]["headers"]["content-type"] == "application/json"


def test_json_text_from_another_node_is_sent_as_the_value_it_holds(server, http):
    out = http.run({"url": server.url("/echo"), "json": '{"from": "stdout"}\n'})
    assert out["response"]["json"] == {"from": "stdout"}
    out = http.run({"url": server.url("/echo"), "json": "just text"})
    assert out["response"]["json"] == "just text"


def test_explicit_method_wins_over_the_post_default(server, http):
    out = http.run({"url": server.url("/echo"), "method": "put", "json": {"a": 1}})
    assert out["response"]["method"] == "PUT"
    out = http.run({"url": server.url("/echo"), "method": "DELETE"})
    assert out["response"]["method"] == "DELETE"


def test_string_body_is_sent_verbatim(server, http):
    out = http.run(
        {
            "url": server.url("/echo"),
            "method": "PATCH",
            "body": "name=plait&x=1",
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        },
    )
    assert out["response"]["method"] == "PATCH"
    assert out["response"]["body"] == "name=plait&x=1"
    assert out["response"]["headers"]["content-type"] == "application/x-www-form-urlencoded"


def test_a_raw_body_without_a_type_is_sent_without_one(server, http):
    out = http.run({"url": server.url("/echo"), "body": "plain"})
    assert out["response"]["body"] == "plain"
    assert "content-type" not in out["response"]["headers"]


def test_object_body_is_sent_as_json_like_pflow(server, http):
    out = http.run({"url": server.url("/echo"), "body": {"k": [1, 2]}})
    assert out["response"]["method"] == "POST"
    assert out["response"]["json"] == {"k": [1, 2]}


def test_headers_auth_token_and_api_key_reach_the_server(server, http):
    http.run(
        {
            "url": server.url("/echo"),
            "headers": {"X-Trace": "abc", "X-Count": 3, "X-Flag": True, "X-Unset": None},
            "auth_token": "s3cret",
            "api_key": "k-123",
        },
    )
    headers = server.requests[-1].headers
    assert headers["x-trace"] == "abc"
    assert headers["x-count"] == "3"
    assert headers["x-flag"] == "true"
    assert "x-unset" not in headers
    assert headers["authorization"] == "Bearer s3cret"
    assert headers["x-api-key"] == "k-123"


def test_api_key_goes_in_the_header_named_by_api_key_header(server, http):
    http.run(
        {"url": server.url("/echo"), "api_key": "k-9", "api_key_header": "Ocp-Apim-Key"},
    )
    headers = server.requests[-1].headers
    assert headers["ocp-apim-key"] == "k-9"
    assert "x-api-key" not in headers


def test_auth_token_replaces_an_authorization_header_in_any_case(server, http):
    http.run(
        {"url": server.url("/echo"), "headers": {"authorization": "Basic old"}, "auth_token": "t"},
    )
    assert server.requests[-1].headers["authorization"] == "Bearer t"


def test_query_params_are_merged_into_the_url_query(server, http):
    out = http.run(
        {
            "url": server.url("/echo?page=1&keep=yes"),
            "params": {"page": 2, "q": "a b&c", "tag": ["x", "y"], "raw": True},
        },
    )
    assert out["response"]["query"] == {
        "page": "2",
        "keep": "yes",
        "q": "a b&c",
        "tag": ["x", "y"],
        "raw": "true",
    }


def test_text_response_is_a_string(server, http):
    out = http.run({"url": server.url("/text?body=plain+words")})
    assert out["response"] == "plain words"
    assert out["response_is_base64"] is False


def test_text_response_is_decoded_with_its_charset(server, http):
    server.route(
        "/latin1",
        lambda req: Reply(
            200, "café".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"
        ),
    )
    out = http.run({"url": server.url("/latin1")})
    assert out["response"] == "café"


def test_vendor_json_content_types_are_decoded(server, http):
    with pytest.raises(NodeError) as info:
        http.run({"url": server.url("/problem")})
    assert info.value.outputs is not None
    assert info.value.outputs["response"]["title"] == "Bad input"


def test_binary_response_comes_back_as_base64_with_a_flag(server, http):
    out = http.run({"url": server.url("/binary?size=3000")})
    assert out["response_is_base64"] is True
    assert out["response_is_binary"] is True
    assert base64.b64decode(out["response"]) == binary_payload(3000)


def test_mislabelled_json_falls_back_to_text(server, http):
    out = http.run({"url": server.url("/text?body=not+json&type=application/json")})
    assert out["response"] == "not json"


def test_head_and_no_content_responses_have_empty_bodies(server, http):
    out = http.run({"url": server.url("/text"), "method": "HEAD"})
    assert out["status_code"] == 200
    assert out["response"] == ""
    out = http.run({"url": server.url("/json"), "method": "HEAD"})
    assert out["response"] is None  # no JSON value at all
    out = http.run({"url": server.url("/nocontent"), "method": "DELETE"})
    assert out["status_code"] == 204
    assert out["response"] == ""


# ---------------------------------------------------------------------------
# failures


def test_non_2xx_fails_with_status_and_body_start_and_keeps_outputs(server, http):
    err = http.failure({"url": server.url("/status/404")})
    assert "HTTP 404 Not Found" in err.message
    assert "status 404" in err.message  # the start of the body
    assert err.retryable is False
    assert err.outputs is not None
    assert err.outputs["status_code"] == 404
    assert err.outputs["response"]["error"] == "status 404"


def test_error_message_shows_only_the_first_200_chars_of_a_long_body(server, http):
    long_body = "E" * 150 + "F" * 500
    err = http.failure({"url": server.url(f"/status/400?body={long_body}")})
    assert "E" * 150 + "F" * 50 + "..." in err.message
    assert "F" * 51 not in err.message
    assert err.outputs is not None and err.outputs["response"] == long_body


def test_error_message_hides_the_query_string_and_credentials(server, http):
    err = http.failure(
        {
            "url": server.url("/status/403?api_key=TOPSECRET"),
            "params": {"token": "ALSOSECRET"},
            "auth_token": "BEARERSECRET",
        },
    )
    assert "/status/403?..." in err.message
    for secret in ("TOPSECRET", "ALSOSECRET", "BEARERSECRET"):
        assert secret not in err.message


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_not_retryable(server, http, status):
    err = http.failure({"url": server.url(f"/status/{status}")})
    assert err.retryable is False
    assert err.retry_after is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_rate_limits_and_server_errors_are_retryable(server, http, status):
    err = http.failure({"url": server.url(f"/status/{status}")})
    assert err.retryable is True
    assert f"HTTP {status}" in err.message


def test_retry_after_seconds_is_passed_on(server, http):
    err = http.failure({"url": server.url("/flaky/a?fail=1&status=503&retry_after=7")})
    assert err.retryable is True
    assert err.retry_after == 7.0


def test_retry_after_http_date_is_turned_into_seconds(server, http):
    err = http.failure({"url": server.url("/flaky/b?fail=1&status=429&retry_after=30&date=1")})
    assert err.retry_after is not None
    assert 25 <= err.retry_after <= 31  # HTTP dates have one-second resolution


def test_flaky_endpoint_succeeds_once_it_recovers(server, http):
    url = server.url("/flaky/c?fail=2&retry_after=0")
    http.failure({"url": url})
    http.failure({"url": url})
    assert http.run({"url": url})["response"] == {"ok": True, "attempt": 3}


def test_connection_refused_is_a_clear_retryable_error(http):
    port = unused_port()
    err = http.failure({"url": f"http://127.0.0.1:{port}/x"})
    assert err.message.startswith(f"could not connect to http://127.0.0.1:{port}/x: ")
    assert err.retryable is True


def test_slow_server_times_out_with_the_limit_in_the_message(server, http):
    err = http.failure({"url": server.url("/delay/3"), "timeout": 0.3})
    assert "timed out after 0.3s" in err.message
    assert err.retryable is True


def test_timeout_covers_a_body_that_trickles_in(server, http):
    # each chunk arrives well within the timeout; the whole body does not
    err = http.failure({"url": server.url("/drip?chunks=20&interval=0.1"), "timeout": 0.5})
    assert "timed out after 0.5s while reading the response body" in err.message


def test_response_over_the_size_cap_fails_clearly(server, http):
    err = http.failure({"url": server.url("/large?bytes=5000"), "max_response_bytes": 1000})
    assert "larger than max_response_bytes (1000 bytes)" in err.message
    assert "Content-Length is 5000" in err.message
    assert err.retryable is False


def test_size_cap_applies_to_streamed_bodies_without_a_length(server, http):
    err = http.failure(
        {"url": server.url("/large?bytes=2000000&chunked=1"), "max_response_bytes": 500_000},
    )
    assert "larger than max_response_bytes (500000 bytes)" in err.message
    assert "stopped reading after" in err.message


def test_size_cap_counts_decompressed_bytes(server, http):
    err = http.failure(
        {"url": server.url("/gzip?bytes=3000000"), "max_response_bytes": 1_000_000}
    )
    assert "larger than max_response_bytes" in err.message


def test_body_within_the_cap_is_returned_whole(server, http):
    out = http.run({"url": server.url("/large?bytes=300000&chunked=1")})
    assert out["response"] == "x" * 300000


# ---------------------------------------------------------------------------
# redirects


def test_redirects_are_followed_by_default(server, http):
    out = http.run({"url": server.url("/redirect/3")})
    assert out["status_code"] == 200
    assert out["response"]["path"] == "/json"
    assert [r.path for r in server.requests] == [
        "/redirect/3",
        "/redirect/2",
        "/redirect/1",
        "/json",
    ]


def test_with_follow_redirects_off_the_redirect_itself_is_returned(server, http):
    out = http.run({"url": server.url("/redirect/1"), "follow_redirects": False})
    assert out["status_code"] == 302
    assert out["response_headers"]["location"] == "/json"
    assert len(server.requests) == 1


def test_endless_redirects_fail_without_retry(server, http):
    server.route("/loop", lambda req: Reply(302, "", headers={"Location": "/loop"}))
    err = http.failure({"url": server.url("/loop")})
    assert "too many redirects" in err.message
    assert err.retryable is False


def test_the_api_key_never_follows_a_redirect_to_another_origin(server, http):
    with LocalServer() as other:
        server.route("/away", lambda req: Reply(302, "", headers={"Location": other.url("/json")}))
        server.route("/here", lambda req: Reply(302, "", headers={"Location": "/json"}))
        params = {"api_key": "s3cret", "auth_token": "t0ken"}
        http.run({"url": server.url("/here"), **params})
        http.run({"url": server.url("/away"), **params})
    same_origin = [r for r in server.requests if r.path == "/json"]
    assert same_origin and same_origin[0].headers.get("x-api-key") == "s3cret"
    assert [r.path for r in other.requests] == ["/json"]
    leaked = other.requests[0].headers
    assert leaked.get("x-api-key") is None and leaked.get("authorization") is None


# ---------------------------------------------------------------------------
# bad params


def test_url_without_a_scheme_is_refused_with_a_hint(http):
    err = http.failure({"url": "example.com/api"})
    assert "must start with http:// or https://" in err.message
    assert "did you forget 'http://'" in err.message
    assert err.retryable is False



def test_a_url_or_method_written_out_is_checked_before_the_run() -> None:
    import plait

    check = plait.validate(
        {
            "inputs": {"host": {"type": "string", "default": "example.com"}},
            "nodes": [
                {"id": "a", "type": "http", "params": {"url": "ftp://example.com/x", "method": "FETCH"}},
                {"id": "b", "type": "http", "params": {"url": "example.com/api"}},
                # templates are known at run time only
                {"id": "c", "type": "http", "params": {"url": "${host}/x", "method": "${host}"}},
                {"id": "d", "type": "http", "params": {"url": "https://example.com", "method": "post"}},
            ],
        }
    )
    found = {(p.path, p.message) for p in check.problems}
    assert found == {
        ("nodes[0].params.url", "'url' must start with http:// or https://, got 'ftp://example.com/x'"),
        ("nodes[0].params.method", "unknown HTTP method 'FETCH'; did you mean 'PATCH'?"),
        (
            "nodes[1].params.url",
            "'url' must start with http:// or https://, got 'example.com/api' (did you forget 'http://'?)",
        ),
    }


def test_url_with_a_bad_port_is_an_invalid_request_not_retried(http):
    err = http.failure({"url": "http://localhost:abc/x?key=SECRET"})
    assert "invalid request" in err.message and "abc" in err.message
    assert "SECRET" not in err.message
    assert err.retryable is False


def test_a_url_that_does_not_parse_is_an_invalid_request_not_a_crash(http):
    err = http.failure({"url": "http://[::1/x?key=SECRET"})  # an unclosed IPv6 bracket
    assert "invalid request: the URL is malformed (Invalid IPv6 URL)" in err.message
    assert "SECRET" not in err.message and "ValueError" not in err.message
    assert err.retryable is False


def test_unknown_method_suggests_the_nearest(server, http):
    err = http.failure({"url": server.url("/json"), "method": "GTE"})
    assert "unknown HTTP method 'GTE'" in err.message
    assert "did you mean 'GET'" in err.message
    assert err.retryable is False


def test_json_and_body_together_are_refused(server, http):
    err = http.failure({"url": server.url("/echo"), "json": {"a": 1}, "body": "x"})
    assert "either 'json' or 'body'" in err.message
    assert server.requests == []


def test_non_ascii_header_value_is_a_clear_error(server, http):
    err = http.failure({"url": server.url("/echo"), "auth_token": "tökén"})
    assert "header 'Authorization' has non-ASCII characters" in err.message
    assert "tökén" not in err.message
    assert err.retryable is False


def test_headers_that_are_not_an_object_are_refused(server, http):
    err = http.failure({"url": server.url("/echo"), "headers": ["X-A: 1"]})
    assert "'headers' must be an object" in err.message


def test_non_positive_timeout_is_refused(server, http):
    err = http.failure({"url": server.url("/json"), "timeout": 0})
    assert "'timeout' must be a positive number" in err.message


# ---------------------------------------------------------------------------
# the node as a whole


def test_interface_declares_every_param_with_its_default():
    spec = HttpNode.interface()
    params = {p["name"]: p for p in spec["params"]}
    assert spec["type"] == "http"
    assert params["url"]["required"] is True
    assert set(params) == {
        "url",
        "method",
        "headers",
        "params",
        "json",
        "body",
        "auth_token",
        "api_key",
        "api_key_header",
        "timeout",
        "follow_redirects",
        "max_response_bytes",
    }
    assert params["api_key_header"]["default"] == "X-API-Key"
    assert params["timeout"]["default"] == 30
    assert params["follow_redirects"]["default"] is True
    assert params["max_response_bytes"]["default"] == 50 * 1024 * 1024
    outputs = {o["name"] for o in spec["outputs"]}
    assert {"response", "status_code", "response_headers", "response_time"} <= outputs
    assert {"response_is_base64"} <= outputs
    assert HttpNode.primary_output == "response"


def test_importing_the_node_imports_neither_client():
    code = "import sys, plait.nodes.http; print('httpx' in sys.modules, 'aiohttp' in sys.modules)"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False False"


def test_the_first_wave_of_an_async_batch_waits_for_one_import_of_aiohttp():
    # In a fresh process: fifty tasks wait for the import at once; the one cancelled
    # while it waits leaves the import going for the others, which all get it.
    code = """
import asyncio, sys
from plait.nodes import http

async def main():
    waiters = [asyncio.ensure_future(http._imported()) for _ in range(50)]
    await asyncio.sleep(0)
    shared = len(http._IMPORTS)
    waiters[0].cancel()
    done = await asyncio.gather(*waiters, return_exceptions=True)
    print(shared, sum(r is None for r in done), type(done[0]).__name__,
          "plait.nodes.http_async" in sys.modules, len(http._IMPORTS))

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=plait_env(), check=True
    )
    assert out.stdout.split() == ["1", "49", "CancelledError", "True", "0"]


def imported_by(*args: str, cwd: Path) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "plait", *args],
        capture_output=True,
        text=True,
        env=plait_env(),
        cwd=cwd,
        check=True,
    )
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def test_version_help_and_workflows_without_http_never_import_aiohttp(tmp_path):
    wf = tmp_path / "wf.json"
    wf.write_text(
        json.dumps(
            {
                "nodes": [
                    {
                        "id": "s",
                        "type": "shell",
                        "params": {"command": "echo ${item}"},
                        "batch": {"items": [1, 2, 3], "parallel": True},
                    }
                ]
            }
        )
    )
    for args in (["--version"], ["--help"], ["run", str(wf), "-q"]):
        heavy = {m for m in imported_by(*args, cwd=tmp_path) if m.split(".")[0] in ("aiohttp", "httpx")}
        assert heavy == set(), (args, heavy)


def test_a_run_imports_only_the_client_its_executors_use(server, tmp_path):
    # aiohttp for a parallel batch (auto: async), httpx for a single request and
    # for a batch sent to threads: warming up the other would take the GIL from the run
    def workflow(name: str, batch: dict[str, Any] | None) -> Path:
        node: dict[str, Any] = {"id": "get", "type": "http", "params": {"url": server.url("/json")}}
        if batch is not None:
            node["batch"] = batch
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"nodes": [node]}))
        return path

    parallel = {"items": [1, 2, 3], "parallel": True, "max_concurrent": 3}
    cases = {
        "parallel": (workflow("parallel", parallel), (), "aiohttp"),
        "single": (workflow("single", None), (), "httpx"),
        "threads": (workflow("threads", parallel), ("--executor", "threads"), "httpx"),
    }
    for name, (path, extra, client) in cases.items():
        loaded = imported_by("run", str(path), "-q", "--no-record", *extra, cwd=tmp_path)
        heavy = {m.split(".")[0] for m in loaded} & {"aiohttp", "httpx"}
        assert heavy == {client}, (name, heavy)


def test_parallel_items_on_one_node_get_their_own_results_over_shared_connections(
    server, services
):
    node = HttpNode("get")  # one instance for every item, as in a batch
    threads = Driver(services, "threads")

    def item(i: int) -> dict[str, Any]:
        return threads.run({"url": server.url(f"/item/{i}?delay=0.01")}, node, index=i)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(item, range(100)))
    assert [r["response"] for r in results] == [{"n": i} for i in range(100)]
    assert len(server.requests) == 100
    assert server.connections <= 20  # the pool reuses connections across items


def test_concurrent_tasks_on_the_loop_share_one_session_and_its_connections(server, services):
    node = HttpNode("get")
    on_loop = Driver(services, "async")

    async def batch() -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(20)

        async def item(i: int) -> dict[str, Any]:
            async with limit:
                return await on_loop.run_async(
                    {"url": server.url(f"/item/{i}?delay=0.01")}, node, index=i
                )

        return await asyncio.gather(*(item(i) for i in range(100)))

    results = services.call_async(batch())
    assert [r["response"] for r in results] == [{"n": i} for i in range(100)]
    assert len(server.requests) == 100
    assert server.connections <= 20


def test_items_one_after_another_reuse_one_connection(server, http):
    for _ in range(3):
        http.run({"url": server.url("/json")})
    assert server.connections == 1


def test_a_cookie_one_response_sets_is_not_sent_with_the_next_request(server, http):
    server.route(
        "/login", lambda req: Reply(200, {"ok": True}, headers={"Set-Cookie": "sid=abc123; Path=/"})
    )
    out = http.run({"url": server.url("/login")})
    assert "sid=abc123" in out["response_headers"]["set-cookie"]
    http.run({"url": server.url("/echo")})
    assert "cookie" not in server.requests[-1].headers


def self_signed_certificate(folder: Path) -> tuple[str, str]:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def test_https_is_verified_against_the_ca_bundle_on_both_paths(tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    with LocalServer(tls=(cert, key)) as tls_server:
        url = tls_server.url("/json")
        for path in PATHS:
            untrusted = DirectServices()
            try:
                err = Driver(untrusted, path).failure({"url": url})
            finally:
                untrusted.close()
            assert err.message.startswith(f"could not connect to {url}: "), (path, err.message)
            assert "CERTIFICATE_VERIFY_FAILED" in err.message, err.message
            assert err.retryable is True
        monkeypatch.setenv("SSL_CERT_FILE", cert)  # read when a run makes its TLS context
        for path in PATHS:
            trusted = DirectServices()
            try:
                out = Driver(trusted, path).run({"url": url})
            finally:
                trusted.close()
            assert out["response"]["ok"] is True, path


# ---------------------------------------------------------------------------
# headers across origins


SECRET_HEADERS = {
    "X-Custom-Auth": "custom-SECRET-1",
    "X-Session-Token": "session-SECRET-2",
    "Cookie": "sid=cookie-SECRET-3",
    "X-Request-Id": "trace-SECRET-4",
}
SAFE_HEADERS = {
    "Accept": "application/json",
    "Accept-Language": "fr",
    "User-Agent": "plait-test",
    "Cache-Control": "no-cache",
}


def test_only_safe_headers_follow_a_redirect_to_another_origin(server, http):
    with LocalServer() as other:  # another port: another origin
        server.route("/away", lambda req: Reply(302, "", headers={"Location": other.url("/echo")}))
        server.route("/here", lambda req: Reply(302, "", headers={"Location": "/echo"}))
        params = {
            "headers": {**SECRET_HEADERS, **SAFE_HEADERS},
            "api_key": "key-SECRET-5",
            "auth_token": "bearer-SECRET-6",
        }
        http.run({"url": server.url("/here"), **params})
        out = http.run({"url": server.url("/away"), **params})
    same_origin = server.requests_to("/echo")[0].headers
    for name, value in SECRET_HEADERS.items():
        assert same_origin[name.lower()] == value
    assert same_origin["authorization"] == "Bearer bearer-SECRET-6"
    assert same_origin["x-api-key"] == "key-SECRET-5"

    assert [r.path for r in other.requests] == ["/echo"]
    crossed = other.requests[0].headers
    assert out["response"]["headers"] == crossed
    for name, value in SAFE_HEADERS.items():
        assert crossed[name.lower()] == value
    assert {name.lower() for name in SAFE_HEADERS} <= SAFE_ACROSS_ORIGINS
    leaked = [v for v in crossed.values() if "SECRET" in v]
    assert leaked == []


def test_a_307_keeps_the_body_and_its_type_across_origins_a_303_drops_both(server, http):
    with LocalServer() as other:
        for code in (307, 303):
            server.route(
                f"/moved{code}",
                lambda req, code=code: Reply(code, "", headers={"Location": other.url("/echo")}),
            )
        params = {"json": {"a": 1}, "headers": {"X-Custom-Auth": "SECRET"}}
        kept = http.run({"url": server.url("/moved307"), **params})["response"]
        dropped = http.run({"url": server.url("/moved303"), **params})["response"]
    assert kept["method"] == "POST" and kept["json"] == {"a": 1}
    assert kept["headers"]["content-type"] == "application/json"
    assert "x-custom-auth" not in kept["headers"]
    assert dropped["method"] == "GET" and dropped["body"] == ""
    assert "content-type" not in dropped["headers"]


def test_a_redirect_to_https_on_the_same_host_is_another_origin(services):
    # Nothing speaks TLS on the test servers, so the rule both paths share is asked directly.
    from plait.nodes.http import first_hop, next_hop

    params = with_defaults(HttpNode, {"url": "http://127.0.0.1:8080/a", "auth_token": "t"})
    req = HttpNode("get").prep(ItemContext("get", None, params, services))
    upgraded = next_hop(req, first_hop(req), 301, "https://127.0.0.1:8080/b", 1)
    assert "Authorization" not in upgraded.headers
    assert upgraded.headers["User-Agent"].startswith("plait/")
    same = next_hop(req, first_hop(req), 301, "/b", 1)
    assert same.headers["Authorization"] == "Bearer t"
    assert same.url == "http://127.0.0.1:8080/b"


def test_a_redirect_to_another_scheme_is_refused(server, http):
    server.route("/ftp", lambda req: Reply(302, "", headers={"Location": "ftp://127.0.0.1/x"}))
    err = http.failure({"url": server.url("/ftp")})
    assert "redirected to a URL that is not http or https" in err.message
    assert err.retryable is False


# ---------------------------------------------------------------------------
# the error preview


def test_a_secret_cut_by_the_error_preview_leaks_no_prefix(server, http):
    secret = "tok_" + "S" * 60
    cases = {
        # the 200-character cut falls inside each secret
        "json": ({"detail": "x" * 150, "access_token": secret}, None),
        "form": ("x" * 170 + "&session_id=" + secret, "text/plain"),
        "header": ("y" * 165 + " Authorization: Bearer " + secret, "text/plain"),
        "yaml": ("z" * 180 + "\napi-key: " + secret, "text/plain"),
        "jwt": ("w" * 185 + " eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl", "text/plain"),
    }
    for name, (body, kind) in cases.items():
        server.route(f"/leak/{name}", lambda req, b=body, k=kind: Reply(401, b, content_type=k))
        err = http.failure({"url": server.url(f"/leak/{name}")})
        assert "HTTP 401" in err.message
        assert "***" in err.message, (name, err.message)
        for prefix in ("tok_", "SSSS", "eyJzdWIi", "c2lnbmF0"):
            assert prefix not in err.message, (name, err.message)
        assert err.outputs is not None
        assert err.outputs["response"] == body  # the outputs keep the body as it came


def test_the_preview_keeps_what_is_not_a_secret(server, http):
    body = {"error": "invalid_grant", "author": "ana", "max_tokens": 500, "token_type": "bearer"}
    server.route("/oauth", lambda req: Reply(400, body))
    err = http.failure({"url": server.url("/oauth")})
    assert '"error": "invalid_grant"' in err.message
    assert '"author": "ana"' in err.message
    assert '"max_tokens": 500' in err.message
    assert '"token_type": "***"' in err.message


# ---------------------------------------------------------------------------
# deadlines and cancellation, against a server that dribbles its headers


def test_the_timeout_is_a_total_deadline_while_headers_trickle_in(http):
    # one byte every 50 ms: no read ever waits long, the whole answer takes ~12 s
    with DribbleServer(interval=0.05) as dribble:
        err = http.failure({"url": dribble.url("/"), "timeout": 1})
        assert dribble.requested.is_set() and not dribble.finished.is_set()
    assert "timed out after 1s waiting for the response" in err.message
    assert err.retryable is True


def test_cancelling_the_run_stops_a_request_whose_headers_trickle_in(http):
    with DribbleServer(interval=0.05) as dribble:
        url = dribble.url("/")

        def cancel_when_asked() -> None:
            if dribble.requested.wait(10):
                http.services.cancelled.set()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(cancel_when_asked)
            err = http.failure({"url": url, "timeout": 60})
        assert not dribble.finished.is_set()  # it stopped long before the answer was whole
    # the thread path says so; on the loop the runtime cancels the task
    assert err.message in (f"GET {url} was cancelled", "interrupted")
    assert err.retryable is False


def test_a_connection_that_is_never_accepted_times_out_while_connecting(http):
    # a listening socket whose backlog is full: the SYN is never answered
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):  # fill the accept queue (its size is the kernel's business)
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex(("127.0.0.1", port))
                fillers.append(f)
            err = http.failure({"url": f"http://127.0.0.1:{port}/", "timeout": 0.5})
        finally:
            for f in fillers:
                f.close()
    assert "timed out after 0.5s" in err.message
    assert err.retryable is True


# ---------------------------------------------------------------------------
# through the CLI, on both executors


@pytest.fixture(params=PATHS)
def executor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_plait(
    plait: Any, workflow: Any, wf: dict[str, Any], *args: str
) -> tuple[int, dict[str, Any], str]:
    """(exit code, the --output-format json result, everything printed)."""
    res = plait("run", workflow(wf), *args, "--output-format", "json")
    try:
        result = json.loads(res.stdout)
    except ValueError:
        result = {}
    return res.code, result, res.stdout + res.stderr


def http_workflow(params: dict[str, Any], **node: Any) -> dict[str, Any]:
    """One request as a batch of one item, so that ``--executor`` decides its path
    (a node without a batch always runs in the calling thread)."""
    return {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {"id": "get", "type": "http", "params": params, "batch": {"items": [0]}, **node}
        ],
        "outputs": {
            "response": {"source": "${get.results[0].response}"},
            "status": {"source": "${get.results[0].status_code}"},
        },
    }


def test_cli_get_json_from_a_workflow_input(plait, workflow, server, executor):
    code, result, text = run_plait(
        plait, workflow, http_workflow({"url": "${base}/json"}), f"base={server.base_url}",
        "--executor", executor,
    )
    assert code == 0, text
    assert result["status"] == "success"
    assert result["outputs"]["response"]["ok"] is True
    assert result["outputs"]["status"] == 200


def test_cli_a_node_without_a_batch_takes_the_thread_path(plait, workflow, server):
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [{"id": "get", "type": "http", "params": {"url": "${base}/json"}}],
        "outputs": {"response": {"source": "${get.response}"}},
    }
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["response"]["ok"] is True
    assert server.requests[0].headers["user-agent"].startswith("plait/")


def test_cli_many_behaviours_in_one_batch(plait, workflow, server, executor):
    """One run, one item per behaviour (continue: every item runs and reports)."""
    cases = [
        {"url": "${base}/echo", "method": "POST", "json": {"id": 7, "ok": True}},
        {
            "url": "${base}/echo",
            "headers": {"X-Run": "cli"},
            "auth_token": "tok",
            "api_key": "key",
            "api_key_header": "X-Key",
        },
        {"url": "${base}/echo", "params": {"q": "plait", "page": 2}},
        {"url": "${base}/text?body=hi"},
        {"url": "${base}/binary?size=100"},
        {"url": "${base}/redirect/2"},
        {"url": "${base}/status/404?body=no+such+thing"},
        {"url": "${base}/large?bytes=100000", "max_response_bytes": 1000},
        {"url": "${base}/delay/3", "timeout": 0.3},
    ]
    keys = sorted({k for case in cases for k in case})
    for case in cases:  # a key an item does not set is null, which every param takes as unset
        case.update({k: None for k in keys if k not in case})
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {key: f"${{item.{key}}}" for key in keys},
                "batch": {
                    "items": cases,
                    "parallel": True,
                    "max_concurrent": 9,
                    "error_handling": "continue",
                },
            }
        ],
        "outputs": {"results": {"source": "${get.results}"}},
    }
    code, result, text = run_plait(
        plait, workflow, wf, f"base={server.base_url}", "--executor", executor
    )
    assert code == 0, text
    r = result["outputs"]["results"]
    assert r[0]["response"]["json"] == {"id": 7, "ok": True}
    assert r[0]["response"]["method"] == "POST"
    echoed = r[1]["response"]["headers"]
    # -o json masks values under secret-looking names; what the server received is in its log
    assert (echoed["x-run"], echoed["authorization"], echoed["x-key"]) == ("cli", "***", "***")
    got = next(req for req in server.requests if req.headers.get("x-run") == "cli")
    assert (got.headers["authorization"], got.headers["x-key"]) == ("Bearer tok", "key")
    assert r[2]["response"]["query"] == {"q": "plait", "page": "2"}
    assert r[3]["response"] == "hi"
    assert base64.b64decode(r[4]["response"]) == binary_payload(100)
    assert r[4]["response_is_base64"] is True
    assert r[5]["response"]["path"] == "/json"
    assert "HTTP 404 Not Found" in r[6]["error"] and "no such thing" in r[6]["error"]
    assert r[6]["status_code"] == 404
    assert "max_response_bytes" in r[7]["error"]
    assert "timed out after 0.3s" in r[8]["error"]


def test_cli_non_2xx_fails_the_run_with_status_and_body(plait, workflow, server, executor):
    wf = http_workflow({"url": "${base}/status/404?body=no+such+thing"})
    code, result, text = run_plait(
        plait, workflow, wf, f"base={server.base_url}", "--executor", executor
    )
    assert code == 1
    assert result["status"] != "success"
    assert "HTTP 404" in text
    assert "no such thing" in text


def test_cli_error_edge_handler_reads_the_status_code(plait, workflow, server, executor):
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/status/418"},
                "batch": {"items": [0]},
            },
            {
                "id": "handle",
                "type": "echo",
                "params": {"status": "${get.results[0].status_code}"},
            },
        ],
        "edges": [{"from": "get", "to": "handle", "action": "error"}],
        "outputs": {"handled": {"source": "${handle.status}"}},
    }
    code, result, text = run_plait(
        plait, workflow, wf, f"base={server.base_url}", "--executor", executor
    )
    assert code == 0, text
    assert result["outputs"]["handled"] == 418


def test_cli_node_retry_honours_retry_after(plait, workflow, server):
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/flaky/node?fail=1&status=429&retry_after=1"},
                "retry": {"max": 3, "wait": 0},
            }
        ],
        "outputs": {"response": {"source": "${get.response}"}},
    }
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["response"] == {"ok": True, "attempt": 2}
    first, second = server.requests_to("/flaky/node")
    assert second.time - first.time >= 0.9  # waited as Retry-After asked, not retry_wait=0


def test_cli_batch_retry_honours_retry_after(plait, workflow, server, executor):
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/flaky/${item}?fail=1&status=503&retry_after=1"},
                "batch": {
                    "items": ["a", "b", "c"],
                    "parallel": True,
                    "max_retries": 3,
                    "retry_wait": 0,
                },
            }
        ],
        "outputs": {"results": {"source": "${get.results}"}},
    }
    code, result, text = run_plait(
        plait, workflow, wf, f"base={server.base_url}", "--executor", executor
    )
    assert code == 0, text
    results = result["outputs"]["results"]
    assert [r["response"]["attempt"] for r in results] == [2, 2, 2]
    for key in "abc":
        first, second = server.requests_to(f"/flaky/{key}")
        assert second.time - first.time >= 0.9


def test_cli_parallel_batch_of_100_keeps_input_order_and_reuses_connections(
    plait, workflow, server, executor
):
    # within each window of ten, later items answer sooner: finishing order is not input order
    items = [{"n": i, "delay": (9 - i % 10) * 0.005} for i in range(100)]
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/item/${item.n}?delay=${item.delay}"},
                "batch": {"items": items, "parallel": True, "max_concurrent": 10},
            }
        ],
        "outputs": {"results": {"source": "${get.results}"}},
    }
    code, result, text = run_plait(
        plait, workflow, wf, f"base={server.base_url}", "--executor", executor
    )
    assert code == 0, text
    results = result["outputs"]["results"]
    assert [r["response"]["n"] for r in results] == list(range(100))
    assert len(server.requests_to("/item/")) == 100
    assert server.connections <= 20


def test_cli_batch_of_sub_workflows_reuses_clients_instead_of_opening_new_ones(
    plait, workflow, server, executor
):
    # Each child runs its own parallel batch (on fresh worker threads on the
    # thread path); connections are reused across children, not opened anew.
    child = {
        "inputs": {"base": {"type": "string"}, "n": {"type": "integer"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/item/${n}"},
                "batch": {
                    "items": [1, 2, 3, 4, 5],
                    "parallel": True,
                    "max_concurrent": 5,
                    "executor": executor,  # a child does not inherit --executor
                },
            }
        ],
        "outputs": {"count": {"source": "${get.success_count}"}},
    }
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {
                "id": "each",
                "type": "workflow",
                "params": {"workflow_ir": child, "inputs": {"base": "${base}", "n": "${item}"}},
                "batch": {"items": list(range(40)), "parallel": True, "max_concurrent": 4},
            }
        ],
        "outputs": {"results": {"source": "${each.results}"}},
    }
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert [r["count"] for r in result["outputs"]["results"]] == [5] * 40
    assert len(server.requests_to("/item/")) == 200
    # 4 children at once, 5 requests each; a client per thread ever started would be 200
    assert server.connections <= 60, server.connections


@pytest.mark.parametrize(
    ("shape", "sig"),
    [
        ("node", signal.SIGTERM),
        ("threads", signal.SIGTERM),
        ("async", signal.SIGTERM),
        ("async", signal.SIGINT),
    ],
    ids=["node-SIGTERM", "threads-SIGTERM", "async-SIGTERM", "async-SIGINT"],
)
def test_a_signal_stops_a_request_whose_headers_trickle_in(tmp_path, shape, sig):
    with DribbleServer(interval=0.05, pad=400) as dribble:  # ~25 s to answer
        node: dict[str, Any] = {"id": "get", "type": "http", "params": {"url": dribble.url("/"), "timeout": 60}}
        args: list[str] = []
        if shape != "node":
            node["batch"] = {"items": [0, 1], "parallel": True}
            args = ["--executor", shape]
        path = tmp_path / "wf.json"
        path.write_text(json.dumps({"nodes": [node]}))
        proc = popen_cli("run", str(path), "-q", *args, cwd=tmp_path)
        try:
            assert dribble.requested.wait(30), "the request never arrived"
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not dribble.finished.is_set()
    assert proc.returncode == 130, stderr
