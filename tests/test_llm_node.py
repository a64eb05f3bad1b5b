"""The llm node, through the real ``llm`` library, against a real local server.

``tests/openai_server.py`` is an OpenAI-compatible chat server on 127.0.0.1;
each test gets its own ``LLM_USER_PATH`` in which the model ``local-test`` of
``llm``'s OpenAI plugin points at it. The offline ``echo`` model of
``llm-echo`` needs nothing at all.

The first half drives the node the way the runtime does (``prep`` / ``exec`` /
``post`` with an ``ItemContext``) with the runtime's real ``RunServices``, which records the
LLM calls; the second half runs real workflows through ``python -m plait run``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import direct
from direct import DirectServices
from openai_server import OpenAIServer, write_llm_config
from plait.nodes.base import NodeError
from plait.nodes.llm import LlmNode
from plait.runtime.services import RunServices

SRC = Path(__file__).resolve().parents[1] / "src"



@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty llm configuration directory of this test's own (no keys, no models)."""
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.delenv("PLAIT_LLM_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return home


@pytest.fixture
def server(llm_home: Path) -> Iterator[OpenAIServer]:
    """The local server, registered in llm as the model ``local-test``."""
    with OpenAIServer() as srv:
        write_llm_config(llm_home, srv.base_url)
        yield srv


@pytest.fixture
def services() -> DirectServices:
    return DirectServices()





# ---------------------------------------------------------------------------
# completions



def run_item(
    services: RunServices,
    params: dict[str, Any],
    node: LlmNode | None = None,
    index: int | None = None,
) -> dict[str, Any]:
    return direct.run_item(node or LlmNode("ask"), services, params, index)


def failure(services: RunServices, params: dict[str, Any], node: LlmNode | None = None) -> NodeError:
    return direct.failure(node or LlmNode("ask"), services, params)


def test_response_is_the_models_text_with_its_token_usage(server, services):
    out = run_item(services, {"prompt": "Say hello", "model": "local-test"})

    assert out == {
        "response": "Hello from the local model",
        "llm_usage": {"model": "local-test", "input_tokens": 11, "output_tokens": 7},
    }
    assert server.requests[-1].prompt == "Say hello"
    assert server.requests[-1].headers["authorization"] == "Bearer sk-local-test"


def test_every_call_is_recorded_with_node_index_model_and_tokens(server, services):
    run_item(services, {"prompt": "one", "model": "local-test"}, index=4)

    assert services.calls == [("ask", 4, "local-test", 11, 7)]


def test_system_temperature_and_max_tokens_reach_the_model(server, services):
    run_item(
        services,
        {
            "prompt": "Name a colour",
            "system": "Answer in one word.",
            "model": "local-test",
            "temperature": 0.2,
            "max_tokens": 5,
        },
    )

    request = server.requests[-1]
    assert request.model == "local-test"
    assert request.system == "Answer in one word."
    assert request.prompt == "Name a colour"
    assert request.body["temperature"] == 0.2
    assert request.body["max_tokens"] == 5


def test_unset_options_are_not_sent(server, services):
    run_item(services, {"prompt": "hi", "model": "local-test"})

    body = server.requests[-1].body
    assert "temperature" not in body
    assert "max_tokens" not in body
    assert server.requests[-1].system is None


def test_a_prompt_that_is_data_is_sent_as_json(server, services):
    run_item(services, {"prompt": {"task": "summarise", "items": [1, 2]}, "model": "local-test"})

    assert json.loads(server.requests[-1].prompt) == {"task": "summarise", "items": [1, 2]}


def test_a_model_that_reports_no_usage_counts_zero_tokens(server, services):
    server.report_no_usage()

    out = run_item(services, {"prompt": "hi", "model": "local-test"})

    assert out["llm_usage"] == {"model": "local-test", "input_tokens": 0, "output_tokens": 0}
    assert services.calls == [("ask", None, "local-test", 0, 0)]


def test_an_alias_reports_the_models_real_id(server, services, llm_home):
    (llm_home / "aliases.json").write_text(json.dumps({"mine": "local-test"}))

    out = run_item(services, {"prompt": "hi", "model": "mine"})

    assert out["llm_usage"]["model"] == "local-test"


# ---------------------------------------------------------------------------
# structured output


PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_schema_returns_the_answer_parsed_as_an_object(server, services):
    server.reply = '{"name": "Ada", "age": 36}'

    out = run_item(services, {"prompt": "Who?", "model": "local-test", "schema": PERSON})

    assert out["response"] == {"name": "Ada", "age": 36}
    assert server.requests[-1].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": PERSON},
    }


