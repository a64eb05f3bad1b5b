"""The llm node before and around its calls: what ``plait validate`` finds, images
as attachments, the demand it puts on a limiter, and what it imports.

Item runs go through the real ``llm`` library (the offline ``echo`` model takes
images and reports what it got) and the local OpenAI-compatible server, on
both paths (``exec`` and ``exec_async``) where the path matters.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from direct import DirectServices, with_defaults
from openai_server import OpenAIServer, write_llm_config
from plait.nodes.base import ItemContext, NodeError
from plait.nodes.llm import LlmNode, estimate_prompt_tokens, prompt_tokens_bound
from servers import LocalServer, Reply

SRC = Path(__file__).resolve().parents[1] / "src"


def png_bytes() -> bytes:
    """A valid 1 x 1 PNG, made here."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


def bmp_bytes() -> bytes:
    """A 1 x 1 BMP (a type the echo model does not take)."""
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + info + b"\x00\x00\xff\x00"


@pytest.fixture
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "llm-home"
    home.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    monkeypatch.delenv("PLAIT_LLM_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return home


@pytest.fixture
def server(llm_home: Path) -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        write_llm_config(llm_home, srv.base_url)
        yield srv


@pytest.fixture
def services() -> Iterator[DirectServices]:
    svc = DirectServices()
    yield svc
    svc.close()


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, services: DirectServices) -> Callable[[dict[str, Any]], dict[str, Any]]:
    node = LlmNode("ask")

    def _run(params: dict[str, Any]) -> dict[str, Any]:
        ctx = ItemContext("ask", None, with_defaults(LlmNode, params), services)
        prep = node.prep(ctx)
        if request.param == "async":
            return services.call_async(node.exec_async(prep))
        return node.exec(prep)

    return _run


def fails(run: Callable[[dict[str, Any]], Any], params: dict[str, Any]) -> NodeError:
    with pytest.raises(NodeError) as info:
        run(params)
    return info.value


# ---------------------------------------------------------------------------
# plait validate


def test_validate_checks_options_schema_images_and_models(server, llm_home, plait, workflow):
    templated_option = {"options": {"temperature": "${t}", "nonsense": "${t}"}}
    nodes = [
        ("unsupported", {"model": "echo", "temperature": 0.3, "options": {"foo": 1}}),
        ("range", {"model": "local-test", "options": {"temperature": 7, "top_p": 0.5}}),
        ("templated", {"model": "local-test", **templated_option}),
        ("bad_schema", {"model": "local-test", "schema": {"type": "object", "properties": {"a": {"type": "text"}}}}),
        ("no_schema", {"model": "echo", "schema": {"type": "object"}}),
        ("no_images", {"model": "local-test", "images": ["a.png"]}),
        ("unknown", {"model": "local-tset"}),
        ("twice", {"model": "local-test", "max_tokens": 5, "options": {"max_tokens": 6}}),
        ("bad_base", {"model": "m", "api_base": "localhost:1234"}),
        ("base_no_model", {"api_base": "http://127.0.0.1:9/v1"}),
        # nothing to find in these
        ("fine", {"model": "local-test", "temperature": 0.5, "options": {"seed": 1}, "schema": {"type": "object"}}),
        ("echo_images", {"model": "echo", "images": ["${img}"], "options": {"example_bool": True}}),
        ("from_input", {"model": "${m}", "options": {"anything": 1}}),
        ("third_party", {"model": "llama3.2", "api_base": "http://127.0.0.1:9/v1", "options": {"seed": 2}}),
    ]
    ir = {
        "inputs": {"t": {"type": "number", "default": 0.5}, "img": {"type": "string", "default": "x"}, "m": {"type": "string", "default": "echo"}},
        "nodes": [{"id": name, "type": "llm", "params": {"prompt": "hi", **params}} for name, params in nodes],
    }

    result = plait("validate", workflow(ir), "-o", "json", env={"LLM_USER_PATH": str(llm_home)})

    assert result.code == 2, result
    found: dict[str, list[str]] = {}
    for error in result.json["errors"]:
        found.setdefault(error["path"], []).append(error["message"])

    def at(node: str, param: str) -> str:
        index = [n for n, _ in nodes].index(node)
        messages = found.pop(f"nodes[{index}].params.{param}")
        assert len(messages) == 1, messages
        return messages[0]

    assert "model 'echo' does not support 'foo'" in at("unsupported", "options.foo")
    assert "model 'echo' does not support 'temperature'" in at("unsupported", "temperature")
    assert "less than or equal to 2" in at("range", "options.temperature")
    assert "model 'local-test' does not support 'nonsense'" in at("templated", "options.nonsense")
    assert "'schema' is not a valid JSON schema: at properties.a.type" in at("bad_schema", "schema")
    assert "model 'echo' does not support 'schema'" in at("no_schema", "schema")
    assert "model 'local-test' does not take images" in at("no_images", "images")
    assert "Did you mean 'local-test'?" in at("unknown", "model")
    assert "'max_tokens' is given both as a param and in 'options'" in at("twice", "max_tokens")
    assert "'api_base' must be the http(s) URL" in at("bad_base", "api_base")
    assert "'api_base' needs 'model'" in at("base_no_model", "model")
    assert found == {}  # nothing about the nodes that are fine


