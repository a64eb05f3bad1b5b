"""The ``http`` node: one HTTP request per run (or per batch item).

Requests go through a pool of ``httpx.Client`` objects that lives as long as the
run (a per-run resource, ``services.resource``, closed when the run ends), so a
batch of a thousand GETs to one host reuses a handful of pooled connections
instead of opening a thousand. ``httpx`` is imported inside ``prep``/``exec`` only:
``plait --help`` and workflows without an ``http`` node never pay for it.

Failures are :class:`NodeError` with ``retryable`` set the way a retry policy needs:
408, 425, 429, 5xx, refused connections and timeouts may get better on their own; other 4xx,
a bad URL or an oversized body will not. ``Retry-After`` (seconds or an HTTP date)
becomes ``NodeError.retry_after``, which node and batch retries honour.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Output, Param, PlaitNode, Services

DEFAULT_TIMEOUT = 30
DEFAULT_MAX_RESPONSE_BYTES = 50 * 1024 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

# How much of an error response's body goes into the failure message.
_BODY_PREVIEW_CHARS = 200

# application/* types that carry text; every other application/* type is treated as binary.
_TEXT_APPLICATION_TYPES = frozenset(
    {
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/x-www-form-urlencoded",
        "application/yaml",
        "application/x-yaml",
        "application/toml",
        "application/graphql",
        "application/sql",
        "application/x-ndjson",
        "application/jsonl",
        "application/json-seq",
        "application/x-sh",
        "application/csv",
    }
)


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """Everything ``exec`` needs, resolved once in ``prep``; immutable, so safe to share."""

    method: str
    url: str
    display_url: str
    headers: dict[str, str]
    params: dict[str, Any] | None
    json_body: Any
    content: bytes | None
    timeout: float
    follow_redirects: bool
    secret_header: str | None  # the api_key header: never sent to another origin
    max_response_bytes: int
    client: Any
    cancelled: threading.Event | None


class HttpNode(PlaitNode):
    """Make one HTTP request and return the decoded response."""

    type_name = "http"
    description = "Make an HTTP request; JSON responses come back decoded"
    primary_output = "response"

    param_specs = (
        Param("url", "string", required=True, description="The URL to request (http or https)"),
        Param(
            "method",
            "string",
            default=None,
            description="GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS; "
            "when unset, POST if json or body is given, else GET",
        ),
        Param("headers", "object", default=None, description="Request headers"),
        Param(
            "params",
            "object",
            default=None,
            description="Query parameters, merged into any query already in the URL",
        ),
        Param(
            "json",
            "any",
            default=None,
            description="A JSON request body; a string holding a JSON object or list is sent as that value",
        ),
        Param(
            "body",
            "string|object|array",
            default=None,
            description="A raw request body; an object or list is sent as JSON",
        ),
        Param(
            "auth_token", "string", default=None, description="Sent as 'Authorization: Bearer ...'"
        ),
        Param("api_key", "string", default=None, description="Sent in the api_key_header header"),
        Param("api_key_header", "string", default="X-API-Key", description="Header for api_key"),
        Param(
            "timeout",
            "number",
            default=DEFAULT_TIMEOUT,
            description="Seconds allowed for the whole request, body included",
        ),
        Param(
            "follow_redirects",
            "boolean",
            default=True,
            description="Follow 3xx redirects; when false a 3xx response is returned, not failed",
        ),
        Param(
            "max_response_bytes",
            "integer",
            default=DEFAULT_MAX_RESPONSE_BYTES,
            description="Fail when the (decoded) response body is larger than this",
        ),
    )
    output_specs = (
        Output(
            "response",
            "any",
            "The body: decoded JSON for JSON content types, text for text, base64 for binary",
        ),
        Output("response_is_base64", "boolean", "True when response is base64-encoded binary"),
        Output("response_is_binary", "boolean", "Same as response_is_base64 (pflow's name)"),
        Output("status_code", "integer", "The HTTP status code"),
        Output("response_headers", "object", "Response headers, names in lower case"),
        Output(
            "response_time", "number", "Seconds from sending the request to the end of the body"
        ),
    )

    @classmethod
    def warm_up(cls, services: Services) -> None:
        # Importing httpx and building the SSL context take ~0.1 s; do it while
        # the nodes before this one run, not inside the first wave of items.
        _pool(services).client()

    def prep(self, shared: ItemContext) -> PreparedRequest:
        p = shared.params
        url = p.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _invalid(f"'url' must be a non-empty string, got {_preview(url)}")
        url = url.strip()
        if not re.match(r"^https?://", url, re.IGNORECASE):
            hint = " (did you forget 'http://'?)" if "://" not in url else ""
            raise _invalid(f"'url' must start with http:// or https://, got '{url}'{hint}")

        json_body = _maybe_json(p.get("json"))
        body = p.get("body")
        if json_body is not None and body is not None:
            raise _invalid("give either 'json' or 'body', not both")
        content: bytes | None = None
        if isinstance(body, dict | list):
            json_body = body  # pflow sends an object body as JSON
        elif isinstance(body, bytes):
            content = body
        elif body is not None:
            content = (body if isinstance(body, str) else json.dumps(body)).encode("utf-8")

        method = _method(p.get("method"), has_body=json_body is not None or content is not None)
        headers = _headers(p.get("headers"))
        auth_token = p.get("auth_token")
        if auth_token:
            _set_header(headers, "Authorization", f"Bearer {auth_token}")
        api_key = p.get("api_key")
        secret_header = None
        if api_key:
            secret_header = str(p.get("api_key_header") or "X-API-Key")
            _set_header(headers, secret_header, str(api_key))

        for name, value in headers.items():
            if not (name.isascii() and value.isascii()):
                # the value is not shown: it may be a token
                raise _invalid(
                    f"header '{name}' has non-ASCII characters; HTTP headers must be ASCII"
                )

        query = _object(p.get("params"), "params")

        timeout = _positive_number(p.get("timeout"), "timeout", DEFAULT_TIMEOUT)
        max_bytes = int(
            _positive_number(
                p.get("max_response_bytes"), "max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES
            )
        )
        follow = p.get("follow_redirects")

        services = shared.services
        return PreparedRequest(
            method=method,
            url=url,
            display_url=_display_url(url),
            headers=headers,
            params={k: _query_value(v) for k, v in query.items()} if query else None,
            json_body=json_body,
            content=content,
            timeout=timeout,
            follow_redirects=True if follow is None else _truthy(follow),
            secret_header=secret_header,
            max_response_bytes=max_bytes,
            client=_pool(services).client(),
            cancelled=getattr(services, "cancelled", None),
        )

    def exec(self, prep_res: PreparedRequest) -> dict[str, Any]:
        import httpx

        req = prep_res
        what = f"{req.method} {req.display_url}"
        started = time.perf_counter()
        deadline = started + req.timeout
        try:
            url = httpx.URL(req.url)
            if req.params:
                # httpx would replace the URL's own query with `params`; users expect a merge.
                url = url.copy_merge_params(req.params)
            request = req.client.build_request(
                req.method,
                url,
                headers=req.headers,
                json=req.json_body,
                content=req.content,
                timeout=httpx.Timeout(req.timeout),
            )
            resp = _send_following(req, request)
            try:
                status = resp.status_code
                headers = dict(resp.headers)
                data = _read_body(resp, req, deadline, what, status, headers)
            finally:
                resp.close()
        except httpx.TimeoutException as exc:
            raise NodeError(_timeout_message(exc, req, what), retryable=True) from exc
        except httpx.ConnectError as exc:
            raise NodeError(
                f"could not connect to {req.display_url}: {_reason(exc)}", retryable=True
            ) from exc
        except httpx.TooManyRedirects as exc:
            raise NodeError(
                f"{what}: too many redirects ({_reason(exc)})", retryable=False
            ) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
            raise NodeError(f"{what}: invalid request: {_reason(exc)}", retryable=False) from exc
        except httpx.DecodingError as exc:
            raise NodeError(
                f"{what}: could not decode the response body: {_reason(exc)}", retryable=False
            ) from exc
        except httpx.HTTPError as exc:
            # ReadError, RemoteProtocolError and friends: the server hung up mid-exchange.
            raise NodeError(f"{what} failed: {_reason(exc)}", retryable=True) from exc
        elapsed = time.perf_counter() - started

        response, is_base64 = _decode(data, headers.get("content-type", ""))
        outputs: dict[str, Any] = {
            "response": response,
            "response_is_base64": is_base64,
            "response_is_binary": is_base64,
            "status_code": status,
            "response_headers": headers,
            "response_time": round(elapsed, 6),
        }
        if 200 <= status < 300 or (300 <= status < 400 and not req.follow_redirects):
            return outputs
        # 408 and 425 are 4xx whose definitions say "send it again"; other 4xx never improve.
        retryable = status in (408, 425, 429) or status >= 500
        raise NodeError(
            f"HTTP {status}{_reason_phrase(status)} from {what}: {_body_preview(data, response, is_base64, headers)}",
            outputs=outputs,
            retryable=retryable,
            retry_after=_retry_after(headers.get("retry-after")) if retryable else None,
        )


MAX_REDIRECTS = 20


class _Lease:
    """A thread's hold on a client. The thread's locals go when it ends, and
    with them the lease, which hands the client back."""

    __slots__ = ("client", "idle")

    def __init__(self, client: Any, idle: list[Any]) -> None:
        self.client = client
        self.idle = idle

    def __del__(self) -> None:
        self.idle.append(self.client)  # atomic; a closed pool's list is never read again


class _ClientPool:
    """One ``httpx.Client`` per worker thread, made on first use.

    Each keeps its connections alive from item to item. A single client shared
    by many threads serialises them on httpcore's pool lock (200 threads: 14x
    slower, and a known race). All share one SSL context. When a thread ends,
    its client goes to ``_idle`` for the next thread, so a run that starts new
    workers again and again (each item of a parallel batch of sub-workflows)
    holds clients and sockets for the threads alive at once, not for every
    thread it ever started.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._clients: list[Any] = []
        self._idle: list[Any] = []
        self._ssl: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        lease = getattr(self._local, "lease", None)
        if lease is None:
            with self._lock:
                client = self._idle.pop() if self._idle else None
            if client is None:
                import httpx

                with self._lock:
                    if self._ssl is None:
                        self._ssl = httpx.create_ssl_context()
                client = httpx.Client(verify=self._ssl, timeout=30.0)
                with self._lock:
                    self._clients.append(client)
            lease = self._local.lease = _Lease(client, self._idle)
        return lease.client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()


