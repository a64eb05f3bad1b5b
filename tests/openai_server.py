"""A real, local OpenAI-compatible chat server for the ``llm`` node's tests.

It speaks ``POST /v1/chat/completions`` over HTTP on 127.0.0.1 (a random port,
served from a background thread), both as one JSON body and as a
``stream: true`` server-sent-event stream, the way the OpenAI plugin of ``llm``
calls it (it streams when the model can). Tests point the real ``llm`` library
at it with :func:`write_llm_config`, so the whole path — plait, ``llm``, the
``openai`` client, HTTP — is exercised; nothing is mocked.

Knobs a test can turn:

* ``reply``: the answer text, or a function of the request body (so a parallel
  batch can echo each item's prompt back).
* ``usage``: token counts to report, or ``None`` to report none; a
  ``cached_tokens`` entry is reported as OpenAI does
  (``prompt_tokens_details.cached_tokens``).
* ``echo_key_in_errors``: error answers end with the bearer token the request
  carried, as some providers' "incorrect API key" messages do (to show that the
  client keeps it out of its own messages).
* ``rate_limit(times, retry_after)``: answer 429 with ``Retry-After`` that many
  times before answering normally; ``fail(times, status)`` does the same with
  any error status.
* ``enforce(rpm=..., tpm=...)``: the server keeps its own limits the way a
  provider does — token buckets of requests and of tokens (each call costs the
  prompt + completion tokens it reports, or ``token_cost(body)``), refilled
  continuously, holding a minute's worth unless ``burst_requests`` /
  ``burst_tokens`` say less. A call over a limit gets 429 with ``Retry-After``
  (whole seconds, rounded up), ``retry-after-ms`` and the OpenAI
  ``x-ratelimit-*`` headers; every answer carries ``x-ratelimit-limit-*``
  (what the bucket holds), ``-remaining-*`` and ``-reset-*`` (the time until
  it is full again, as ``"1s"``, ``"6m0s"``, ``"250ms"``). A refused call
  costs nothing.

Every request is recorded (path, headers, parsed JSON body) in ``requests``;
``log`` holds ``(time.monotonic(), status)`` per chat request, and
``request_count``, ``ok_count``, ``throttled_count`` (429s from ``enforce``) and
``failed_count`` (the scripted failures) count them.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Reply = str | Callable[[dict[str, Any]], str]

DEFAULT_REPLY = "Hello from the local model"
DEFAULT_USAGE = {"prompt_tokens": 11, "completion_tokens": 7}


class RecordedRequest:
    def __init__(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    # Shortcuts for what tests assert on most.
    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def system(self) -> str | None:
        for message in self.messages:
            if message.get("role") == "system":
                return _text_of(message.get("content"))
        return None

    @property
    def prompt(self) -> str | None:
        users = [m for m in self.messages if m.get("role") == "user"]
        return _text_of(users[-1].get("content")) if users else None

    def __repr__(self) -> str:
        return f"RecordedRequest({self.path!r}, {self.body!r})"


def _text_of(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


class OpenAIServer:
    """``with OpenAIServer() as server: ... server.base_url ...``"""

    def __init__(self, reply: Reply = DEFAULT_REPLY, usage: dict[str, int] | None = None) -> None:
        self.reply: Reply = reply
        self.usage: dict[str, int] | None = dict(DEFAULT_USAGE) if usage is None else usage
        self.delay = 0.0  # seconds to wait before answering, to make overlap visible
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._failures_left = 0
        self._failure_status = 429
        self._retry_after: str | None = None
        self.failed_count = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.log: list[tuple[float, int]] = []
        self.ok_count = 0
        self.throttled_count = 0
        self._limits: _Limits | None = None
        self.echo_key_in_errors = False

    # -- control ---------------------------------------------------------

    def enforce(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        burst_requests: float | None = None,
        burst_tokens: float | None = None,
        token_cost: Callable[[dict[str, Any]], int] | None = None,
    ) -> None:
        """Keep these limits from now on (None: no limit of that kind)."""
        with self._lock:
            self._limits = _Limits(rpm, tpm, burst_requests, burst_tokens, token_cost)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.log)

    def throttled_since(self, index: int) -> int:
        """429s among the chat requests from the ``index``-th one on."""
        with self._lock:
            return sum(1 for _, status in self.log[index:] if status == 429)

    def rate_limit(self, times: int, retry_after: float = 0.1) -> None:
        """Answer the next ``times`` requests with 429 and this ``Retry-After``."""
        self.fail(times, 429, retry_after=retry_after)

    def fail(self, times: int, status: int, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests with this error status."""
        with self._lock:
            self._failures_left = times
            self._failure_status = status
            self._retry_after = None if retry_after is None else f"{retry_after:g}"

    def report_no_usage(self) -> None:
        self.usage = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_port}/v1"

    def start(self) -> OpenAIServer:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="openai-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------

    def _record(
        self, request: RecordedRequest
    ) -> tuple[tuple[int, str | None] | None, dict[str, str]]:
        """Record a request; return ((status, Retry-After) when it must fail, or
        None) and the headers to answer with."""
        with self._lock:
            self.requests.append(request)
            now = time.monotonic()
            if self._failures_left > 0:
                self._failures_left -= 1
                self.failed_count += 1
                self.log.append((now, self._failure_status))
                return (self._failure_status, self._retry_after), {}
            headers: dict[str, str] = {}
            if self._limits is not None:
                wait, headers = self._limits.admit(now, self._token_cost(request.body))
                if wait is not None:
                    self.throttled_count += 1
                    self.log.append((now, 429))
                    headers["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
                    return (429, str(max(1, math.ceil(wait)))), headers
            self.ok_count += 1
            self.log.append((now, 200))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return None, headers

    def _token_cost(self, body: dict[str, Any]) -> int:
        limits = self._limits
        if limits is not None and limits.token_cost is not None:
            return int(limits.token_cost(body))
        usage = self.usage or {}
        return int(usage.get("prompt_tokens", 0)) + int(usage.get("completion_tokens", 0))

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _reply_for(self, body: dict[str, Any]) -> str:
        reply = self.reply
        return reply(body) if callable(reply) else reply


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{math.ceil(seconds * 1000) / 1000:g}s"  # never less than the truth
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{round(secs):d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes)}m{round(secs):d}s"