def test_a_valid_llm_workflow_validates(llm_home, plait, workflow):
    ir = {"nodes": [{"id": "a", "type": "llm", "params": {"prompt": "hi", "model": "echo", "options": {"example_bool": True}}}]}

    result = plait("validate", workflow(ir), env={"LLM_USER_PATH": str(llm_home)})

    assert result.code == 0, result


# ---------------------------------------------------------------------------
# images


def test_images_from_a_path_a_data_url_and_base64_reach_the_model(llm_home, run, tmp_path):
    png = png_bytes()
    picture = tmp_path / "pixel.png"
    picture.write_bytes(png)
    encoded = base64.b64encode(png).decode()

    out = run({"prompt": "describe", "model": "echo", "images": [str(picture), f"data:image/png;base64,{encoded}", encoded]})

    attachments = json.loads(out["response"])["attachments"]
    digest = hashlib.sha256(png).hexdigest()
    assert attachments == [
        {"type": "image/png", "path": str(picture), "url": None, "id": digest},
        {"type": "image/png", "path": None, "url": None, "id": digest},
        {"type": "image/png", "path": None, "url": None, "id": digest},
    ]


def test_one_image_may_be_given_as_a_string(llm_home, run, tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes())

    out = run({"prompt": "describe", "model": "echo", "images": str(tmp_path / "p.png")})

    assert len(json.loads(out["response"])["attachments"]) == 1


def test_an_image_url_is_passed_as_a_url(llm_home, run):
    with LocalServer() as images:
        images.route("/cat.png", lambda req: Reply(body=png_bytes(), content_type="image/png"))
        url = images.url("/cat.png")

        out = run({"prompt": "describe", "model": "echo", "images": [url]})

    assert json.loads(out["response"])["attachments"] == [
        {"type": "image/png", "path": None, "url": url, "id": hashlib.sha256(json.dumps({"url": url}).encode()).hexdigest()}
    ]


def test_an_image_url_that_fails_names_the_image(llm_home, run):
    with LocalServer() as images:
        url = images.url("/status/404")

        err = fails(run, {"prompt": "describe", "model": "echo", "images": [url]})

    assert "image 1 of 'images'" in err.message
    assert "could not be fetched" in err.message


