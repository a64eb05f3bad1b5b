"""The llm node, through the real ``llm`` library, against a real local server.

``tests/openai_server.py`` is an OpenAI-compatible chat server on 127.0.0.1;
each test gets its own ``LLM_USER_PATH`` in which the model ``local-test`` of
``llm``'s OpenAI plugin points at it. The offline ``echo`` model of
``llm-echo`` needs nothing at all.

Every item test runs on both paths (the ``path`` fixture): ``sync`` is
``exec`` (llm and the openai client), ``async`` is ``exec_async`` on the run's
event loop (aiohttp for OpenAI chat models, ``exec`` in a thread for the
others), with the runtime's real services. The CLI tests at the end run whole
workflows, their batches on the ``threads`` and on the ``async`` executor.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from direct import DirectServices, with_defaults
from openai_server import OpenAIServer, write_llm_config
from plait.nodes.base import ItemContext, NodeError, Usage
from plait.nodes.llm import LlmNode

PATHS = ("sync", "async")
EXECUTORS = ("threads", "async")


class Services(DirectServices):
    """The real run services, also keeping what the node tells the limiter, and
    pricing usage the way the runtime's price table will (a fixed price per
    token when ``price`` is set)."""

    def __init__(self, price: float | None = None) -> None:
        super().__init__()
        self.price = price
        self.rates: list[dict[str, str]] = []

    def observe_rate(self, ctx: ItemContext, headers: Any) -> None:
        self.rates.append(dict(headers))

    def record_usage(self, ctx: ItemContext, usage: Usage) -> Usage:
        recorded = super().record_usage(ctx, usage)
        if self.price is not None and recorded.cost_usd is None:
            recorded = replace(recorded, cost_usd=(usage.input_tokens + usage.output_tokens) * self.price)
        return recorded


@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty llm configuration directory of this test's own (no keys, no models)."""
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.delenv("PLAIT_LLM_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return home


@pytest.fixture
def server(llm_home: Path) -> Iterator[OpenAIServer]:
    """The local server, registered in llm as the model ``local-test``."""
    with OpenAIServer() as srv:
        write_llm_config(llm_home, srv.base_url)
        yield srv


@pytest.fixture
def services() -> Iterator[Services]:
    svc = Services()
    yield svc
    svc.close()  # the run's event loop and aiohttp session, when the async path made them


@pytest.fixture(params=PATHS)
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Ask:
    """One item of an llm node, the way the runtime runs it, on one path."""

    def __init__(self, services: Services, path: str) -> None:
        self.services = services
        self.path = path
        self.node = LlmNode("ask")

    def __call__(self, params: dict[str, Any], index: int | None = None) -> dict[str, Any]:
        ctx = ItemContext("ask", index, with_defaults(LlmNode, params), self.services)
        prep = self.node.prep(ctx)
        if self.path == "async":
            out = self.services.call_async(self.node.exec_async(prep))
        else:
            out = self.node.exec(prep)
        self.node.post(ctx, prep, out)
        assert ctx.outputs is not None
        return ctx.outputs

    def fails(self, params: dict[str, Any]) -> NodeError:
        with pytest.raises(NodeError) as info:
            self(params)
        return info.value


@pytest.fixture
def ask(services: Services, path: str) -> Ask:
    return Ask(services, path)


# ---------------------------------------------------------------------------
# completions


def test_response_is_the_models_text_with_its_token_usage(server, ask):
    out = ask({"prompt": "Say hello", "model": "local-test"})

    assert out == {
        "response": "Hello from the local model",
        "llm_usage": {"model": "local-test", "input_tokens": 11, "output_tokens": 7, "cost_usd": None},
    }
    assert server.requests[-1].prompt == "Say hello"
    assert server.requests[-1].headers["authorization"] == "Bearer sk-local-test"


def test_every_call_is_recorded_with_node_index_model_and_tokens(server, ask, services):
    ask({"prompt": "one", "model": "local-test"}, index=4)

    assert services.calls == [("ask", 4, "local-test", 11, 7)]


def test_the_cost_the_runtime_puts_on_the_usage_is_the_items_cost(server, path):
    priced = Services(price=0.5)
    try:
        out = Ask(priced, path)({"prompt": "hi", "model": "local-test"})
    finally:
        priced.close()

    assert out["llm_usage"]["cost_usd"] == (11 + 7) * 0.5


def test_cached_prompt_tokens_are_reported_when_the_provider_has_them(server, ask, services):
    server.usage = {"prompt_tokens": 120, "completion_tokens": 5, "cached_tokens": 100}

    out = ask({"prompt": "hi", "model": "local-test"})

    assert out["llm_usage"]["cached_tokens"] == 100
    assert out["llm_usage"]["input_tokens"] == 120
    assert services.ledger.total()["cached_tokens"] == 100


def test_system_temperature_and_max_tokens_reach_the_model(server, ask):
    ask(
        {
            "prompt": "Name a colour",
            "system": "Answer in one word.",
            "model": "local-test",
            "temperature": 0.2,
            "max_tokens": 5,
        }
    )

    request = server.requests[-1]
    assert request.model == "local-test"
    assert request.system == "Answer in one word."
    assert request.prompt == "Name a colour"
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 5


def test_options_reach_the_model_as_llm_passes_them(server, ask):
    ask({"prompt": "hi", "model": "local-test", "options": {"top_p": 0.5, "seed": 7, "stop": "END"}})

    body = server.requests[-1].body
    assert (body["top_p"], body["seed"], body["stop"]) == (0.5, 7, "END")


def test_each_path_sends_the_body_llms_plugin_builds(server, ask, path):
    ask({"prompt": "hi", "system": "terse", "model": "local-test", "max_tokens": 9})

    body = server.requests[-1].body
    assert body["model"] == "local-test"
    assert body["messages"] == [{"role": "system", "content": "terse"}, {"role": "user", "content": "hi"}]
    assert body["max_tokens"] == 9
    # the sync path streams through the openai client; the async path asks for one JSON body
    assert body["stream"] is (path == "sync")
    assert ("stream_options" in body) is (path == "sync")


def test_unset_options_are_not_sent(server, ask):
    ask({"prompt": "hi", "model": "local-test"})

    body = server.requests[-1].body
    assert "temperature" not in body
    assert "max_tokens" not in body
    assert server.requests[-1].system is None


def test_a_prompt_that_is_data_is_sent_as_json(server, ask):
    ask({"prompt": {"task": "summarise", "items": [1, 2]}, "model": "local-test"})

    assert json.loads(server.requests[-1].prompt) == {"task": "summarise", "items": [1, 2]}


def test_a_model_that_reports_no_usage_counts_zero_tokens(server, ask, services):
    server.report_no_usage()

    out = ask({"prompt": "hi", "model": "local-test"})

    assert out["llm_usage"] == {"model": "local-test", "input_tokens": 0, "output_tokens": 0, "cost_usd": None}
    assert services.calls == [("ask", None, "local-test", 0, 0)]


def test_an_alias_reports_the_models_real_id(server, ask, llm_home):
    (llm_home / "aliases.json").write_text(json.dumps({"mine": "local-test"}))

    out = ask({"prompt": "hi", "model": "mine"})

    assert out["llm_usage"]["model"] == "local-test"


def test_the_limiter_hears_the_providers_rate_limit_headers(server, ask, services):
    server.enforce(rpm=600, tpm=100_000)

    ask({"prompt": "hi", "model": "local-test"})

    assert len(services.rates) == 1
    seen = services.rates[0]
    assert seen["x-ratelimit-limit-requests"] == "600"
    assert int(seen["x-ratelimit-remaining-requests"]) == 599
    assert "x-ratelimit-reset-tokens" in seen
    assert all(name.startswith("x-ratelimit-") for name in seen)


# ---------------------------------------------------------------------------
# structured output


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_schema_returns_the_answer_parsed_as_an_object(server, ask):
    server.reply = '{"name": "Ada", "age": 36}'

    out = ask({"prompt": "Who?", "model": "local-test", "schema": PERSON})

    assert out["response"] == {"name": "Ada", "age": 36}
    assert server.requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": PERSON},
    }


