"""The ``llm`` node: one prompt to a language model per run (or per batch item).

Models come from simonw's ``llm`` library, so every model its plugins provide
(OpenAI, Anthropic, local ones, the offline ``echo`` model of ``llm-echo``) and
every key stored with ``llm keys set`` work here unchanged; ``api_base`` points
the node at any OpenAI-compatible server instead. ``llm`` is imported only by
a workflow that has an ``llm`` node (:mod:`plait.nodes.llm_models` says what
that costs and what it defers).

Two paths, one behaviour. ``exec`` calls the model through ``llm`` (and, for
OpenAI models, the ``openai`` client). ``exec_async`` — what the ``async``
executor runs, and what ``auto`` picks for a parallel batch — sends an OpenAI
chat-completions model's request itself on the run's aiohttp session
(:mod:`plait.nodes.llm_async`), with the body llm's OpenAI plugin would build;
every other model runs ``exec`` in a thread. Both paths share the checks, the
error messages, the usage record and the answer handling below, and the tests
run on both.

Sharing models between threads: a node instance resolves each model once and
keeps the model object; parallel items then share it. That is safe for the
models we rely on — the OpenAI plugin keeps per-call state on the ``Response``
and its model object holds only configuration (plus, here, one ``openai``
client, which is documented as safe to share between threads), and ``echo``
keeps none — and it is what the ``llm`` CLI itself does within a conversation.

Retries belong to plait (a node's ``retry`` and a batch's ``max_retries``):
rate limits surface as ``NodeError(throttled=True, retry_after=...,
headers=...)``, and the OpenAI client's own silent retries are switched off.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from plait.nodes import llm_models
from plait.nodes.base import (
    Demand,
    ItemContext,
    NodeError,
    Output,
    Param,
    PlaitNode,
    Services,
    Usage,
)
from plait.nodes.llm_models import MODEL_ENV_VAR

# Options a workflow may give as params of their own; they go to the model
# with the rest of ``options``.
_OPTION_PARAMS = ("temperature", "max_tokens")
# Option names under which models take their output cap.
_OUTPUT_CAPS = ("max_tokens", "max_output_tokens", "max_completion_tokens")
# A rough price of one image in prompt tokens (OpenAI's high detail for a
# 1024 x 1024 picture), for the limiter's estimate.
_IMAGE_TOKENS = 765
# Secrets shorter than this are not scrubbed from messages (they would match
# ordinary words).
_MIN_SECRET = 6


class LlmCall:
    """Everything ``exec`` needs, taken from the item's params in ``prep``."""

    __slots__ = (
        "api_base", "ctx", "images", "info", "key", "model", "model_key", "options", "prompt", "schema", "system",
    )

    def __init__(
        self,
        ctx: ItemContext,
        prompt: str,
        system: str | None,
        model: str | None,
        options: dict[str, Any],
        schema: dict[str, Any] | None,
        images: tuple[str, ...],
        key: str | None,
        api_base: str | None,
    ) -> None:
        self.ctx = ctx
        self.prompt = prompt
        self.system = system
        self.model = model  # None: PLAIT_LLM_MODEL, else llm's default model
        self.options = options
        self.schema = schema
        self.images = images
        self.key = key
        self.api_base = api_base
        # A model made for an api_base differs with and without a key (see llm_models).
        self.model_key = (model or "", api_base or "", bool(api_base and key))
        self.info: ModelInfo | None = None  # the resolved model, once demand or exec found it

    @property
    def max_output_tokens(self) -> int | None:
        for name in _OUTPUT_CAPS:
            value = self.options.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return None


class ModelInfo:
    """A resolved model and what the node needs to know of it, worked out once."""

    __slots__ = ("attachment_types", "can_stream", "chat", "id", "limiter_key", "model", "openai", "provider", "schema")

    def __init__(self, model: Any) -> None:
        self.model = model
        self.id = str(model.model_id)
        self.provider = llm_models.provider_of(model)
        self.openai = llm_models.is_openai_plugin(model)
        self.chat = llm_models.is_openai_chat(model)
        self.can_stream = bool(getattr(model, "can_stream", False))
        self.schema = bool(getattr(model, "supports_schema", False))
        self.attachment_types = frozenset(getattr(model, "attachment_types", None) or ())
        self.limiter_key = f"llm:{self.provider}/{self.id}"  # the default limiter of its calls