class _Bucket:
    def __init__(self, per_minute: float, burst: float | None, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(burst) if burst is not None else float(per_minute)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_for(self, amount: float) -> float:
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def headers(self, kind: str) -> dict[str, str]:
        # the limit is what the bucket holds (a minute's worth unless a burst is
        # given), so that reset = (limit - remaining) / refill rate, as with OpenAI
        return {
            f"x-ratelimit-limit-{kind}": str(int(self.capacity)),
            f"x-ratelimit-remaining-{kind}": str(max(0, math.floor(self.level))),
            f"x-ratelimit-reset-{kind}": format_reset((self.capacity - self.level) / self.rate),
        }


class _Limits:
    def __init__(
        self,
        rpm: float | None,
        tpm: float | None,
        burst_requests: float | None,
        burst_tokens: float | None,
        token_cost: Callable[[dict[str, Any]], int] | None,
    ) -> None:
        now = time.monotonic()
        self.requests = _Bucket(rpm, burst_requests, now) if rpm else None
        self.tokens = _Bucket(tpm, burst_tokens, now) if tpm else None
        self.token_cost = token_cost

    def admit(self, now: float, tokens: int) -> tuple[float | None, dict[str, str]]:
        """(None, headers) when the call may go (and is charged), else (seconds
        to wait, headers)."""
        wait = 0.0
        for bucket, amount in ((self.requests, 1), (self.tokens, tokens)):
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount))
        if wait <= 0:
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= tokens
        headers: dict[str, str] = {}
        if self.requests is not None:
            headers.update(self.requests.headers("requests"))
        if self.tokens is not None:
            headers.update(self.tokens.headers("tokens"))
        return (wait if wait > 0 else None), headers


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 refuses connections when a parallel batch opens
    # a few dozen at once.
    request_queue_size = 256
    daemon_threads = True