def test_schema_answer_in_a_code_fence_is_still_parsed(server, ask):
    server.reply = '```json\n{"name": "Ada", "age": 36}\n```'

    out = ask({"prompt": "Who?", "model": "local-test", "schema": PERSON})

    assert out["response"] == {"name": "Ada", "age": 36}


def test_schema_answer_that_is_not_json_fails_keeping_the_text(server, ask, services):
    server.reply = "Sorry, I cannot do that."

    err = ask.fails({"prompt": "Who?", "model": "local-test", "schema": PERSON})

    assert "not JSON" in err.message
    assert "Sorry, I cannot do that." in err.message
    assert err.retryable  # the next answer may well be JSON
    assert err.outputs is not None
    assert err.outputs["response"] == "Sorry, I cannot do that."
    # the call happened and cost tokens, so it counts
    assert services.calls == [("ask", None, "local-test", 11, 7)]


@pytest.mark.parametrize(
    ("schema", "answer", "where"),
    [
        ({"type": "object", "properties": {"label": {"type": "string"}}}, {"label": 42}, "at $.label: 42 is not of type 'string'"),
        (PERSON, {"name": "Ada"}, "at $: 'age' is a required property"),
        (
            {"type": "object", "properties": {"rows": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}}}},
            {"rows": [{"n": 1}, {"n": "two"}]},
            "at $.rows[1].n: 'two' is not of type 'integer'",
        ),
        ({"type": "object", "properties": {"label": {"enum": ["positive", "negative"]}}}, {"label": "meh"}, "at $.label: 'meh' is not one of"),
    ],
)
def test_json_that_does_not_match_the_schema_fails_naming_the_path(server, ask, services, schema, answer, where):
    server.reply = json.dumps(answer)

    err = ask.fails({"prompt": "Label it", "model": "local-test", "schema": schema})

    assert "does not match 'schema'" in err.message
    assert where in err.message
    assert err.retryable  # another answer may fit
    assert err.outputs is not None and err.outputs["response"] == answer
    assert len(services.calls) == 1


