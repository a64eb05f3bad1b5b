"""The ``llm`` node: one prompt to a language model per run (or per batch item).

Models come from simonw's ``llm`` library, so every model its plugins provide
(OpenAI, Anthropic, local ones, the offline ``echo`` model of ``llm-echo``) and
every key stored with ``llm keys set`` work here unchanged. ``llm`` is imported
inside ``exec`` only: importing it costs ~0.2 s, which ``plait --help`` and
workflows without an ``llm`` node never pay.

Sharing models between threads: a node instance resolves each model name once
and keeps the model object; parallel items then share it. That is safe for the
models we rely on — the OpenAI plugin keeps per-call state on the ``Response``
and its model object holds only configuration (plus, here, one ``openai``
client, which is documented as safe to share between threads), and ``echo``
keeps none — and it is what the ``llm`` CLI itself does within a conversation.
Resolving a name runs ``llm``'s plugin loading, which is not thread-safe on
first use (it flags itself loaded before it has registered the plugins, so a
second thread can see no models), hence one lock around it.

Retries belong to plait (a node's ``retry`` and a batch's ``max_retries``), so
rate limits surface as ``NodeError(retryable=True, retry_after=...)``. The
OpenAI client would otherwise retry a 429 twice on its own, silently and before
plait sees anything, multiplying the attempts a user configured; for the OpenAI
plugin's models that inner retry is switched off, and the client, which the
plugin would build anew for every call, is built once per model and reused
(see ``_tune_openai_client``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode, Usage

MODEL_ENV_VAR = "PLAIT_LLM_MODEL"

# llm's plugin loading is not safe to run from two threads at once (see above).
_resolve_lock = threading.Lock()

# How many model ids an "unknown model" message lists.
_MODELS_LISTED = 8


@dataclass(frozen=True, slots=True)
class LlmCall:
    """Everything ``exec`` needs, taken from the item's params in ``prep``."""

    prompt: str
    system: str | None
    model: str | None  # None: PLAIT_LLM_MODEL, else llm's default model
    options: dict[str, Any]
    schema: dict[str, Any] | None
    record: Callable[[str, int, int], None]