def test_images_reach_an_openai_vision_model_as_the_plugin_sends_them(server, llm_home, run, tmp_path):
    write_llm_config(llm_home, server.base_url, vision=True)
    (tmp_path / "p.png").write_bytes(png_bytes())

    run({"prompt": "what is it?", "model": "local-test", "images": [str(tmp_path / "p.png")]})

    content = server.requests[-1].messages[-1]["content"]
    assert content[0] == {"type": "text", "text": "what is it?"}
    assert content[1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(png_bytes()).decode()},
    }


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["no/such/picture.png"], "image 1 of 'images': no such file: no/such/picture.png"),
        (["data:image/png,rawbytes"], "image 1 of 'images' is a data: URL that is not base64"),
        (["data:image/png;base64,@@@@"], "image 1 of 'images' is not valid base64"),
        ([base64.b64encode(b"just some text, not a picture at all").decode()], "is base64 data, but not of an image"),
        (["BMP"], "model 'echo' does not take image/x-ms-bmp (image 1 of 'images'); it takes image/gif, image/jpeg, image/png"),
    ],
)
def test_images_that_cannot_be_used_are_clear_errors(llm_home, run, tmp_path, monkeypatch, images, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "BMP").write_bytes(bmp_bytes())

    err = fails(run, {"prompt": "describe", "model": "echo", "images": images})

    assert message in err.message
    assert not err.retryable


def test_a_model_without_attachments_does_not_take_images(server, run, tmp_path):
    (tmp_path / "p.png").write_bytes(png_bytes())

    err = fails(run, {"prompt": "what is it?", "model": "local-test", "images": [str(tmp_path / "p.png")]})

    assert "model 'local-test' does not take images" in err.message
    assert not err.retryable
    assert server.requests == []


# ---------------------------------------------------------------------------
# the demand on a limiter and a budget


def demand_of(services: DirectServices, params: dict[str, Any]) -> Any:
    node = LlmNode("ask")
    ctx = ItemContext("ask", None, with_defaults(LlmNode, params), services)
    return node.demand(node.prep(ctx))


def test_demand_names_the_provider_and_model_and_reserves_prompt_and_output(server, services):
    prompt = "Summarise the following support ticket in one sentence. " * 20

    demand = demand_of(services, {"prompt": prompt, "system": "Be brief.", "model": "local-test", "max_tokens": 200})

    host = server.base_url.split("//")[1].split("/")[0]
    assert demand.key == f"llm:{host}/local-test"
    assert demand.model == "local-test"
    assert demand.max_output_tokens == 200
    assert demand.input_tokens == estimate_prompt_tokens(prompt, "Be brief.")
    assert demand.tokens == demand.input_tokens + 200
    # about a token per four characters of English, plus the messages' framing
    assert len(prompt) / 5 < demand.input_tokens < len(prompt) / 3


def test_demand_for_an_openai_model_and_an_output_cap_in_options(llm_home, services):
    demand = demand_of(services, {"prompt": "hi", "model": "4o-mini", "options": {"max_tokens": 50}})

    assert demand.key == "llm:openai/gpt-4o-mini"
    assert demand.max_output_tokens == 50


def test_demand_without_an_output_cap_reserves_the_prompt_only(llm_home, services):
    demand = demand_of(services, {"prompt": "hello there", "model": "echo"})

    assert demand.key == "llm:echo/echo"
    assert demand.max_output_tokens is None
    assert demand.tokens == demand.input_tokens > 0


def test_demand_of_a_prompt_alone_is_the_estimate_and_bound_of_any_other(llm_home, services):
    # a prompt without system or images takes a shorter path: the same figures
    for prompt in ("hi", "Classify this message: item 7 " * 9, "résumé 汉字", " x" * 333):
        demand = demand_of(services, {"prompt": prompt, "model": "echo"})
        assert demand.input_tokens == demand.tokens == estimate_prompt_tokens(prompt)
        assert demand.input_tokens_bound == prompt_tokens_bound(prompt)
        capped = demand_of(services, {"prompt": prompt, "model": "echo", "max_tokens": 9})
        assert (capped.input_tokens, capped.tokens, capped.max_output_tokens) == (demand.input_tokens, demand.tokens + 9, 9)
        assert capped.input_tokens_bound == demand.input_tokens_bound


def test_demand_for_an_unknown_model_is_none_and_the_call_says_why(llm_home, services):
    assert demand_of(services, {"prompt": "hi", "model": "nope"}) is None