def test_schema_with_a_model_that_cannot_do_it_is_a_clear_error(llm_home, ask):
    err = ask.fails({"prompt": "Who?", "model": "echo", "schema": PERSON})

    assert "model 'echo' does not support 'schema'" in err.message
    assert not err.retryable


def test_schema_must_be_an_object(llm_home, ask):
    err = ask.fails({"prompt": "Who?", "model": "echo", "schema": "name, age int"})

    assert "'schema' must be a JSON schema object, got str" in err.message


def test_a_schema_that_is_not_a_json_schema_is_refused(server, ask):
    err = ask.fails({"prompt": "Who?", "model": "local-test", "schema": {"type": "object", "properties": {"a": {"type": "text"}}}})

    assert "'schema' is not a valid JSON schema" in err.message
    assert not err.retryable
    assert server.requests == []


# ---------------------------------------------------------------------------
# choosing a model


def test_echo_model_answers_offline(llm_home, ask):
    out = ask({"prompt": "ping pong", "system": "be nice", "model": "echo"})

    echoed = json.loads(out["response"])
    assert echoed["prompt"] == "ping pong"
    assert echoed["system"] == "be nice"
    assert out["llm_usage"]["model"] == "echo"
    assert out["llm_usage"]["input_tokens"] == 4  # echo counts words: prompt + system


def test_model_defaults_to_PLAIT_LLM_MODEL(llm_home, ask, monkeypatch):
    monkeypatch.setenv("PLAIT_LLM_MODEL", "echo")

    out = ask({"prompt": "hi"})

    assert out["llm_usage"]["model"] == "echo"