def _pool(services: Services) -> _ClientPool:
    return services.resource("http.clients", _ClientPool, _ClientPool.close)


def _send_following(req: PreparedRequest, request: Any) -> Any:
    """Send, following redirects here rather than in httpx: httpx drops
    ``Authorization`` when a redirect leaves the origin, but not a custom API-key
    header, which would then reach another host."""
    import httpx

    resp = req.client.send(request, stream=True, follow_redirects=False)
    hops = 0
    while req.follow_redirects and resp.next_request is not None:
        nxt = resp.next_request
        hops += 1
        if hops > MAX_REDIRECTS:
            resp.close()
            raise httpx.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects", request=nxt)
        if req.secret_header and _origin(nxt.url) != _origin(resp.request.url):
            nxt.headers.pop(req.secret_header, None)
        resp.close()
        resp = req.client.send(nxt, stream=True, follow_redirects=False)
    return resp


def _origin(url: Any) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


# ---------------------------------------------------------------------------
# prep helpers


def _invalid(message: str) -> NodeError:
    return NodeError(message, retryable=False)


def _method(value: Any, *, has_body: bool) -> str:
    if value is None or value == "":
        return "POST" if has_body else "GET"
    if not isinstance(value, str):
        raise _invalid(f"'method' must be a string, got {type(value).__name__}")
    method = value.strip().upper()
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; use one of {', '.join(METHODS)}"
        raise _invalid(f"unknown HTTP method '{value}'{hint}")
    return method