class LlmNode(PlaitNode):
    """Send a prompt to a language model through the ``llm`` library."""

    type_name = "llm"
    description = "Prompt a language model (any model the llm library knows); schema gives JSON"
    primary_output = "response"
    # The same prompt to the same model with the same options is paid for once
    # (as pflow caches LLM calls); a node says "cache": false to opt out.
    cacheable = True

    param_specs = (
        Param("prompt", "string", required=True, description="The prompt text"),
        Param("system", "string", default=None, description="A system prompt"),
        Param(
            "model",
            "string",
            default=None,
            description=f"A model id or alias known to llm (`llm models`); default: ${MODEL_ENV_VAR}, "
            "else llm's default model (`llm models default`). With `api_base`: the name that server knows",
        ),
        Param("temperature", "number", default=None, description="Sampling temperature"),
        Param("max_tokens", "integer", default=None, description="Most tokens to generate"),
        Param(
            "options",
            "object",
            default=None,
            description="More options for the model, as `llm -o NAME VALUE` takes them "
            "(`llm models --options` lists each model's), checked by `plait validate`",
        ),
        Param(
            "schema",
            "object",
            default=None,
            description="A JSON schema: the model answers with matching JSON, "
            "returned parsed as the response; an answer that does not match fails the item",
        ),
        Param(
            "images",
            "array|string",
            default=None,
            description="Images for a model that takes them: file paths, http(s) URLs, "
            "data: URLs or base64 image data (one, or a list)",
        ),
        Param(
            "key",
            "string",
            default=None,
            description="An API key, or the name of one stored with `llm keys set NAME`; "
            "default: the model's own key. Kept out of errors and run records",
        ),
        Param(
            "api_base",
            "string",
            default=None,
            description="The base URL of an OpenAI-compatible server (`http://localhost:11434/v1`); "
            "`model` is then the model name that server knows",
        ),
    )
    output_specs = (
        Output("response", "any", "The model's text, or the parsed object when schema is given"),
        Output(
            "llm_usage",
            "object",
            "{model, input_tokens, output_tokens, cost_usd} and cached_tokens when the provider "
            "reports a cache hit; tokens are 0 when the model reports none, cost_usd is null "
            "when the model's price is unknown",
        ),
    )

    def __init__(self, node_id: str = "", max_retries: int = 1, wait: float = 0.0) -> None:
        super().__init__(node_id=node_id, max_retries=max_retries, wait=wait)
        self._models: dict[tuple[str, str, bool], ModelInfo] = {}
        self._lock = threading.Lock()
        self._checked: set[Any] = set()
        self._keys: dict[tuple[str, str | None], str] = {}

    # -- static checks -------------------------------------------------------

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        return _static_problems(params)

    @classmethod
    def check_warnings(cls, params: dict[str, Any]) -> list[str]:
        # A model that needs a key none gives: the node fails when it is reached, after
        # the nodes before it ran. Not refused: a branch may never reach it, and the key
        # may be stored before then.
        model, key, api_base = params.get("model"), params.get("key"), params.get("api_base")
        if key is not None or api_base is not None or not isinstance(model, str) or not model.strip():
            return []
        if _templated(model):
            return []
        try:
            found = llm_models.resolve(model.strip(), None)
        except Exception:  # check_params reports what is wrong with the model
            return []
        if not getattr(found, "needs_key", None):
            return []
        try:
            found.get_key()  # llm's own look-up: its stored keys, then the model's environment variable
        except Exception as exc:  # llm's NeedsKeyException, or a keys file it cannot read
            return [f"model '{model.strip()}' needs an API key and none is set ({str(exc) or _detail(exc)}); "
                    "the node fails when it runs unless one is set before then, or the node is given a 'key'"]
        return []

    @classmethod
    def warm_up(cls, services: Services) -> None:
        llm_models.load_llm()

    # -- one item ----------------------------------------------------------------

    def prep(self, shared: ItemContext) -> LlmCall:
        get = shared.params.get
        prompt = get("prompt")
        if type(prompt) is not str:
            prompt = _as_text(prompt)
        if not prompt or prompt.isspace():
            raise _invalid("'prompt' is empty")
        system = get("system")
        if system is not None:
            system = _as_text(system) or None
        model = get("model")
        if model is not None:
            if not isinstance(model, str):
                raise _invalid(f"'model' must be a string, got {type(model).__name__}")
            model = model.strip() or None

        if get("options") is None and get("temperature") is None and get("max_tokens") is None:
            options: dict[str, Any] = {}
        else:
            options = _options(shared.params)
        schema = get("schema")
        if schema is not None and not isinstance(schema, dict):
            raise _invalid(f"'schema' must be a JSON schema object, got {type(schema).__name__}")
        images = get("images")
        images = _images(images) if images else ()
        key = get("key")
        if key is not None and not isinstance(key, str):
            raise _invalid(f"'key' must be a string (a key, or the name of a stored key), got {type(key).__name__}")
        api_base = get("api_base")
        if api_base is not None:
            problem = _api_base_problem(api_base)
            if problem:
                raise _invalid(problem)
            if not model:
                raise _invalid("'api_base' needs 'model': the name of the model on that server")
            api_base = api_base.strip()
        return LlmCall(shared, prompt, system, model, options, schema or None, images, key or None, api_base or None)

    def demand(self, prep_res: LlmCall) -> Demand | None:
        call = prep_res
        info = call.info = self._models.get(call.model_key)
        if info is None:
            try:
                info = call.info = self._model(call)
            except NodeError:
                return None  # exec reports it
        prompt, system = call.prompt, call.system
        images = _IMAGE_TOKENS * len(call.images) if call.images else 0
        estimate = estimate_prompt_tokens(prompt, system) + images
        # an image's real token count depends on its size: its estimate is no bound
        bound = prompt_tokens_bound(prompt, system) + images * 2
        if call.options:
            cap = call.max_output_tokens
            return Demand(info.limiter_key, estimate + (cap or 0), info.id, estimate, cap, bound)
        return Demand(info.limiter_key, estimate, info.id, estimate, None, bound)

    def exec(self, prep_res: LlmCall) -> dict[str, Any]:
        call = prep_res
        info = call.info or self._models.get(call.model_key) or self._model(call)
        # Only what is set: llm folds unknown keywords into options, which costs.
        extra: dict[str, Any] = {}
        if call.options or call.schema is not None or call.images:
            self._check_call(call, info)
            if call.images:
                extra["attachments"] = self._attachments(call, info)
        if call.key is not None:
            extra["key"] = call.key
        if info.openai:
            llm_models.forget_headers()
        try:
            # Stream when the model can, as the llm CLI does: the OpenAI plugin's
            # streaming path tolerates servers that report no usage; its
            # one-shot path crashes on them.
            if extra:
                response = info.model.prompt(
                    call.prompt, system=call.system, schema=call.schema, stream=info.can_stream,
                    options=call.options or None, **extra,
                )
            else:
                response = info.model.prompt(
                    call.prompt, system=call.system, schema=call.schema, stream=info.can_stream,
                    options=call.options or None,
                )
            text = response.text()
            usage = response.usage()
        except Exception as exc:
            raise self._call_error(exc, call, info) from exc
        details = usage.details
        input_tokens = usage.input
        output_tokens = usage.output
        return self.finish(
            call,
            info.id,
            text,
            input_tokens if type(input_tokens) is int else 0,  # _tokens, written out
            output_tokens if type(output_tokens) is int else 0,
            _cached_tokens(details) if details else 0,
            llm_models.last_headers() if info.openai else None,
        )

    async def exec_async(self, prep_res: LlmCall) -> dict[str, Any]:
        import asyncio

        call = prep_res
        info = self._models.get(call.model_key)
        if info is None:
            # The first resolution may import llm and load its plugins: not on the loop.
            info = await asyncio.to_thread(self._model, call)
        if not info.chat or os.environ.get("LLM_OPENAI_SHOW_RESPONSES"):
            return await _in_thread(call.ctx.services, self.exec, call)
        from plait.nodes.llm_async import chat

        self._check_call(call, info)
        return await chat(self, call, info)

    # -- shared by both paths ------------------------------------------------

    def _model(self, call: LlmCall) -> ModelInfo:
        key = call.model_key
        info = self._models.get(key)
        if info is not None:
            return info
        with self._lock:
            info = self._models.get(key)
            if info is None:
                info = ModelInfo(llm_models.resolve(call.model, call.api_base, keyed=key[2]))
                self._models[key] = info
        return info

    def _check_call(self, call: LlmCall, info: ModelInfo) -> None:
        if call.options:
            marker = (info.id, _freeze(call.options))
            if marker not in self._checked:
                problems = llm_models.option_problems(info.model, info.id, call.options)
                if problems:
                    raise _invalid(problems[0])
                self._checked.add(marker)
        if call.schema is not None:
            if not info.schema:
                raise _invalid(_no_schema_message(info.id))
            _validator(call.schema)  # a schema that is no JSON schema fails before the call
        if call.images and not info.attachment_types:
            raise _invalid(_no_images_message(info.id))

    def _attachments(self, call: LlmCall, info: ModelInfo) -> list[Any]:
        return [
            _attachment(image, number, info)
            for number, image in enumerate(call.images, start=1)
        ]

    def api_key(self, call: LlmCall, info: ModelInfo) -> str | None:
        """The key the OpenAI plugin would send for this call (None: a keyless
        model, which gets a placeholder)."""
        model = info.model
        if not getattr(model, "needs_key", None):
            return None
        cache_key = (info.id + "\0" + (call.api_base or ""), call.key)
        found = self._keys.get(cache_key)
        if found is None:
            found = model.get_key(call.key)  # NeedsKeyException when there is none
            self._keys[cache_key] = found
        return found

    def finish(
        self,
        call: LlmCall,
        model_id: str,
        text: str,
        input_tokens: int,
        output_tokens: int,
        cached_tokens: int,
        headers: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        """Record the call's usage, tell the limiter what the provider said, and
        turn the answer into the node's outputs."""
        ctx = call.ctx
        services = ctx.services
        # positional: Usage(model, input_tokens, output_tokens, cached_tokens), keywords cost more
        recorded = services.record_usage(ctx, Usage(model_id, input_tokens, output_tokens, cached_tokens))
        if headers:
            rate = rate_headers(headers)
            if rate:
                services.observe_rate(ctx, rate)
        llm_usage: dict[str, Any] = {
            "model": model_id,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": recorded.cost_usd if recorded is not None else None,
        }
        if cached_tokens:
            llm_usage["cached_tokens"] = cached_tokens
        if call.schema is None:
            return {"response": text, "llm_usage": llm_usage}
        try:
            parsed = json.loads(_strip_fences(text))
        except json.JSONDecodeError as exc:
            # A model's output varies from one call to the next, so a retry may fix it.
            raise NodeError(
                f"model '{model_id}' was asked for JSON matching 'schema' but answered "
                f"with text that is not JSON ({exc.msg}): {_preview(text)}",
                outputs={"response": text, "llm_usage": llm_usage},
                retryable=True,
            ) from exc
        mismatch = schema_mismatch(call.schema, parsed)
        if mismatch is not None:
            raise NodeError(
                f"model '{model_id}' answered JSON that does not match 'schema': {mismatch}",
                outputs={"response": parsed, "llm_usage": llm_usage},
                retryable=True,
            )
        return {"response": parsed, "llm_usage": llm_usage}

    def _call_error(self, exc: Exception, call: LlmCall, info: ModelInfo) -> NodeError:
        llm = llm_models.load_llm()
        if isinstance(exc, NodeError):
            return exc
        if isinstance(exc, llm.NeedsKeyException):
            return needs_key_error(info.id, str(exc))
        secrets = self.secrets(call, info)
        status = _status_code(exc)
        if status is not None:
            return http_error(info.id, status, _api_detail(exc), _headers_of(exc), secrets)
        detail = scrub(_detail(exc), secrets)
        if "ratelimit" in type(exc).__name__.lower():
            return http_error(info.id, 429, detail, _headers_of(exc), secrets)
        name = type(exc).__name__.lower()
        if "timeout" in name or "connection" in name:
            return unreachable_error(info.id, detail)
        if isinstance(exc, NotImplementedError | ValueError | TypeError | AttributeError | KeyError):
            # What llm and its plugins raise for requests a model cannot take
            # ("does not support system prompts") and for their own bugs: a retry
            # would fail the same way.
            return _invalid(f"model '{info.id}' failed: {detail}")
        return NodeError(f"model '{info.id}' failed: {detail}", retryable=True)

    def secrets(self, call: LlmCall, info: ModelInfo) -> list[str]:
        """The key values an error message must not show: the ``key`` param and
        the key it names."""
        found = [call.key] if call.key else []
        try:
            resolved = self.api_key(call, info)
        except Exception:
            resolved = None
        if resolved:
            found.append(resolved)
        return found


# ---------------------------------------------------------------------------
# params


def _options(p: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    given = p.get("options")
    if given is not None:
        if not isinstance(given, dict):
            raise _invalid(f"'options' must be an object of option names and values, got {type(given).__name__}")
        options.update(given)
    temperature = p.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise _invalid(f"'temperature' must be a number, got {temperature!r}")
        if "temperature" in options:
            raise _invalid(_twice_message("temperature"))
        options["temperature"] = temperature
    max_tokens = p.get("max_tokens")
    if max_tokens is not None:
        if isinstance(max_tokens, float) and max_tokens.is_integer():
            max_tokens = int(max_tokens)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid(f"'max_tokens' must be a positive integer, got {max_tokens!r}")
        if "max_tokens" in options:
            raise _invalid(_twice_message("max_tokens"))
        options["max_tokens"] = max_tokens
    return options


def _twice_message(name: str) -> str:
    return f"'{name}' is given both as a param and in 'options': keep one"


def _images(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise _invalid(f"'images' must be a list of images (paths, URLs or base64 data), got {type(value).__name__}")
    for number, item in enumerate(items, start=1):
        if not isinstance(item, str) or not item.strip():
            got = "an empty string" if isinstance(item, str) else type(item).__name__
            raise _invalid(
                f"image {number} of 'images' must be a file path, an http(s) URL, a data: URL "
                f"or base64 image data, got {got}"
            )
    return tuple(item.strip() for item in items)


def _api_base_problem(api_base: Any) -> str | None:
    if not isinstance(api_base, str) or not re.match(r"^https?://[^/\s]+", api_base.strip()):
        return (
            f"'api_base' must be the http(s) URL of an OpenAI-compatible API, such as "
            f"'http://localhost:11434/v1', got {_preview(str(api_base), 80)!r}"
        )
    return None


def _static_problems(params: dict[str, Any]) -> list[tuple[str, str | None]]:
    """What ``plait validate`` can tell about an llm node's params before the run."""
    problems: list[tuple[str, str | None]] = []

    def add(message: str, where: str) -> None:
        problems.append((message, where))

    # (option name, value, where it was given) for every option the model gets
    given: list[tuple[str, Any, str]] = []
    options = params.get("options")
    if isinstance(options, dict):
        given += [(name, value, f"options.{name}") for name, value in options.items()]
    elif options is not None and not _templated(options):
        add(f"'options' must be an object of option names and values, got {type(options).__name__}", "options")
    for name in _OPTION_PARAMS:
        value = params.get(name)
        if value is None:
            continue
        if isinstance(options, dict) and name in options:
            add(_twice_message(name), name)
        given.append((name, value, name))
    max_tokens = params.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens < 1:
        add(f"'max_tokens' must be a positive integer, got {max_tokens!r}", "max_tokens")

    schema = params.get("schema")
    if isinstance(schema, dict) and not _templated(schema):
        problem = schema_problem(schema)
        if problem:
            add(f"'schema' is not a valid JSON schema: {problem}", "schema")

    images = params.get("images")
    if isinstance(images, list):
        for number, item in enumerate(images, start=1):
            if not isinstance(item, str) or not item.strip():
                add(f"image {number} of 'images' must be a file path, an http(s) URL, a data: URL or base64 image data", "images")

    api_base = params.get("api_base")
    if api_base is not None and not _templated(api_base):
        problem = _api_base_problem(api_base)
        if problem:
            add(problem, "api_base")
            return problems
    model = params.get("model")
    if api_base is not None and not model:
        add("'api_base' needs 'model': the name of the model on that server", "model")
        return problems
    if not isinstance(model, str) or not model.strip() or _templated(model) or _templated(api_base):
        return problems

    try:
        model_obj = llm_models.resolve(model.strip(), api_base.strip() if isinstance(api_base, str) else None)
    except NodeError as exc:
        add(exc.message, "model")
        return problems
    except Exception as exc:  # a plugin that fails to load or to list its models
        add(f"could not look model '{model.strip()}' up in llm: {_detail(exc)}", "model")
        return problems
    info = ModelInfo(model_obj)
    for name, value, where in given:
        unchecked = (name,) if _templated(value) else ()
        for message in llm_models.option_problems(model_obj, info.id, {name: value}, unchecked):
            add(message, where)
    if schema is not None and not info.schema:
        add(_no_schema_message(info.id), "schema")
    if images and not info.attachment_types:
        add(_no_images_message(info.id), "images")
    return problems


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def _no_schema_message(model_id: str) -> str:
    return (
        f"model '{model_id}' does not support 'schema' (structured output); "
        "use a model that does, such as the OpenAI ones, or drop 'schema'"
    )


def _no_images_message(model_id: str) -> str:
    return (
        f"model '{model_id}' does not take images (it accepts no attachments); "
        "use a model that does, such as gpt-4o-mini, or drop 'images'"
    )


def _freeze(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        pass
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return repr(value)


# ---------------------------------------------------------------------------
# images


_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w-]+=[^;,]*)*)(;base64)?,", re.IGNORECASE)
_BASE64 = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}\s*$")