def test_model_defaults_to_llms_own_default_model(server, ask, llm_home):
    (llm_home / "default_model.txt").write_text("local-test")

    out = ask({"prompt": "hi"})

    assert out["llm_usage"]["model"] == "local-test"
    assert len(server.requests) == 1


def test_unknown_model_is_not_retried_and_lists_available_models(server, ask):
    err = ask.fails({"prompt": "hi", "model": "local-tset"})

    assert not err.retryable
    assert err.message.startswith("unknown model 'local-tset'.")
    assert "Did you mean 'local-test'?" in err.message
    assert "Available: local-test, " in err.message
    assert "`llm models`" in err.message


def test_unknown_default_model_says_where_the_name_came_from(llm_home, ask, monkeypatch):
    monkeypatch.setenv("PLAIT_LLM_MODEL", "no-such-model")

    err = ask.fails({"prompt": "hi"})

    assert "unknown model 'no-such-model' (from $PLAIT_LLM_MODEL)" in err.message


def test_model_without_a_key_says_how_to_set_one(llm_home, ask):
    err = ask.fails({"prompt": "hi", "model": "gpt-4o-mini"})

    assert not err.retryable
    assert "needs an API key" in err.message
    assert "llm keys set openai" in err.message
    assert "'key'" in err.message
    assert "'echo' works offline" in err.message


# ---------------------------------------------------------------------------
# options a model does not take


def test_option_the_model_does_not_take_is_a_clear_error(llm_home, ask):
    err = ask.fails({"prompt": "hi", "model": "echo", "temperature": 0.5})

    assert not err.retryable
    assert "model 'echo' does not support 'temperature'" in err.message
    assert "example_bool" in err.message  # what it does take


def test_option_out_of_the_models_range_names_the_limit(server, ask):
    err = ask.fails({"prompt": "hi", "model": "local-test", "options": {"temperature": 7}})

    assert not err.retryable
    assert "'temperature'" in err.message
    assert "less than or equal to 2" in err.message
    assert server.requests == []  # refused before anything was sent


def test_an_option_given_twice_is_refused(llm_home, ask):
    err = ask.fails({"prompt": "hi", "model": "echo", "temperature": 0.1, "options": {"temperature": 0.2}})

    assert "'temperature' is given both as a param and in 'options'" in err.message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompt": ""}, "'prompt' is empty"),
        ({"prompt": "hi", "max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({"prompt": "hi", "max_tokens": "ten"}, "'max_tokens' must be a positive integer"),
        ({"prompt": "hi", "temperature": "hot"}, "'temperature' must be a number"),
        ({"prompt": "hi", "model": 4}, "'model' must be a string"),
        ({"prompt": "hi", "options": ["a"]}, "'options' must be an object"),
        ({"prompt": "hi", "key": 5}, "'key' must be a string"),
        ({"prompt": "hi", "api_base": "localhost:8080"}, "'api_base' must be the http(s) URL"),
        ({"prompt": "hi", "images": [3]}, "image 1 of 'images' must be a file path"),
    ],
)
def test_bad_params_are_refused_before_any_call(llm_home, services, params, message):
    err = Ask(services, "sync").fails({"model": "echo", **params})

    assert message in err.message
    assert not err.retryable
    assert services.calls == []


# ---------------------------------------------------------------------------
# keys and OpenAI-compatible servers


def test_a_nodes_key_is_sent_instead_of_the_stored_one(server, ask):
    ask({"prompt": "hi", "model": "local-test", "key": "sk-from-the-node"})

    assert server.requests[-1].headers["authorization"] == "Bearer sk-from-the-node"


def test_a_nodes_key_may_name_a_stored_key(server, ask, llm_home):
    keys = json.loads((llm_home / "keys.json").read_text())
    (llm_home / "keys.json").write_text(json.dumps({**keys, "work": "sk-work-account"}))

    ask({"prompt": "hi", "model": "local-test", "key": "work"})

    assert server.requests[-1].headers["authorization"] == "Bearer sk-work-account"