def _maybe_json(value: Any) -> Any:
    """A string holding a JSON object or list (a shell node's stdout) means that value."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _object(value: Any, name: str) -> dict[str, Any] | None:
    value = _maybe_json(value)
    if value is None or isinstance(value, dict):
        return value
    raise _invalid(f"'{name}' must be an object, got {type(value).__name__} {_preview(value)}")


def _headers(value: Any) -> dict[str, str]:
    value = _object(value, "headers")
    if not value:
        return {}
    out: dict[str, str] = {}
    for name, v in value.items():
        if v is None:
            continue  # an unset optional header (a template that resolved to null)
        _set_header(out, str(name), _text(v))
    return out


def _set_header(headers: dict[str, str], name: str, value: str) -> None:
    # Header names are case-insensitive: replace, never send two.
    for existing in [k for k in headers if k.lower() == name.lower()]:
        del headers[existing]
    headers[name] = value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _query_value(value: Any) -> Any:
    if isinstance(value, list):
        return [_query_value(v) for v in value]  # a list repeats the key
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return _text(value)


def _positive_number(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool):
        raise _invalid(f"'{name}' must be a positive number, got {value}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"'{name}' must be a positive number, got {_preview(value)}")
    if not number > 0:
        raise _invalid(f"'{name}' must be a positive number, got {value}")
    return number


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off")
    return bool(value)


def _display_url(url: str) -> str:
    """The URL for messages: no user:password, no query (it may hold a key)."""
    scheme, _, rest = url.partition("://")
    authority, sep, path = rest.partition("/")
    authority = authority.rsplit("@", 1)[-1]
    path, q, _ = path.partition("?")
    path = path.partition("#")[0]
    return f"{scheme}://{authority}{sep}{path}{'?...' if q else ''}"


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------
# exec helpers


def _read_body(
    resp: Any,
    req: PreparedRequest,
    deadline: float,
    what: str,
    status: int,
    headers: dict[str, str],
) -> bytes:
    cap = req.max_response_bytes

    def too_large(size_text: str) -> NodeError:
        return NodeError(
            f"response from {what} is larger than max_response_bytes ({cap} bytes): {size_text}; "
            "raise max_response_bytes if you need it",
            outputs={"response": None, "status_code": status, "response_headers": headers},
            retryable=False,
        )

    if req.method == "HEAD":
        return b""
    declared = headers.get("content-length", "")
    if declared.isdigit() and "content-encoding" not in headers and int(declared) > cap:
        raise too_large(f"Content-Length is {declared} bytes")

    chunks: list[bytes] = []
    total = 0
    for chunk in resp.iter_bytes():
        total += len(chunk)
        if total > cap:
            raise too_large(f"stopped reading after {total} bytes")
        chunks.append(chunk)
        # httpx's read timeout is per chunk; a server dribbling bytes could run forever.
        if time.perf_counter() > deadline:
            raise NodeError(
                f"{what} timed out after {_seconds(req.timeout)}s while reading the response body",
                retryable=True,
            )
        if req.cancelled is not None and req.cancelled.is_set():
            raise NodeError(f"{what} was cancelled", retryable=False)
    return b"".join(chunks)


def _media_type(content_type: str) -> tuple[str, str | None]:
    parts = content_type.split(";")
    media = parts[0].strip().lower()
    charset = None
    for part in parts[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').strip("'") or None
    return media, charset


def _decode(data: bytes, content_type: str) -> tuple[Any, bool]:
    """(response, is_base64) for a body, by its content type."""
    media, charset = _media_type(content_type)
    if media in ("application/json", "text/json") or media.endswith("+json"):
        if not data.strip():
            return None, False
        try:
            return json.loads(data), False
        except ValueError:
            return _to_text(data, charset), False  # mislabelled: still show what came back
    is_text = (
        media.startswith("text/")
        or media in _TEXT_APPLICATION_TYPES
        or media.endswith(("+xml", "+yaml"))
        or charset is not None
    )
    if is_text:
        return _to_text(data, charset), False
    if media:
        return base64.b64encode(data).decode("ascii"), True
    # No content type at all: text if it reads as UTF-8, else binary.
    if b"\x00" not in data:
        try:
            return data.decode("utf-8"), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode("ascii"), True


def _to_text(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def _body_preview(data: bytes, response: Any, is_base64: bool, headers: dict[str, str]) -> str:
    if not data:
        return "(empty body)"
    if is_base64:
        return f"({len(data)} bytes of {headers.get('content-type', 'binary data')})"
    text = response if isinstance(response, str) else json.dumps(response, ensure_ascii=False)
    text = " ".join(text.split())
    if len(text) > _BODY_PREVIEW_CHARS:
        text = text[:_BODY_PREVIEW_CHARS] + "..."
    return text


def _reason_phrase(status: int) -> str:
    from http import HTTPStatus

    try:
        return f" {HTTPStatus(status).phrase}"
    except ValueError:
        return ""


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def _timeout_message(exc: Exception, req: PreparedRequest, what: str) -> str:
    import httpx

    limit = _seconds(req.timeout)
    if isinstance(exc, httpx.ConnectTimeout):
        return f"{what} timed out after {limit}s while connecting"
    if isinstance(exc, httpx.PoolTimeout):
        return f"{what} timed out after {limit}s waiting for a free connection in the pool"
    if isinstance(exc, httpx.WriteTimeout):
        return f"{what} timed out after {limit}s while sending the request"
    return f"{what} timed out after {limit}s waiting for the response"


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