_ERRORS = {
    429: ("Rate limit reached for requests", "rate_limit_exceeded"),
    401: ("Incorrect API key provided", "invalid_api_key"),
    400: ("Invalid request", "invalid_request_error"),
}


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    server_version = "plait-test-openai/1"
    _limit_headers: dict[str, str] = {}

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._send_json(400, {"error": {"message": "body is not JSON", "type": "invalid"}})
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "nf"}})
            return

        owner = self.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        failure, limit_headers = owner._record(RecordedRequest(self.path, headers, body))
        self._limit_headers = limit_headers
        if failure is not None:
            status, retry_after = failure
            message, code = _ERRORS.get(status, ("The server had an error", "server_error"))
            if owner.echo_key_in_errors:
                message += ": " + headers.get("authorization", "").removeprefix("Bearer ")
            extra = dict(limit_headers)
            if retry_after is not None:
                extra["Retry-After"] = retry_after
            self._send_json(
                status,
                {"error": {"message": message, "type": code, "code": code}},
                extra_headers=extra or None,
            )
            return
        try:
            if owner.delay:
                time.sleep(owner.delay)
            text = owner._reply_for(body)
            if body.get("stream"):
                self._send_stream(body, text)
            else:
                self._send_completion(body, text)
        finally:
            owner._done()

    def _usage(self) -> dict[str, Any] | None:
        usage = self.owner.usage
        if usage is None:
            return None
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        out: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if "cached_tokens" in usage:
            out["prompt_tokens_details"] = {"cached_tokens": usage["cached_tokens"]}
        return out

    def _send_completion(self, body: dict[str, Any], text: str) -> None:
        payload: dict[str, Any] = {
            "id": "chatcmpl-local",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", ""),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
        }
        usage = self._usage()
        if usage is not None:
            payload["usage"] = usage
        self._send_json(200, payload, extra_headers=self._limit_headers or None)

    def _send_stream(self, body: dict[str, Any], text: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        for name, value in self._limit_headers.items():
            self.send_header(name, value)
        self.end_headers()  # HTTP/1.0: the body ends when the connection closes

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": "chatcmpl-local",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body.get("model", ""),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        # A few pieces, so the client really reassembles a stream.
        step = max(1, len(text) // 3)
        events += [chunk({"content": text[i : i + step]}) for i in range(0, len(text), step)]
        events.append(chunk({}, finish="stop"))
        usage = self._usage()
        if usage is not None and (body.get("stream_options") or {}).get("include_usage"):
            last = chunk({})
            last["choices"] = []
            last["usage"] = usage
            events.append(last)
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    def _send_json(
        self, status: int, payload: dict[str, Any], extra_headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def write_llm_config(
    user_dir: Path,
    base_url: str,
    *,
    model_id: str = "local-test",
    api_key: str = "sk-local-test",
    supports_schema: bool = True,
    vision: bool = False,
    default_model: str | None = None,
) -> Path:
    """Make ``user_dir`` an ``LLM_USER_PATH`` in which ``model_id`` talks to ``base_url``.

    The key is stored the way ``llm keys set`` stores it (``keys.json``), under the
    name the model's ``api_key_name`` refers to.
    """
    user_dir.mkdir(parents=True, exist_ok=True)
    key_name = f"{model_id}-key"
    lines = [
        f"- model_id: {model_id}",
        f"  model_name: {model_id}",
        f"  api_base: {base_url}",
        f"  api_key_name: {key_name}",
    ]
    if supports_schema:
        lines.append("  supports_schema: true")
    if vision:
        lines.append("  vision: true")
    (user_dir / "extra-openai-models.yaml").write_text("\n".join(lines) + "\n")
    keys_path = user_dir / "keys.json"
    keys = json.loads(keys_path.read_text()) if keys_path.exists() else {}
    keys[key_name] = api_key
    keys_path.write_text(json.dumps(keys))
    if default_model is not None:
        (user_dir / "default_model.txt").write_text(default_model)
    return user_dir