def test_api_base_points_the_node_at_any_openai_compatible_server(llm_home, ask, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-account")  # never sent to another server
    with OpenAIServer(reply="from elsewhere") as other:
        out = ask({"prompt": "hi", "model": "llama3.2", "api_base": other.base_url, "temperature": 0.3})

        request = other.requests[-1]
        assert out["response"] == "from elsewhere"
        assert out["llm_usage"]["model"] == "llama3.2"
        assert request.model == "llama3.2"
        assert request.body["temperature"] == 0.3
        assert request.headers["authorization"] == "Bearer DUMMY_KEY"


def test_api_base_with_a_key_or_a_key_alias(llm_home, ask):
    (llm_home / "keys.json").write_text(json.dumps({"groq": "gsk-stored"}))
    with OpenAIServer() as other:
        ask({"prompt": "hi", "model": "m", "api_base": other.base_url, "key": "gsk-literal"})
        ask({"prompt": "hi", "model": "m", "api_base": other.base_url, "key": "groq"})

        assert [r.headers["authorization"] for r in other.requests] == ["Bearer gsk-literal", "Bearer gsk-stored"]


def test_api_base_with_structured_output(llm_home, ask):
    with OpenAIServer(reply='{"name": "Ada", "age": 36}') as other:
        out = ask({"prompt": "Who?", "model": "m", "api_base": other.base_url, "schema": PERSON})

    assert out["response"] == {"name": "Ada", "age": 36}


@pytest.mark.parametrize("how", ["literal", "alias"])
def test_keys_never_appear_in_error_messages(server, ask, llm_home, how):
    secret = "sk-very-secret-0123456789"
    keys = json.loads((llm_home / "keys.json").read_text())
    (llm_home / "keys.json").write_text(json.dumps({**keys, "mine": secret}))
    server.echo_key_in_errors = True
    server.fail(1, 401)

    err = ask.fails({"prompt": "hi", "model": "local-test", "key": secret if how == "literal" else "mine"})

    assert server.requests[-1].headers["authorization"] == f"Bearer {secret}"  # it was used
    assert "HTTP 401" in err.message
    assert "Incorrect API key provided" in err.message
    assert secret not in err.message
    assert "`llm keys list`" in err.message


def test_a_key_for_echo_needs_key_is_resolved_from_an_alias(llm_home, ask):
    (llm_home / "keys.json").write_text(json.dumps({"team": "sk-team"}))

    out = ask({"prompt": "hi", "model": "echo-needs-key", "key": "team"})

    assert json.loads(out["response"])["key"] == "sk-team"


# ---------------------------------------------------------------------------
# failures of the call


def test_rate_limit_is_throttled_and_carries_retry_after_and_headers(server, ask):
    server.rate_limit(1, retry_after=2)

    err = ask.fails({"prompt": "hi", "model": "local-test"})

    assert err.retryable
    assert err.throttled
    assert err.retry_after == 2
    assert err.headers is not None and err.headers["retry-after"] == "2"
    assert "rate limited (HTTP 429)" in err.message
    assert "Rate limit reached for requests" in err.message  # the provider's words
    assert "'limits'" in err.message  # tells how to stay under the provider's limits
    # plait owns retries: the OpenAI client did not retry behind its back
    assert len(server.requests) == 1


def test_a_rate_limit_the_server_enforces_hands_its_headers_to_the_limiter(server, ask):
    server.enforce(rpm=60, burst_requests=1)
    ask({"prompt": "one", "model": "local-test"})

    err = ask.fails({"prompt": "two", "model": "local-test"})

    assert err.throttled
    assert err.retry_after is not None and 0 < err.retry_after <= 1.0  # retry-after-ms wins
    assert err.headers is not None
    assert err.headers["x-ratelimit-remaining-requests"] == "0"
    assert server.throttled_count == 1


def test_a_503_with_retry_after_is_throttled_without_it_a_plain_retry(server, ask):
    server.fail(1, 503, retry_after=1)
    throttled = ask.fails({"prompt": "hi", "model": "local-test"})
    server.fail(1, 503)
    plain = ask.fails({"prompt": "hi", "model": "local-test"})

    assert throttled.throttled and throttled.retry_after == 1
    assert "HTTP 503" in throttled.message
    assert plain.retryable and not plain.throttled


def test_server_errors_are_retryable(server, ask):
    server.fail(1, 500)

    err = ask.fails({"prompt": "hi", "model": "local-test"})

    assert err.retryable
    assert not err.throttled
    assert "HTTP 500" in err.message
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 401])
def test_client_errors_are_not_retryable(server, ask, status):
    server.fail(1, status)

    err = ask.fails({"prompt": "hi", "model": "local-test"})

    assert not err.retryable
    assert f"HTTP {status}" in err.message