def test_schema_answer_in_a_code_fence_is_still_parsed(server, services):
    server.reply = '```json\n{"name": "Ada", "age": 36}\n```'

    out = run_item(services, {"prompt": "Who?", "model": "local-test", "schema": PERSON})

    assert out["response"] == {"name": "Ada", "age": 36}


def test_schema_answer_that_is_not_json_fails_keeping_the_text(server, services):
    server.reply = "Sorry, I cannot do that."

    err = failure(services, {"prompt": "Who?", "model": "local-test", "schema": PERSON})

    assert "not JSON" in err.message
    assert "Sorry, I cannot do that." in err.message
    assert err.retryable  # the next answer may well be JSON
    assert err.outputs is not None
    assert err.outputs["response"] == "Sorry, I cannot do that."
    # the call happened and cost tokens, so it counts
    assert services.calls == [("ask", None, "local-test", 11, 7)]


def test_schema_with_a_model_that_cannot_do_it_is_a_clear_error(llm_home, services):
    err = failure(services, {"prompt": "Who?", "model": "echo", "schema": PERSON})

    assert "model 'echo' does not support 'schema'" in err.message
    assert not err.retryable


def test_schema_must_be_an_object(llm_home, services):
    err = failure(services, {"prompt": "Who?", "model": "echo", "schema": "name, age int"})

    assert "'schema' must be a JSON schema object, got str" in err.message


# ---------------------------------------------------------------------------
# choosing a model


def test_echo_model_answers_offline(llm_home, services):
    out = run_item(services, {"prompt": "ping pong", "system": "be nice", "model": "echo"})

    echoed = json.loads(out["response"])
    assert echoed["prompt"] == "ping pong"
    assert echoed["system"] == "be nice"
    assert out["llm_usage"]["model"] == "echo"
    assert out["llm_usage"]["input_tokens"] == 4  # echo counts words: prompt + system


def test_model_defaults_to_PLAIT_LLM_MODEL(llm_home, services, monkeypatch):
    monkeypatch.setenv("PLAIT_LLM_MODEL", "echo")

    out = run_item(services, {"prompt": "hi"})

    assert out["llm_usage"]["model"] == "echo"


def test_model_defaults_to_llms_own_default_model(server, services, llm_home):
    (llm_home / "default_model.txt").write_text("local-test")

    out = run_item(services, {"prompt": "hi"})

    assert out["llm_usage"]["model"] == "local-test"
    assert len(server.requests) == 1


def test_unknown_model_is_not_retried_and_lists_available_models(server, services):
    err = failure(services, {"prompt": "hi", "model": "local-tset"})

    assert not err.retryable
    assert err.message.startswith("unknown model 'local-tset'.")
    assert "Did you mean 'local-test'?" in err.message
    assert "Available: local-test, " in err.message
    assert "`llm models`" in err.message


def test_unknown_default_model_says_where_the_name_came_from(llm_home, services, monkeypatch):
    monkeypatch.setenv("PLAIT_LLM_MODEL", "no-such-model")

    err = failure(services, {"prompt": "hi"})

    assert "unknown model 'no-such-model' (from $PLAIT_LLM_MODEL)" in err.message


def test_model_without_a_key_says_how_to_set_one(llm_home, services):
    err = failure(services, {"prompt": "hi", "model": "gpt-4o-mini"})

    assert not err.retryable
    assert "needs an API key" in err.message
    assert "llm keys set openai" in err.message
    assert "'echo' works offline" in err.message


# ---------------------------------------------------------------------------
# options a model does not take


def test_option_the_model_does_not_take_is_a_clear_error(llm_home, services):
    err = failure(services, {"prompt": "hi", "model": "echo", "temperature": 0.5})

    assert not err.retryable
    assert "model 'echo' does not support 'temperature'" in err.message
    assert "example_bool" in err.message  # what it does take


def test_option_out_of_the_models_range_names_the_limit(server, services):
    err = failure(services, {"prompt": "hi", "model": "local-test", "temperature": 7})

    assert not err.retryable
    assert "'temperature'" in err.message
    assert "less than or equal to 2" in err.message
    assert server.requests == []  # refused before anything was sent


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompt": ""}, "'prompt' is empty"),
        ({"prompt": "hi", "max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({"prompt": "hi", "max_tokens": "ten"}, "'max_tokens' must be a positive integer"),
        ({"prompt": "hi", "temperature": "hot"}, "'temperature' must be a number"),
        ({"prompt": "hi", "model": 4}, "'model' must be a string"),
    ],
)
def test_bad_params_are_refused_before_any_call(llm_home, services, params, message):
    err = failure(services, {"model": "echo", **params})

    assert message in err.message
    assert not err.retryable
    assert services.calls == []


