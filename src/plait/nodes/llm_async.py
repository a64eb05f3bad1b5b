"""The llm node's async path: an OpenAI chat-completions call on aiohttp.

Used by ``LlmNode.exec_async`` for a model of llm's OpenAI plugin that speaks
the chat-completions API (OpenAI's own models of that kind, every
``extra-openai-models.yaml`` entry, a node's ``api_base``). The request body
is the one the plugin builds (its ``build_messages`` and ``build_kwargs``
on an ``llm.Prompt``), sent without streaming, on one aiohttp session per
run (``Services.async_resource("llm.aiohttp")``), so a batch keeps thousands
of calls in flight on one event loop without a thread each. The answer goes
through the same ``finish`` as the sync path, and failures through the same
messages (``http_error`` and friends), so the two paths differ only in how
the bytes travel. Imported only when that path runs: aiohttp is not imported
by a workflow that does not use it.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

from plait.nodes.base import NodeError
from plait.nodes.llm import (
    LlmCall,
    ModelInfo,
    error_detail,
    http_error,
    needs_key_error,
    unreachable_error,
)

if TYPE_CHECKING:
    import aiohttp

    from plait.nodes.llm import LlmNode

SESSION_KEY = "llm.aiohttp"
DEFAULT_API_BASE = "https://api.openai.com/v1"
# The openai client's own defaults: 5 s to connect, 600 s of silence at most.
_CONNECT_S = 5.0
_READ_S = 600.0
# An answer larger than this is refused (a chat completion is far smaller).
_MAX_BODY = 64 * 1024 * 1024


def _new_session() -> aiohttp.ClientSession:
    import aiohttp

    return aiohttp.ClientSession(
        # The batch's max_concurrent bounds the calls in flight, not the pool.
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_S, sock_read=_READ_S),
        # As the openai client (httpx) does: HTTP(S)_PROXY and NO_PROXY apply.
        trust_env=True,
    )


async def _close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


def request_of(node: LlmNode, call: LlmCall, info: ModelInfo) -> tuple[str, dict[str, str], bytes]:
    """The URL, headers and body of the call, as llm's OpenAI plugin makes them."""
    from plait.nodes.llm_models import load_llm

    llm = load_llm()
    model = info.model
    if call.system and not getattr(model, "allows_system_prompt", True):
        raise NodeError(
            f"model '{info.id}' failed: NotImplementedError: Model does not support system prompts",
            retryable=False,
        )
    attachments = node._attachments(call, info) if call.images else None
    prompt = llm.Prompt(
        call.prompt,
        model=model,
        system=call.system,
        attachments=attachments,
        schema=call.schema,
        options=model.Options(**call.options),
    )
    messages = model.build_messages(prompt, None, image_detail=getattr(prompt.options, "image_detail", None))
    body = {
        "model": model.model_name or model.model_id,
        "messages": messages,
        "stream": False,
        **model.build_kwargs(prompt, False),
    }
    try:
        key = node.api_key(call, info)
    except llm.NeedsKeyException as exc:
        raise needs_key_error(info.id, str(exc))
    headers = {
        # The plugin sends a placeholder to keyless OpenAI-compatible servers.
        "Authorization": f"Bearer {key or 'DUMMY_KEY'}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    headers.update(getattr(model, "headers", None) or {})
    base = getattr(model, "api_base", None) or os.environ.get("OPENAI_BASE_URL") or DEFAULT_API_BASE
    return base.rstrip("/") + "/chat/completions", headers, json.dumps(body).encode()


async def chat(node: LlmNode, call: LlmCall, info: ModelInfo) -> dict[str, Any]:
    import aiohttp

    services = call.ctx.services
    session = await services.async_resource(SESSION_KEY, _new_session, _close_session)
    try:
        if call.images:
            # Reading files and asking a URL for its type block: not on the loop.
            url, headers, body = await asyncio.to_thread(request_of, node, call, info)
        else:
            url, headers, body = request_of(node, call, info)
    except Exception as exc:  # what llm raises for a request the model cannot take, as on the sync path
        raise node._call_error(exc, call, info) from exc
    try:
        async with session.post(url, data=body, headers=headers) as response:
            status = response.status
            answer_headers = response.headers
            raw = await _read(response, info.id)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise unreachable_error(info.id, detail)
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if status >= 400:
        raise http_error(info.id, status, error_detail(data, text), answer_headers, node.secrets(call, info))
    content, input_tokens, output_tokens, cached_tokens = _completion(data, text, info.id)
    return node.finish(call, info.id, content, input_tokens, output_tokens, cached_tokens, answer_headers)


async def _read(response: aiohttp.ClientResponse, model_id: str) -> bytes:
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > _MAX_BODY:
            raise NodeError(
                f"model '{model_id}' answered with more than {_MAX_BODY >> 20} MiB; refused",
                retryable=False,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _completion(data: Any, text: str, model_id: str) -> tuple[str, int, int, int]:
    """(text, input tokens, output tokens, cached tokens) of a chat completion."""
    try:
        message = data["choices"][0]["message"]
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TypeError("content is not text")
    except (TypeError, KeyError, IndexError, AttributeError):
        raise NodeError(
            f"model '{model_id}' answered with something that is not a chat completion: {_short(text)}",
            retryable=True,
        ) from None
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return content, 0, 0, 0
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return content, _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens")), _count(cached)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _short(text: str, limit: int = 200) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."