def test_a_server_that_is_down_is_retryable(llm_home, ask):
    with OpenAIServer() as srv:
        url = srv.base_url
    write_llm_config(llm_home, url)  # nothing listens there any more

    err = ask.fails({"prompt": "hi", "model": "local-test"})

    assert err.retryable
    assert "could not be reached" in err.message


def test_the_request_after_a_rate_limit_succeeds(server, ask):
    server.rate_limit(1, retry_after=0)

    with pytest.raises(NodeError):
        ask({"prompt": "hi", "model": "local-test"})
    out = ask({"prompt": "hi", "model": "local-test"})

    assert out["response"] == "Hello from the local model"
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------
# parallel items


def test_parallel_items_each_get_their_own_answer(server, services, path):
    server.reply = lambda body: "answer to " + body["messages"][-1]["content"]
    ask = Ask(services, path)  # one node instance, as the runtime uses for a batch
    count = 64

    if path == "sync":
        with ThreadPoolExecutor(max_workers=16) as pool:
            outs = list(pool.map(lambda i: ask({"prompt": f"question {i}", "model": "local-test"}, i), range(count)))
    else:

        async def item(i: int) -> dict[str, Any]:
            ctx = ItemContext("ask", i, with_defaults(LlmNode, {"prompt": f"question {i}", "model": "local-test"}), services)
            return await ask.node.exec_async(ask.node.prep(ctx))

        async def all_items() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(item(i) for i in range(count))))

        server.delay = 0.02  # long enough for the calls to overlap
        outs = services.call_async(all_items())
        assert server.max_in_flight > 1

    assert [o["response"] for o in outs] == [f"answer to question {i}" for i in range(count)]
    assert sorted(c[1] for c in services.calls) == list(range(count))
    assert sum(c[3] for c in services.calls) == count * 11


# ---------------------------------------------------------------------------
# whole workflows through the CLI


@pytest.fixture
def run_llm_workflow(
    plait: Callable[..., Any], workflow: Callable[..., str], llm_home: Path
) -> Callable[..., Any]:
    def _run(ir: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> Any:
        path = workflow(ir)
        return plait(
            "run",
            path,
            *args,
            "--output-format",
            "json",
            env={"LLM_USER_PATH": str(llm_home), **(env or {})},
        )

    return _run


def test_cli_llm_node_prints_response_and_usage(server, run_llm_workflow):
    ir = {
        "nodes": [
            {"id": "ask", "type": "llm", "params": {"prompt": "Say hi", "model": "local-test"}}
        ],
        "outputs": {
            "answer": {"source": "${ask.response}"},
            "usage": {"source": "${ask.llm_usage}"},
        },
    }

    result = run_llm_workflow(ir)

    assert result.code == 0, result
    data = result.json
    assert data["outputs"] == {
        "answer": "Hello from the local model",
        "usage": {"model": "local-test", "input_tokens": 11, "output_tokens": 7, "cost_usd": None},
    }
    assert data["llm_usage"] == {"calls": 1, "input_tokens": 11, "output_tokens": 7}


def test_cli_params_and_inputs_reach_the_model(server, run_llm_workflow):
    ir = {
        "inputs": {"topic": {"type": "string"}},
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {
                    "prompt": "Write about ${topic}",
                    "system": "You are terse.",
                    "model": "local-test",
                    "temperature": 0.7,
                    "max_tokens": 50,
                    "options": {"seed": 3},
                },
            }
        ],
    }

    result = run_llm_workflow(ir, "topic=otters")

    assert result.code == 0, result
    request = server.requests[-1]
    assert (request.prompt, request.system) == ("Write about otters", "You are terse.")
    assert (request.body["temperature"], request.body["max_tokens"], request.body["seed"]) == (0.7, 50, 3)