def test_non_english_text_is_estimated_at_more_tokens_per_character():
    english = estimate_prompt_tokens("a" * 300)
    chinese = estimate_prompt_tokens("汉" * 300)

    assert chinese > 2 * english


# ---------------------------------------------------------------------------
# what the node imports


def _python(code: str, env_extra: dict[str, str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC), **env_extra}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60).stdout


def test_importing_the_node_does_not_import_llm():
    out = _python("import sys, plait.nodes.llm; print('llm' in sys.modules, 'openai' in sys.modules)", {})

    assert out.split() == ["False", "False"]


def test_an_echo_workflow_never_imports_openai_or_aiohttp(llm_home):
    code = (
        "import sys, plait\n"
        "from plait.nodes.llm_models import deferred_loaded\n"
        "wf = {'nodes': [{'id': 'a', 'type': 'llm', 'params': {'prompt': 'hi ${item}', 'model': 'echo'},"
        " 'batch': {'items': [1, 2, 3]}}]}\n"
        "r = plait.run(wf)\n"
        "print(r.ok, deferred_loaded('openai'), 'aiohttp' in sys.modules)\n"
    )
    assert _python(code, {"LLM_USER_PATH": str(llm_home)}).split() == ["True", "False", "False"]


def test_openai_is_imported_when_an_openai_model_is_called(server, llm_home):
    # eight threads reach for the deferred module at once
    code = (
        "import plait\n"
        "from plait.nodes.llm_models import deferred_loaded\n"
        "wf = {'nodes': [{'id': 'a', 'type': 'llm', 'params': {'prompt': 'hi ${item}', 'model': 'local-test'},"
        " 'batch': {'items': list(range(8)), 'parallel': True, 'max_concurrent': 8}}]}\n"
        "r = plait.run(wf, executor='threads')\n"
        "import openai\n"
        "print(r.ok, deferred_loaded('openai'), openai.OpenAI.__name__)\n"
    )
    assert _python(code, {"LLM_USER_PATH": str(llm_home)}).split() == ["True", "True", "OpenAI"]


def test_a_parallel_batch_on_the_async_path_never_imports_openai(server, llm_home):
    code = (
        "import plait\n"
        "from plait.nodes.llm_models import deferred_loaded\n"
        "wf = {'nodes': [{'id': 'a', 'type': 'llm', 'params': {'prompt': 'hi ${item}', 'model': 'local-test'},"
        " 'batch': {'items': [1, 2, 3, 4], 'parallel': True}}]}\n"
        "r = plait.run(wf)\n"
        "print(r.ok, deferred_loaded('openai'))\n"
    )
    assert _python(code, {"LLM_USER_PATH": str(llm_home)}).split() == ["True", "False"]


def test_a_model_that_needs_a_key_none_gives_is_a_warning_before_the_run(
    plait: Any, workflow: Any, llm_home: Path, tmp_path: Path
) -> None:
    nodes = [
        {"id": "keyless", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o-mini"}},
        {"id": "given", "type": "llm", "params": {"prompt": "hi", "model": "gpt-4o-mini", "key": "sk-test"}},
        {"id": "offline", "type": "llm", "params": {"prompt": "hi", "model": "echo"}},
    ]
    path = workflow({"nodes": nodes})
    env = {"LLM_USER_PATH": str(llm_home)}  # and no OPENAI_API_KEY (the fixture drops it)

    checked = plait("validate", path, "-o", "json", env=env)
    assert checked.code == 0, checked  # a warning: the run may store the key before it reaches the node
    (warning,) = checked.json["warnings"]
    assert warning.startswith("node 'keyless': model 'gpt-4o-mini' needs an API key and none is set (No key found")

    ran = plait("run", path, "-q", env=env)
    assert ran.code == 1 and "warning: node 'keyless': model 'gpt-4o-mini' needs an API key" in ran.stderr, ran

    with_key = plait("validate", path, "-o", "json", env={**env, "OPENAI_API_KEY": "sk-from-env"})
    assert with_key.code == 0 and with_key.json["warnings"] == [], with_key