def _attachment(image: str, number: int, info: ModelInfo) -> Any:
    """An ``llm.Attachment`` for one entry of ``images``, its type known (so llm
    does not guess it again) and accepted by the model."""
    llm = llm_models.load_llm()
    from llm.utils import mimetype_from_path, mimetype_from_string

    which = f"image {number} of 'images'"
    lowered = image[:8].lower()
    if lowered.startswith(("http://", "https://")):
        attachment = llm.Attachment(url=image)
        try:
            kind = attachment.resolve_type()  # a HEAD request, as llm makes it
        except Exception as exc:
            raise NodeError(f"{which} ({_preview(image, 120)}) could not be fetched: {_detail(exc)}", retryable=True)
        attachment.type = (kind or "").split(";")[0].strip() or None
    elif lowered.startswith("data:"):
        match = _DATA_URL.match(image)
        if match is None or not match.group(3):
            raise _invalid(f"{which} is a data: URL that is not base64 ('data:image/png;base64,...')")
        content = _decode(image[match.end() :], which)
        attachment = llm.Attachment(content=content, type=match.group(1) or mimetype_from_string(content))
    elif os.path.isfile(os.path.expanduser(image)):
        path = os.path.abspath(os.path.expanduser(image))
        attachment = llm.Attachment(path=path, type=mimetype_from_path(path))
    elif len(image) >= 16 and _BASE64.match(image):
        content = _decode(image, which)
        kind = mimetype_from_string(content)
        if not kind or not kind.startswith(("image/", "application/pdf")):
            raise _invalid(f"{which} is base64 data, but not of an image")
        attachment = llm.Attachment(content=content, type=kind)
    else:
        raise _invalid(
            f"{which}: no such file: {_preview(image, 120)} (paths are relative to the working "
            f"directory {os.getcwd()}); give a file path, an http(s) URL, a data: URL or base64 image data"
        )
    kind = attachment.type
    if kind not in info.attachment_types:
        takes = ", ".join(sorted(info.attachment_types))
        raise _invalid(
            f"model '{info.id}' does not take {kind or 'this kind of file'} ({which}); it takes {takes}"
        )
    return attachment