def test_cli_rate_limited_call_succeeds_with_node_retry(server, run_llm_workflow):
    server.rate_limit(2, retry_after=0.05)
    ir = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "hi", "model": "local-test"},
                "retry": {"max": 4, "wait": 0.01},
            }
        ],
        "outputs": {"answer": {"source": "${ask.response}"}},
    }

    result = run_llm_workflow(ir)

    assert result.code == 0, result
    assert result.json["outputs"] == {"answer": "Hello from the local model"}
    assert len(server.requests) == 3  # two 429s, then the answer
    assert result.json["llm_usage"]["calls"] == 1  # only the answered call cost tokens


def test_cli_rate_limit_without_retry_is_retried_apart_from_max_retries(server, run_llm_workflow):
    # issue 14: a throttled call is retried after its Retry-After without a 'retry'
    # setting, and it is not counted as a failed attempt
    server.rate_limit(1, retry_after=0.05)
    ir = {
        "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "local-test"}}]
    }

    result = run_llm_workflow(ir)

    assert result.code == 0, result
    assert len(server.requests) == 2


def test_cli_schema_gives_an_object_later_nodes_can_read(server, run_llm_workflow):
    server.reply = '{"name": "Ada", "age": 36}'
    ir = {
        "nodes": [
            {
                "id": "who",
                "type": "llm",
                "params": {"prompt": "Who?", "model": "local-test", "schema": PERSON},
            },
            {
                "id": "greet",
                "type": "code",
                "params": {
                    "code": "result = f'{name} is {age}'",
                    "inputs": {"name": "${who.response.name}", "age": "${who.response.age}"},
                },
            },
        ],
        "outputs": {"person": {"source": "${who.response}"}, "text": {"source": "${greet.result}"}},
    }

    result = run_llm_workflow(ir)

    assert result.code == 0, result
    assert result.json["outputs"] == {"person": {"name": "Ada", "age": 36}, "text": "Ada is 36"}


def test_cli_echo_model_runs_offline_from_PLAIT_LLM_MODEL(run_llm_workflow):
    ir = {
        "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "offline please"}}],
        "outputs": {"answer": {"source": "${ask.response}"}},
    }

    result = run_llm_workflow(ir, env={"PLAIT_LLM_MODEL": "echo"})

    assert result.code == 0, result
    assert json.loads(result.json["outputs"]["answer"])["prompt"] == "offline please"
    assert result.json["llm_usage"]["calls"] == 1