class LlmNode(PlaitNode):
    """Send a prompt to a language model through the ``llm`` library."""

    type_name = "llm"
    description = "Prompt a language model (any model the llm library knows); schema gives JSON"
    primary_output = "response"

    param_specs = (
        Param("prompt", "string", required=True, description="The prompt text"),
        Param("system", "string", default=None, description="A system prompt"),
        Param(
            "model",
            "string",
            default=None,
            description=f"A model id or alias known to llm (`llm models`); default: ${MODEL_ENV_VAR}, "
            "else llm's default model (`llm models default`)",
        ),
        Param("temperature", "number", default=None, description="Sampling temperature"),
        Param("max_tokens", "integer", default=None, description="Most tokens to generate"),
        Param(
            "schema",
            "object",
            default=None,
            description="A JSON schema: the model answers with matching JSON, "
            "returned parsed as the response",
        ),
    )
    output_specs = (
        Output("response", "any", "The model's text, or the parsed object when schema is given"),
        Output(
            "llm_usage",
            "object",
            "{model, input_tokens, output_tokens}; tokens are 0 when the model reports none",
        ),
    )

    def __init__(self, node_id: str = "", max_retries: int = 1, wait: float = 0.0) -> None:
        super().__init__(node_id=node_id, max_retries=max_retries, wait=wait)
        self._models: dict[str, Any] = {}

    def prep(self, shared: ItemContext) -> LlmCall:
        p = shared.params
        prompt = _as_text(p.get("prompt"))
        if not prompt or not prompt.strip():
            raise _invalid("'prompt' is empty")
        system = _as_text(p.get("system")) or None

        model = p.get("model")
        if model is not None and not isinstance(model, str):
            raise _invalid(f"'model' must be a string, got {type(model).__name__}")

        options: dict[str, Any] = {}
        temperature = p.get("temperature")
        if temperature is not None:
            if isinstance(temperature, bool) or not isinstance(temperature, int | float):
                raise _invalid(f"'temperature' must be a number, got {temperature!r}")
            options["temperature"] = temperature
        max_tokens = p.get("max_tokens")
        if max_tokens is not None:
            if isinstance(max_tokens, float) and max_tokens.is_integer():
                max_tokens = int(max_tokens)
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise _invalid(f"'max_tokens' must be a positive integer, got {max_tokens!r}")
            options["max_tokens"] = max_tokens

        schema = p.get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise _invalid(f"'schema' must be a JSON schema object, got {type(schema).__name__}")

        services = shared.services

        def record(model_id: str, input_tokens: int, output_tokens: int) -> None:
            services.record_usage(
                shared, Usage(model=model_id, input_tokens=input_tokens, output_tokens=output_tokens)
            )

        return LlmCall(
            prompt=prompt,
            system=system,
            model=model.strip() if model and model.strip() else None,
            options=options,
            schema=schema or None,
            record=record,
        )

    def exec(self, prep_res: LlmCall) -> dict[str, Any]:
        call = prep_res
        model = self._model(call.model)
        model_id = str(model.model_id)
        _check_options(model, model_id, call.options)
        if call.schema is not None and not getattr(model, "supports_schema", False):
            raise _invalid(
                f"model '{model_id}' does not support 'schema' (structured output); "
                "use a model that does, such as the OpenAI ones, or drop 'schema'"
            )

        try:
            response = model.prompt(
                call.prompt,
                system=call.system,
                schema=call.schema,
                # Stream when the model can, as the llm CLI does: the OpenAI plugin's
                # streaming path tolerates servers that report no usage; its
                # one-shot path crashes on them.
                stream=bool(getattr(model, "can_stream", False)),
                options=call.options or None,
            )
            text = response.text()
            usage = response.usage()
        except Exception as exc:
            raise _call_error(exc, model_id) from exc

        input_tokens = _tokens(getattr(usage, "input", None))
        output_tokens = _tokens(getattr(usage, "output", None))
        call.record(model_id, input_tokens, output_tokens)
        llm_usage = {
            "model": model_id,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        if call.schema is None:
            return {"response": text, "llm_usage": llm_usage}
        try:
            parsed = json.loads(_strip_fences(text))
        except json.JSONDecodeError as exc:
            # A model's output varies from one call to the next, so a retry may fix it.
            raise NodeError(
                f"model '{model_id}' was asked for JSON matching 'schema' but answered "
                f"with text that is not JSON ({exc.msg}): "
                f"{_preview(text)}",
                outputs={"response": text, "llm_usage": llm_usage},
                retryable=True,
            ) from exc
        return {"response": parsed, "llm_usage": llm_usage}

    def _model(self, name: str | None) -> Any:
        key = name or ""
        model = self._models.get(key)
        if model is not None:
            return model
        with _resolve_lock:
            model = self._models.get(key)
            if model is None:
                model = _resolve_model(name)
                self._models[key] = model
        return model


# ---------------------------------------------------------------------------
# models


def _resolve_model(name: str | None) -> Any:
    import llm

    wanted = name or os.environ.get(MODEL_ENV_VAR, "").strip() or llm.get_default_model()
    try:
        model = llm.get_model(wanted)
    except llm.UnknownModelError:
        raise _invalid(_unknown_model_message(wanted, name is None))
    _tune_openai_client(model)
    return model


def _unknown_model_message(wanted: str, defaulted: bool) -> str:
    import llm

    entries = llm.get_models_with_aliases()
    ids = [entry.model.model_id for entry in entries]
    names = ids + [str(alias) for entry in entries for alias in entry.aliases]
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    listed = list(dict.fromkeys([*close, *ids]))[:_MODELS_LISTED]
    more = f", ... ({len(ids)} in all; `llm models` lists them)" if len(ids) > len(listed) else ""
    source = ""
    if defaulted:
        from_env = os.environ.get(MODEL_ENV_VAR, "").strip()
        source = f" (from ${MODEL_ENV_VAR})" if from_env else " (llm's default model)"
    message = f"unknown model '{wanted}'{source}."
    if close:
        message += f" Did you mean '{close[0]}'?"
    return (
        f"{message} Available: {', '.join(listed)}{more}. "
        "More models come from llm plugins (`llm install llm-...`)"
    )


def _tune_openai_client(model: Any) -> None:
    """For a model of llm's OpenAI plugin: one client per model, without inner retries.

    The plugin builds a new ``openai.OpenAI`` client for every call, and each
    one loads the system's CA certificates afresh (~17 ms of CPU, measured)
    and opens new connections: in a parallel batch of thousands that is the
    bottleneck. The client is documented as safe to share between threads, so
    the node keeps one per model and key, which also pools connections.
    """
    if type(model).__module__ != "llm.default_plugins.openai_models":
        return
    original = getattr(model, "get_client", None)
    if not callable(original):
        return
    clients: dict[tuple[Any, bool], Any] = {}
    lock = threading.Lock()

    def get_client(key: Any = None, *, async_: bool = False) -> Any:
        cache_key = (key, async_)
        client = clients.get(cache_key)
        if client is None:
            with lock:
                client = clients.get(cache_key)
                if client is None:
                    client = original(key, async_=async_)
                    with_options = getattr(client, "with_options", None)
                    if callable(with_options):
                        client = with_options(max_retries=0)
                    clients[cache_key] = client
        return client

    model.get_client = get_client


def _check_options(model: Any, model_id: str, options: dict[str, Any]) -> None:
    if not options:
        return
    options_class = getattr(model, "Options", None)
    fields = getattr(options_class, "model_fields", None)
    if options_class is None or fields is None:
        return
    unsupported = [name for name in options if name not in fields]
    if unsupported:
        accepted = ", ".join(sorted(fields)) or "none"
        raise _invalid(
            f"model '{model_id}' does not support {' or '.join(repr(u) for u in unsupported)} "
            f"(the options it takes: {accepted}); remove it or pick another model"
        )
    try:
        options_class(**options)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise _invalid(f"model '{model_id}': {_validation_text(exc)}")


def _validation_text(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors():
        where = ".".join(str(loc) for loc in error.get("loc", ())) or "options"
        parts.append(f"'{where}': {error.get('msg', 'invalid')} (got {error.get('input')!r})")
    return "; ".join(parts) or str(exc)


# ---------------------------------------------------------------------------
# errors


def _call_error(exc: Exception, model_id: str) -> NodeError:
    import llm

    if isinstance(exc, NodeError):
        return exc
    if isinstance(exc, llm.NeedsKeyException):
        return _invalid(
            f"model '{model_id}' needs an API key: {exc}. "
            f"Or choose another model with 'model' or ${MODEL_ENV_VAR} ('echo' works offline)."
        )
    status = _status_code(exc)
    detail = _detail(exc, with_type=status is None)
    if status == 429 or "ratelimit" in type(exc).__name__.lower():
        retry_after = _retry_after(exc)
        wait = f"; the provider asks to wait {retry_after:g}s" if retry_after is not None else ""
        return NodeError(
            f"model '{model_id}' is rate limited (HTTP 429): {detail}{wait}. "
            "Give the node a 'retry' (or the batch 'max_retries') to wait and try again",
            retryable=True,
            retry_after=retry_after,
        )
    if status is not None:
        retryable = status in (408, 409, 425) or status >= 500
        return NodeError(
            f"model '{model_id}' failed with HTTP {status}: {detail}",
            retryable=retryable,
            retry_after=_retry_after(exc) if retryable else None,
        )
    name = type(exc).__name__
    if "timeout" in name.lower() or "connection" in name.lower():
        return NodeError(f"model '{model_id}' could not be reached: {detail}", retryable=True)
    if isinstance(exc, NotImplementedError | ValueError | TypeError | AttributeError | KeyError):
        # What llm and its plugins raise for requests a model cannot take
        # ("does not support system prompts") and for their own bugs: a retry
        # would fail the same way.
        return _invalid(f"model '{model_id}' failed: {detail}")
    return NodeError(f"model '{model_id}' failed: {detail}", retryable=True)


def _status_code(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _detail(exc: Exception, *, with_type: bool = True) -> str:
    text = str(exc).strip()
    text = re.sub(r"^Error code: \d+ - ", "", text)  # the openai client's prefix
    if with_type or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _preview(text, 300)


def _retry_after(exc: Exception) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return max(0.0, float(millis) / 1000)
        value = headers.get("retry-after")
    except (TypeError, ValueError, AttributeError):
        return None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _invalid(message: str) -> NodeError:
    return NodeError(message, retryable=False)


# ---------------------------------------------------------------------------
# small helpers


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        # A template that resolved to data: the model gets it as JSON.
        return json.dumps(value, indent=2, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _strip_fences(text: str) -> str:
    # Models outside OpenAI's strict JSON mode sometimes wrap the JSON in a ``` block.
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _preview(text: str, limit: int = 200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