# ---------------------------------------------------------------------------
# failures of the call


def test_rate_limit_is_retryable_and_carries_retry_after(server, services):
    server.rate_limit(1, retry_after=2)

    err = failure(services, {"prompt": "hi", "model": "local-test"})

    assert err.retryable
    assert err.retry_after == 2
    assert "rate limited (HTTP 429)" in err.message
    assert "'retry'" in err.message  # tells how to get retries
    # plait owns retries: the OpenAI client did not retry behind its back
    assert len(server.requests) == 1


def test_server_errors_are_retryable(server, services):
    server.fail(1, 500)

    err = failure(services, {"prompt": "hi", "model": "local-test"})

    assert err.retryable
    assert "HTTP 500" in err.message
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 401])
def test_client_errors_are_not_retryable(server, services, status):
    server.fail(1, status)

    err = failure(services, {"prompt": "hi", "model": "local-test"})

    assert not err.retryable
    assert f"HTTP {status}" in err.message


def test_a_server_that_is_down_is_retryable(llm_home, services):
    with OpenAIServer() as srv:
        url = srv.base_url
    write_llm_config(llm_home, url)  # nothing listens there any more

    err = failure(services, {"prompt": "hi", "model": "local-test"})

    assert err.retryable
    assert "could not be reached" in err.message


def test_the_request_after_a_rate_limit_succeeds(server, services):
    node = LlmNode("ask")
    server.rate_limit(1, retry_after=0)

    with pytest.raises(NodeError):
        run_item(services, {"prompt": "hi", "model": "local-test"}, node=node)
    out = run_item(services, {"prompt": "hi", "model": "local-test"}, node=node)

    assert out["response"] == "Hello from the local model"
    assert len(server.requests) == 2


# ---------------------------------------------------------------------------
# parallel items


def test_parallel_items_each_get_their_own_answer(server, services):
    server.reply = lambda body: "answer to " + body["messages"][-1]["content"]
    node = LlmNode("ask")  # one instance, as the runtime uses for a batch

    def item(i: int) -> dict[str, Any]:
        return run_item(services, {"prompt": f"question {i}", "model": "local-test"}, node, i)

    with ThreadPoolExecutor(max_workers=16) as pool:
        outs = list(pool.map(item, range(64)))

    assert [o["response"] for o in outs] == [f"answer to question {i}" for i in range(64)]
    assert sorted(c[1] for c in services.calls) == list(range(64))
    assert sum(c[3] for c in services.calls) == 64 * 11


def test_importing_the_node_does_not_import_llm():
    code = "import sys, plait.nodes.llm; print('llm' in sys.modules, 'openai' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]


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
        "usage": {"model": "local-test", "input_tokens": 11, "output_tokens": 7},
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
                },
            }
        ],
    }

    result = run_llm_workflow(ir, "topic=otters")

    assert result.code == 0, result
    request = server.requests[-1]
    assert (request.prompt, request.system) == ("Write about otters", "You are terse.")
    assert (request.body["temperature"], request.body["max_tokens"]) == (0.7, 50)


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


def test_cli_rate_limit_without_retry_fails_and_says_how_to_retry(server, run_llm_workflow):
    server.rate_limit(1, retry_after=1)
    ir = {
        "nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "local-test"}}]
    }

    result = run_llm_workflow(ir)

    assert result.code == 1, result
    message = result.json["errors"][0]["message"]
    assert "rate limited (HTTP 429)" in message
    assert "'retry'" in message


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


def test_cli_unknown_model_fails_the_run_naming_the_model(run_llm_workflow):
    ir = {"nodes": [{"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "ehco"}}]}

    result = run_llm_workflow(ir)

    assert result.code == 1, result
    assert "unknown model 'ehco'. Did you mean 'echo'?" in result.json["errors"][0]["message"]


def test_cli_parallel_batch_usage_adds_up(server, run_llm_workflow):
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

    result = run_llm_workflow(ir, f"topics={json.dumps(topics)}")

    assert result.code == 0, result
    batch = result.json["outputs"]["batch"]
    assert [r["response"] for r in batch["results"]] == [f"re: tell me about {t}" for t in topics]
    expected = {"calls": count, "input_tokens": 11 * count, "output_tokens": 7 * count}
    assert batch["batch_metadata"]["llm_usage"] == expected
    assert result.json["llm_usage"] == expected
    assert 1 < server.max_in_flight <= 10