def test_cli_unknown_model_is_refused_before_the_run(run_llm_workflow):
    ir = {"nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "ehco"}}]}

    result = run_llm_workflow(ir)

    assert result.code == 2, result
    error = result.json["errors"][0]
    assert "unknown model 'ehco'. Did you mean 'echo'?" in error["message"]
    assert error["path"] == "nodes[0].params.model"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cli_parallel_batch_usage_adds_up(server, run_llm_workflow, executor):
    server.reply = lambda body: "re: " + body["messages"][-1]["content"]
    server.delay = 0.02  # long enough for calls to overlap
    count = 30
    ir = {
        "inputs": {"topics": {"type": "array"}},
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "tell me about ${item}", "model": "local-test"},
                "batch": {"items": "${topics}", "parallel": True, "max_concurrent": 10},
            }
        ],
        "outputs": {"batch": {"source": "${ask}"}},
    }
    topics = [f"topic-{i}" for i in range(count)]

    result = run_llm_workflow(ir, f"topics={json.dumps(topics)}", "--executor", executor)

    assert result.code == 0, result
    batch = result.json["outputs"]["batch"]
    assert [r["response"] for r in batch["results"]] == [f"re: tell me about {t}" for t in topics]
    expected = {"calls": count, "input_tokens": 11 * count, "output_tokens": 7 * count}
    assert batch["batch_metadata"]["llm_usage"] == expected
    assert result.json["llm_usage"] == expected
    assert 1 < server.max_in_flight <= 10


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cli_a_batch_rides_out_429s_with_retry_after(server, run_llm_workflow, executor):
    server.rate_limit(3, retry_after=0.05)
    ir = {
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "hi ${item}", "model": "local-test"},
                "batch": {"items": list(range(5)), "parallel": True, "max_concurrent": 5, "max_retries": 5},
            }
        ],
        "outputs": {"batch": {"source": "${ask}"}},
    }

    result = run_llm_workflow(ir, "--executor", executor)

    assert result.code == 0, result
    batch = result.json["outputs"]["batch"]
    assert batch["success_count"] == 5
    assert server.failed_count == 3  # the three 429s were answered, then retried
    assert result.json["llm_usage"]["calls"] == 5  # only answered calls cost tokens


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cli_an_answer_that_misses_the_schema_is_retried_until_one_fits(server, run_llm_workflow, executor):
    answers: dict[str, int] = {}

    def reply(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        answers[prompt] = answers.get(prompt, 0) + 1
        # every item's first answer has the wrong type, the second fits
        return json.dumps({"label": 42 if answers[prompt] == 1 else "ok"})

    server.reply = reply
    ir = {
        "nodes": [
            {
                "id": "label",
                "type": "llm",
                "params": {
                    "prompt": "label ${item}",
                    "model": "local-test",
                    "schema": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]},
                },
                "batch": {"items": list(range(6)), "parallel": True, "max_concurrent": 3, "max_retries": 2},
            }
        ],
        "outputs": {"batch": {"source": "${label}"}},
    }

    result = run_llm_workflow(ir, "--executor", executor)

    assert result.code == 0, result
    batch = result.json["outputs"]["batch"]
    assert [r["response"] for r in batch["results"]] == [{"label": "ok"}] * 6
    assert [r["attempts"] for r in batch["results"]] == [2] * 6
    assert len(server.requests) == 12
    assert result.json["llm_usage"]["calls"] == 12  # the rejected answers cost tokens too


@pytest.mark.parametrize("executor", EXECUTORS)
def test_cli_api_base_batch_with_a_key_from_an_input(llm_home, run_llm_workflow, executor):
    secret = "sk-third-party-987654321"
    with OpenAIServer(reply="ok") as other:
        other.echo_key_in_errors = True
        other.fail(1, 401)
        ir = {
            "inputs": {"api_key": {"type": "string"}},
            "nodes": [
                {
                    "id": "ask",
                    "type": "llm",
                    "params": {"prompt": "hi ${item}", "model": "llama3.2", "api_base": other.base_url, "key": "${api_key}"},
                    "batch": {"items": [1, 2, 3], "parallel": True, "error_handling": "continue"},
                }
            ],
            "outputs": {"batch": {"source": "${ask}"}},
        }

        result = run_llm_workflow(ir, f"api_key={secret}", "--executor", executor)

        assert result.code == 0, result
        assert {r.headers["authorization"] for r in other.requests} == {f"Bearer {secret}"}
    batch = result.json["outputs"]["batch"]
    assert batch["success_count"] == 2
    assert "HTTP 401" in batch["errors"][0]["error"]
    assert secret not in result.stdout + result.stderr
    home = Path(os.environ["PLAIT_HOME"])
    written = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert written  # the run was recorded ...
    assert secret.encode() not in written  # ... without the key
