"""The http node, against a real server on 127.0.0.1.

The first half drives the node the way the runtime does (``prep`` / ``exec`` /
``post`` with an ``ItemContext``), with the one piece the runtime lends it — the
shared ``httpx.Client`` — provided by the runtime's real ``RunServices``. The second
half runs real workflows through ``python -m plait run``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import direct
from direct import DirectServices
from plait.nodes.base import NodeError
from plait.nodes.http import HttpNode
from plait.runtime.services import RunServices
from servers import LocalServer, Reply, binary_payload, serve

server = pytest.fixture(serve)



@pytest.fixture
def services() -> Iterator[DirectServices]:
    s = DirectServices()
    yield s
    s.close()





def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------
# requests and responses



def run_item(
    services: RunServices,
    params: dict[str, Any],
    node: HttpNode | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    return direct.run_item(node or HttpNode("get"), services, params, index)


def failure(services: RunServices, params: dict[str, Any], node: HttpNode | None = None) -> NodeError:
    return direct.failure(node or HttpNode("get"), services, params)


def test_get_returns_decoded_json_status_headers_and_time(server, services):
    out = run_item(services, {"url": server.url("/json")})
    assert out["response"] == {"ok": True, "path": "/json", "query": {}}
    assert out["status_code"] == 200
    assert out["response_headers"]["content-type"] == "application/json"
    assert out["response_is_base64"] is False
    assert isinstance(out["response_time"], float) and out["response_time"] >= 0
    assert server.requests[0].method == "GET"


def test_json_param_is_posted_as_json_and_echoed(server, services):
    payload = {"name": "plait", "tags": ["a", "b"], "n": 3, "none": None}
    out = run_item(services, {"url": server.url("/echo"), "json": payload})
    assert out["response"]["method"] == "POST"  # a body without a method means POST
    assert out["response"]["json"] == payload
    assert out["response"]["headers"]["content-type"] == "application/json"


def test_json_text_from_another_node_is_sent_as_the_value_it_holds(server, services):
    out = run_item(services, {"url": server.url("/echo"), "json": '{"from": "stdout"}\n'})
    assert out["response"]["json"] == {"from": "stdout"}
    out = run_item(services, {"url": server.url("/echo"), "json": "just text"})
    assert out["response"]["json"] == "just text"


def test_explicit_method_wins_over_the_post_default(server, services):
    out = run_item(services, {"url": server.url("/echo"), "method": "put", "json": {"a": 1}})
    assert out["response"]["method"] == "PUT"
    out = run_item(services, {"url": server.url("/echo"), "method": "DELETE"})
    assert out["response"]["method"] == "DELETE"


def test_string_body_is_sent_verbatim(server, services):
    out = run_item(
        services,
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


def test_object_body_is_sent_as_json_like_pflow(server, services):
    out = run_item(services, {"url": server.url("/echo"), "body": {"k": [1, 2]}})
    assert out["response"]["method"] == "POST"
    assert out["response"]["json"] == {"k": [1, 2]}


def test_headers_auth_token_and_api_key_reach_the_server(server, services):
    run_item(
        services,
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


def test_api_key_goes_in_the_header_named_by_api_key_header(server, services):
    run_item(
        services,
        {"url": server.url("/echo"), "api_key": "k-9", "api_key_header": "Ocp-Apim-Key"},
    )
    headers = server.requests[-1].headers
    assert headers["ocp-apim-key"] == "k-9"
    assert "x-api-key" not in headers


def test_auth_token_replaces_an_authorization_header_in_any_case(server, services):
    run_item(
        services,
        {"url": server.url("/echo"), "headers": {"authorization": "Basic old"}, "auth_token": "t"},
    )
    assert server.requests[-1].headers["authorization"] == "Bearer t"


def test_query_params_are_merged_into_the_url_query(server, services):
    out = run_item(
        services,
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


def test_text_response_is_a_string(server, services):
    out = run_item(services, {"url": server.url("/text?body=plain+words")})
    assert out["response"] == "plain words"
    assert out["response_is_base64"] is False


def test_text_response_is_decoded_with_its_charset(server, services):
    server.route(
        "/latin1",
        lambda req: Reply(
            200, "café".encode("latin-1"), content_type="text/plain; charset=iso-8859-1"
        ),
    )
    out = run_item(services, {"url": server.url("/latin1")})
    assert out["response"] == "café"


def test_vendor_json_content_types_are_decoded(server, services):
    with pytest.raises(NodeError) as info:
        run_item(services, {"url": server.url("/problem")})
    assert info.value.outputs is not None
    assert info.value.outputs["response"]["title"] == "Bad input"


def test_binary_response_comes_back_as_base64_with_a_flag(server, services):
    out = run_item(services, {"url": server.url("/binary?size=3000")})
    assert out["response_is_base64"] is True
    assert out["response_is_binary"] is True
    assert base64.b64decode(out["response"]) == binary_payload(3000)


def test_mislabelled_json_falls_back_to_text(server, services):
    out = run_item(services, {"url": server.url("/text?body=not+json&type=application/json")})
    assert out["response"] == "not json"


def test_head_and_no_content_responses_have_empty_bodies(server, services):
    out = run_item(services, {"url": server.url("/text"), "method": "HEAD"})
    assert out["status_code"] == 200
    assert out["response"] == ""
    out = run_item(services, {"url": server.url("/json"), "method": "HEAD"})
    assert out["response"] is None  # no JSON value at all
    out = run_item(services, {"url": server.url("/nocontent"), "method": "DELETE"})
    assert out["status_code"] == 204
    assert out["response"] == ""


# ---------------------------------------------------------------------------
# failures


def test_non_2xx_fails_with_status_and_body_start_and_keeps_outputs(server, services):
    err = failure(services, {"url": server.url("/status/404")})
    assert "HTTP 404 Not Found" in err.message
    assert "status 404" in err.message  # the start of the body
    assert err.retryable is False
    assert err.outputs is not None
    assert err.outputs["status_code"] == 404
    assert err.outputs["response"]["error"] == "status 404"


def test_error_message_shows_only_the_first_200_chars_of_a_long_body(server, services):
    long_body = "E" * 150 + "F" * 500
    err = failure(services, {"url": server.url(f"/status/400?body={long_body}")})
    assert "E" * 150 + "F" * 50 + "..." in err.message
    assert "F" * 51 not in err.message
    assert err.outputs is not None and err.outputs["response"] == long_body


def test_error_message_hides_the_query_string_and_credentials(server, services):
    err = failure(
        services,
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
def test_client_errors_are_not_retryable(server, services, status):
    err = failure(services, {"url": server.url(f"/status/{status}")})
    assert err.retryable is False
    assert err.retry_after is None


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_rate_limits_and_server_errors_are_retryable(server, services, status):
    err = failure(services, {"url": server.url(f"/status/{status}")})
    assert err.retryable is True
    assert f"HTTP {status}" in err.message


def test_retry_after_seconds_is_passed_on(server, services):
    err = failure(services, {"url": server.url("/flaky/a?fail=1&status=503&retry_after=7")})
    assert err.retryable is True
    assert err.retry_after == 7.0


def test_retry_after_http_date_is_turned_into_seconds(server, services):
    err = failure(services, {"url": server.url("/flaky/b?fail=1&status=429&retry_after=30&date=1")})
    assert err.retry_after is not None
    assert 25 <= err.retry_after <= 31  # HTTP dates have one-second resolution


def test_flaky_endpoint_succeeds_once_it_recovers(server, services):
    url = server.url("/flaky/c?fail=2&retry_after=0")
    failure(services, {"url": url})
    failure(services, {"url": url})
    assert run_item(services, {"url": url})["response"] == {"ok": True, "attempt": 3}


def test_connection_refused_is_a_clear_retryable_error(services):
    port = unused_port()
    err = failure(services, {"url": f"http://127.0.0.1:{port}/x"})
    assert err.message.startswith(f"could not connect to http://127.0.0.1:{port}/x: ")
    assert err.retryable is True


def test_slow_server_times_out_with_the_limit_in_the_message(server, services):
    err = failure(services, {"url": server.url("/delay/3"), "timeout": 0.3})
    assert "timed out after 0.3s" in err.message
    assert err.retryable is True


def test_timeout_covers_a_body_that_trickles_in(server, services):
    # each chunk arrives well within the timeout; the whole body does not
    err = failure(services, {"url": server.url("/drip?chunks=20&interval=0.1"), "timeout": 0.5})
    assert "timed out after 0.5s while reading the response body" in err.message


def test_response_over_the_size_cap_fails_clearly(server, services):
    err = failure(services, {"url": server.url("/large?bytes=5000"), "max_response_bytes": 1000})
    assert "larger than max_response_bytes (1000 bytes)" in err.message
    assert "Content-Length is 5000" in err.message
    assert err.retryable is False


def test_size_cap_applies_to_streamed_bodies_without_a_length(server, services):
    err = failure(
        services,
        {"url": server.url("/large?bytes=2000000&chunked=1"), "max_response_bytes": 500_000},
    )
    assert "larger than max_response_bytes (500000 bytes)" in err.message
    assert "stopped reading after" in err.message


def test_size_cap_counts_decompressed_bytes(server, services):
    err = failure(
        services, {"url": server.url("/gzip?bytes=3000000"), "max_response_bytes": 1_000_000}
    )
    assert "larger than max_response_bytes" in err.message


def test_body_within_the_cap_is_returned_whole(server, services):
    out = run_item(services, {"url": server.url("/large?bytes=300000&chunked=1")})
    assert out["response"] == "x" * 300000


# ---------------------------------------------------------------------------
# redirects


def test_redirects_are_followed_by_default(server, services):
    out = run_item(services, {"url": server.url("/redirect/3")})
    assert out["status_code"] == 200
    assert out["response"]["path"] == "/json"
    assert [r.path for r in server.requests] == [
        "/redirect/3",
        "/redirect/2",
        "/redirect/1",
        "/json",
    ]


def test_with_follow_redirects_off_the_redirect_itself_is_returned(server, services):
    out = run_item(services, {"url": server.url("/redirect/1"), "follow_redirects": False})
    assert out["status_code"] == 302
    assert out["response_headers"]["location"] == "/json"
    assert len(server.requests) == 1


def test_endless_redirects_fail_without_retry(server, services):
    server.route("/loop", lambda req: Reply(302, "", headers={"Location": "/loop"}))
    err = failure(services, {"url": server.url("/loop")})
    assert "too many redirects" in err.message
    assert err.retryable is False


def test_the_api_key_never_follows_a_redirect_to_another_origin(server, services):
    with LocalServer() as other:
        server.route("/away", lambda req: Reply(302, "", headers={"Location": other.url("/json")}))
        server.route("/here", lambda req: Reply(302, "", headers={"Location": "/json"}))
        params = {"api_key": "s3cret", "auth_token": "t0ken"}
        run_item(services, {"url": server.url("/here"), **params})
        run_item(services, {"url": server.url("/away"), **params})
    same_origin = [r for r in server.requests if r.path == "/json"]
    assert same_origin and same_origin[0].headers.get("x-api-key") == "s3cret"
    assert [r.path for r in other.requests] == ["/json"]
    leaked = other.requests[0].headers
    assert leaked.get("x-api-key") is None and leaked.get("authorization") is None


# ---------------------------------------------------------------------------
# bad params


def test_url_without_a_scheme_is_refused_with_a_hint(services):
    err = failure(services, {"url": "example.com/api"})
    assert "must start with http:// or https://" in err.message
    assert "did you forget 'http://'" in err.message
    assert err.retryable is False



def test_url_with_a_bad_port_is_an_invalid_request_not_retried(services):
    err = failure(services, {"url": "http://localhost:abc/x?key=SECRET"})
    assert "invalid request" in err.message and "abc" in err.message
    assert "SECRET" not in err.message
    assert err.retryable is False


def test_unknown_method_suggests_the_nearest(server, services):
    err = failure(services, {"url": server.url("/json"), "method": "GTE"})
    assert "unknown HTTP method 'GTE'" in err.message
    assert "did you mean 'GET'" in err.message
    assert err.retryable is False


def test_json_and_body_together_are_refused(server, services):
    err = failure(services, {"url": server.url("/echo"), "json": {"a": 1}, "body": "x"})
    assert "either 'json' or 'body'" in err.message
    assert server.requests == []


def test_non_ascii_header_value_is_a_clear_error(server, services):
    err = failure(services, {"url": server.url("/echo"), "auth_token": "tökén"})
    assert "header 'Authorization' has non-ASCII characters" in err.message
    assert "tökén" not in err.message
    assert err.retryable is False


def test_headers_that_are_not_an_object_are_refused(server, services):
    err = failure(services, {"url": server.url("/echo"), "headers": ["X-A: 1"]})
    assert "'headers' must be an object" in err.message


def test_non_positive_timeout_is_refused(server, services):
    err = failure(services, {"url": server.url("/json"), "timeout": 0})
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


def test_importing_the_node_does_not_import_httpx():
    code = "import sys, plait.nodes.http; print('httpx' in sys.modules)"
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "False"


def test_parallel_items_on_one_node_get_their_own_results_over_shared_connections(server, services):
    node = HttpNode("get")  # one instance for every item, as in a batch

    def item(i: int) -> dict[str, Any]:
        return run_item(services, {"url": server.url(f"/item/{i}?delay=0.01")}, node, index=i)

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(item, range(100)))
    assert [r["response"] for r in results] == [{"n": i} for i in range(100)]
    assert len(server.requests) == 100
    assert server.connections <= 20  # the pool reuses connections across items


def test_items_on_one_thread_reuse_one_connection(server, services):
    for _ in range(3):
        run_item(services, {"url": server.url("/json")})
    assert server.connections == 1


# ---------------------------------------------------------------------------
# through the CLI


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
    return {
        "inputs": {"base": {"type": "string"}},
        "nodes": [{"id": "get", "type": "http", "params": params, **node}],
        "outputs": {
            "response": {"source": "${get.response}"},
            "status": {"source": "${get.status_code}"},
        },
    }


def test_cli_get_json_from_a_workflow_input(plait, workflow, server):
    code, result, text = run_plait(
        plait, workflow, http_workflow({"url": "${base}/json"}), f"base={server.base_url}"
    )
    assert code == 0, text
    assert result["status"] == "success"
    assert result["outputs"]["response"]["ok"] is True
    assert result["outputs"]["status"] == 200


def test_cli_post_json_body_is_echoed(plait, workflow, server):
    wf = http_workflow({"url": "${base}/echo", "method": "POST", "json": {"id": 7, "ok": True}})
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["response"]["json"] == {"id": 7, "ok": True}


def test_cli_headers_auth_and_api_key_reach_the_server(plait, workflow, server):
    wf = http_workflow(
        {
            "url": "${base}/echo",
            "headers": {"X-Run": "cli"},
            "auth_token": "tok",
            "api_key": "key",
            "api_key_header": "X-Key",
        }
    )
    code, _, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    headers = server.requests[-1].headers
    assert (headers["x-run"], headers["authorization"], headers["x-key"]) == (
        "cli",
        "Bearer tok",
        "key",
    )


def test_cli_query_params(plait, workflow, server):
    wf = http_workflow({"url": "${base}/echo", "params": {"q": "plait", "page": 2}})
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["response"]["query"] == {"q": "plait", "page": "2"}


def test_cli_text_and_binary_responses(plait, workflow, server):
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {"id": "text", "type": "http", "params": {"url": "${base}/text?body=hi"}},
            {"id": "bin", "type": "http", "params": {"url": "${base}/binary?size=100"}},
        ],
        "outputs": {
            "text": {"source": "${text.response}"},
            "bin": {"source": "${bin.response}"},
            "is_b64": {"source": "${bin.response_is_base64}"},
        },
    }
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["text"] == "hi"
    assert base64.b64decode(result["outputs"]["bin"]) == binary_payload(100)
    assert result["outputs"]["is_b64"] is True


def test_cli_non_2xx_fails_the_run_with_status_and_body(plait, workflow, server):
    wf = http_workflow({"url": "${base}/status/404?body=no+such+thing"})
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 1
    assert result["status"] != "success"
    assert "HTTP 404" in text
    assert "no such thing" in text


def test_cli_error_edge_handler_reads_the_status_code(plait, workflow, server):
    wf = {
        "inputs": {"base": {"type": "string"}},
        "nodes": [
            {"id": "get", "type": "http", "params": {"url": "${base}/status/418"}},
            {
                "id": "handle",
                "type": "echo",
                "params": {"status": "${get.status_code}", "body": "${get.response}"},
            },
        ],
        "edges": [{"from": "get", "to": "handle", "action": "error"}],
        "outputs": {"handled": {"source": "${handle.status}"}},
    }
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["handled"] == 418


def test_cli_node_retry_honours_retry_after(plait, workflow, server):
    wf = http_workflow(
        {"url": "${base}/flaky/node?fail=1&status=429&retry_after=1"},
        retry={"max": 3, "wait": 0},
    )
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["response"] == {"ok": True, "attempt": 2}
    first, second = server.requests_to("/flaky/node")
    assert second.time - first.time >= 0.9  # waited as Retry-After asked, not retry_wait=0


def test_cli_batch_retry_honours_retry_after(plait, workflow, server):
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
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    results = result["outputs"]["results"]
    assert [r["response"]["attempt"] for r in results] == [2, 2, 2]
    for key in "abc":
        first, second = server.requests_to(f"/flaky/{key}")
        assert second.time - first.time >= 0.9


def test_cli_size_cap_fails_the_run(plait, workflow, server):
    wf = http_workflow({"url": "${base}/large?bytes=100000", "max_response_bytes": 1000})
    code, _, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 1
    assert "max_response_bytes" in text


def test_cli_timeout_fails_the_run(plait, workflow, server):
    wf = http_workflow({"url": "${base}/delay/3", "timeout": 0.3})
    code, _, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 1
    assert "timed out after 0.3s" in text


def test_cli_follows_redirects(plait, workflow, server):
    wf = http_workflow({"url": "${base}/redirect/2"})
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    assert result["outputs"]["response"]["path"] == "/json"


def test_cli_parallel_batch_of_100_keeps_input_order_and_reuses_connections(
    plait, workflow, server
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
    code, result, text = run_plait(plait, workflow, wf, f"base={server.base_url}")
    assert code == 0, text
    results = result["outputs"]["results"]
    assert [r["response"]["n"] for r in results] == list(range(100))
    assert len(server.requests_to("/item/")) == 100
    assert server.connections < 100


def test_cli_batch_of_sub_workflows_reuses_clients_instead_of_opening_new_ones(
    plait, workflow, server
):
    # Each child runs its own parallel batch on fresh worker threads; the
    # clients (and their open sockets) of the threads that ended are reused.
    child = {
        "inputs": {"base": {"type": "string"}, "n": {"type": "integer"}},
        "nodes": [
            {
                "id": "get",
                "type": "http",
                "params": {"url": "${base}/item/${n}"},
                "batch": {"items": [1, 2, 3, 4, 5], "parallel": True, "max_concurrent": 5},
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
    # 4 children at once, 5 threads each; a client per thread ever started would be 200
    assert server.connections <= 60, server.connections