def _decode(data: str, which: str) -> bytes:
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"{which} is not valid base64 ({exc})")


# ---------------------------------------------------------------------------
# schema


_validators: dict[str, Any] = {}
_validators_lock = threading.Lock()


def _validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for ``schema``, made once per distinct schema.
    A schema that is not valid raises NodeError (no retry helps)."""
    marker = json.dumps(schema, sort_keys=True, default=str)
    found = _validators.get(marker)
    if found is not None:
        return found
    from jsonschema import exceptions, validators

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except exceptions.SchemaError as exc:
        raise _invalid(f"'schema' is not a valid JSON schema: {_schema_error_text(exc)}")
    made = cls(schema)
    with _validators_lock:
        _validators[marker] = made
    return made


def schema_problem(schema: dict[str, Any]) -> str | None:
    """What is wrong with a JSON schema itself (None: nothing)."""
    try:
        _validator(schema)
    except NodeError as exc:
        return exc.message.split(": ", 1)[-1]
    return None


def schema_mismatch(schema: dict[str, Any], instance: Any) -> str | None:
    """Where and how ``instance`` fails ``schema`` (None: it matches)."""
    from jsonschema import exceptions

    error = exceptions.best_match(_validator(schema).iter_errors(instance))
    if error is None:
        return None
    return f"at {_json_path(error.absolute_path)}: {error.message}"


def _schema_error_text(exc: Any) -> str:
    where = ".".join(str(p) for p in exc.absolute_path) or "the top level"
    return f"at {where}: {exc.message}"


def _json_path(parts: Any) -> str:
    path = "$"
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if re.match(r"^[A-Za-z_]\w*$", str(part)) else f"[{json.dumps(part)}]")
    return path


# ---------------------------------------------------------------------------
# errors (shared by the async path)


def http_error(
    model_id: str,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None,
    secrets: list[str] | tuple[str, ...] = (),
) -> NodeError:
    """The item's failure for an HTTP error answer, the same on both paths."""
    detail = scrub(detail, secrets)
    plain = plain_headers(headers)
    retry_after = retry_after_of(plain)
    wait = f"; the provider asks to wait {retry_after:g}s" if retry_after is not None else ""
    if status == 429:
        return NodeError(
            f"model '{model_id}' is rate limited (HTTP 429): {detail}{wait}. "
            "A run pauses the model's limiter and retries the call apart from 'max_retries'; "
            "set 'limits' with the provider's rpm/tpm to stay under them (docs/limits.md)",
            retryable=True,
            retry_after=retry_after,
            throttled=True,
            headers=plain,
        )
    if status == 503 and retry_after is not None:
        return NodeError(
            f"model '{model_id}' is overloaded (HTTP 503): {detail}{wait}",
            retryable=True,
            retry_after=retry_after,
            throttled=True,
            headers=plain,
        )
    retryable = status in (408, 409, 425) or status >= 500
    hint = ""
    if status in (401, 403):
        hint = (
            ". Check the model's key (`llm keys list`; a node's 'key' is a key or the name "
            "of a stored one)"
        )
    return NodeError(
        f"model '{model_id}' failed with HTTP {status}: {detail}{hint}",
        retryable=retryable,
        retry_after=retry_after if retryable else None,
        headers=plain or None,
    )


def unreachable_error(model_id: str, detail: str) -> NodeError:
    return NodeError(f"model '{model_id}' could not be reached: {detail}", retryable=True)


def needs_key_error(model_id: str, detail: str) -> NodeError:
    return _invalid(
        f"model '{model_id}' needs an API key: {detail}. Or give the node a 'key' (a key, or "
        f"the name of a stored one), or choose another model with 'model' or ${MODEL_ENV_VAR} "
        "('echo' works offline)."
    )


def error_detail(body: Any, text: str) -> str:
    """The provider's own words from an error body (``{"error": {"message": ...}}``)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            message = inner.get("message")
            if isinstance(message, str) and message.strip():
                return _preview(message, 300)
        elif isinstance(inner, str) and inner.strip():
            return _preview(inner, 300)
    return _preview(text, 300) or "(no details)"


def scrub(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1 ***", text)


_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{4,}", re.IGNORECASE)


def plain_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def rate_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a limiter learns from: ``x-ratelimit-*`` and ``retry-after``."""
    return {
        name: value
        for name, value in plain_headers(headers).items()
        if name.startswith("x-ratelimit-") or name in ("retry-after", "retry-after-ms")
    }


def retry_after_of(headers: Mapping[str, str]) -> float | None:
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


def _status_code(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _headers_of(exc: Exception) -> Mapping[str, str] | None:
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return headers if isinstance(headers, Mapping) or hasattr(headers, "items") else None


def _api_detail(exc: Exception) -> str:
    """The provider's message from an openai client error (its ``body`` is the
    parsed ``error`` object), else the exception's text."""
    text = re.sub(r"^Error code: \d+ - ", "", str(exc).strip())  # the openai client's prefix
    return error_detail(getattr(exc, "body", None), text)


def _detail(exc: BaseException, *, with_type: bool = True) -> str:
    text = str(exc).strip()
    if with_type or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return _preview(text, 300)


def _invalid(message: str) -> NodeError:
    return NodeError(message, retryable=False)


async def _in_thread(services: Services, fn: Any, arg: Any) -> Any:
    """Run a blocking call in the run's pool for llm calls, so an async batch of
    a model without an async path is bounded by the batch, not by asyncio's
    small default pool."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    pool = services.resource(
        "llm.threads",
        lambda: ThreadPoolExecutor(max_workers=256, thread_name_prefix="plait-llm"),
        lambda p: p.shutdown(wait=False, cancel_futures=True),
    )
    return await asyncio.get_running_loop().run_in_executor(pool, fn, arg)


# ---------------------------------------------------------------------------
# token estimates


def estimate_tokens(text: str) -> int:
    """About how many tokens ``text`` is: a character in four for ASCII, more
    for other scripts (a CJK character is about one token).

    A local stand-in for the runtime's tuned estimate (nodes do not import the
    runtime); what a limiter reserves with it is settled with the real usage.
    """
    if not text:
        return 0
    if text.isascii():
        return (len(text) + 3) // 4
    extra = len(text.encode("utf-8")) - len(text)  # bytes beyond one per character
    return max(1, math.ceil(len(text) / 4 + extra / 3))


def estimate_prompt_tokens(prompt: str, system: str | None = None) -> int:
    """``estimate_tokens`` of a chat request with its messages' framing (a few
    tokens per message and for the reply's start)."""
    total = estimate_tokens(prompt) + 4 + 3
    if system:
        total += estimate_tokens(system) + 4
    return total


def prompt_tokens_bound(prompt: str, system: str | None = None) -> int:
    """A count the real prompt tokens cannot exceed: a token of a byte-level BPE
    is at least one byte, plus a generous allowance for each message's framing."""
    # an ASCII text is as many UTF-8 bytes as characters (most prompts: no encoding)
    total = (len(prompt) if prompt.isascii() else len(prompt.encode("utf-8"))) + 16 + 3
    if system:
        total += len(system.encode("utf-8")) + 16
    return total


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
    return value if type(value) is int else 0


def _cached_tokens(details: Any) -> int:
    """Prompt tokens served from the provider's cache, where llm's plugin kept
    the count: OpenAI's ``prompt_tokens_details.cached_tokens``, Anthropic's
    ``cache_read_input_tokens``."""
    if not isinstance(details, dict):
        return 0
    inner = details.get("prompt_tokens_details")
    if isinstance(inner, dict):
        found = _tokens(inner.get("cached_tokens"))
        if found:
            return found
    return _tokens(details.get("cache_read_input_tokens")) or _tokens(details.get("cached_tokens"))


_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _strip_fences(text: str) -> str:
    # Models outside OpenAI's strict JSON mode sometimes wrap the JSON in a ``` block.
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _preview(text: str, limit: int = 200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
