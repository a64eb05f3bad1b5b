"""The ``http`` node: one HTTP request per run (or per batch item).

Two ways to send, one behaviour:

* ``exec`` (the ``sequential`` and ``threads`` executors) uses httpx, one
  ``httpx.Client`` per worker thread for the whole run (:mod:`plait.nodes.http_sync`).
* ``exec_async`` (the ``async`` executor, which ``auto`` picks for a parallel
  batch) uses aiohttp, one ``ClientSession`` and connector per run on the run's
  event loop (:mod:`plait.nodes.http_async`), so thousands of requests can be in
  flight without a thread each.

Everything that decides *what* is sent and *what* comes back lives here and is
shared by both: ``prep`` (URL, query, headers, body), the redirect rules (which
headers may follow a redirect to another origin), the body cap, decoding, the
outputs, the error messages and their retryability, ``Retry-After``. The two
modules only move bytes. httpx and aiohttp are imported by those modules only,
so ``plait --help`` and workflows without an ``http`` node never pay for them.

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
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from plait.nodes.base import Demand, ItemContext, NodeError, Output, Param, PlaitNode, Services

DEFAULT_TIMEOUT = 30
DEFAULT_MAX_RESPONSE_BYTES = 50 * 1024 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_REDIRECTS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: how often a blocked request looks at the run's cancel flag (seconds)
CANCEL_POLL_S = 0.2

# How much of an error response's body goes into the failure message.
_BODY_PREVIEW_CHARS = 200

#: Request headers that may follow a redirect to another origin (scheme, host,
#: port). They describe what the client accepts, nothing about who it is; every
#: other header (Authorization, Cookie, the api_key header, X-Custom-Auth, ...)
#: stays with the origin it was written for.
SAFE_ACROSS_ORIGINS = frozenset(
    {"accept", "accept-encoding", "accept-language", "cache-control", "pragma", "user-agent"}
)
#: Headers that describe the request body: they go where the body goes (a 307/308
#: keeps it, a 303 drops it), to another origin too.
_BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language"})
# Framing the client works out again for each hop.
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "host"})

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


def tls_context(services: Services) -> Any:
    """The run's one SSL context, for both clients: the CA bundle httpx trusts
    (``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set, else certifi's)."""
    return services.resource("http.tls", _new_tls_context)


def _new_tls_context() -> Any:
    import os
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


_USER_AGENT: list[str] = []


def _user_agent() -> str:
    if not _USER_AGENT:
        from plait import __version__

        _USER_AGENT.append(f"plait/{__version__}")
    return _USER_AGENT[0]


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """Everything either ``exec`` needs, resolved once in ``prep``; immutable, so safe to share."""

    method: str
    url: str  # the query params already merged in
    display_url: str
    headers: dict[str, str]
    content: bytes | None
    timeout: float
    follow_redirects: bool
    max_response_bytes: int
    services: Services
    cancelled: threading.Event | None

    @property
    def what(self) -> str:
        return f"{self.method} {self.display_url}"


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
            description="Seconds allowed for the whole request, headers and body included",
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
        # Importing aiohttp (~0.2 s) or httpx (~0.25 s) and loading the CA
        # bundle happen while the run is set up, not inside the first wave of
        # items; only the path the run's executors will use (the other's import
        # would take the GIL from the run for nothing). aiohttp first when
        # both: a parallel batch's first wave waits on it.
        warm_paths = getattr(services, "warm_paths", None)
        paths = warm_paths(cls) if warm_paths is not None else ("async", "sync")
        if "async" in paths:
            _async_path()
        if "sync" in paths:
            from plait.nodes import http_sync

            http_sync.pool(services).client()

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        """A URL or a method written out (no template in it) is checked before the run."""
        problems: list[tuple[str, str | None]] = []
        url = params.get("url")
        if isinstance(url, str) and "${" not in url and url.strip():
            problem = _scheme_problem(url.strip())
            if problem:
                problems.append((problem, "url"))
        method = params.get("method")
        if isinstance(method, str) and "${" not in method and method.strip():
            problem = _method_problem(method)
            if problem:
                problems.append((problem, "method"))
        return problems

    def prep(self, shared: ItemContext) -> PreparedRequest:
        p = shared.params
        url = p.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _invalid(f"'url' must be a non-empty string, got {_preview(url)}")
        url = url.strip()
        problem = _scheme_problem(url)
        if problem:
            raise _invalid(problem)

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
        if api_key:
            _set_header(headers, str(p.get("api_key_header") or "X-API-Key"), str(api_key))
        if json_body is not None:
            content = _json_bytes(json_body)
            if not _has_header(headers, "content-type"):
                headers["Content-Type"] = "application/json"
        if not _has_header(headers, "user-agent"):
            headers["User-Agent"] = _user_agent()

        for name, value in headers.items():
            if not (name.isascii() and value.isascii()):
                # the value is not shown: it may be a token
                raise _invalid(
                    f"header '{name}' has non-ASCII characters; HTTP headers must be ASCII"
                )

        query = _object(p.get("params"), "params")
        display = _display_url(url)
        _check_authority(url, f"{method} {display}")
        if query:
            url = _merge_query(url, query)

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
            display_url=display,
            headers=headers,
            content=content,
            timeout=timeout,
            follow_redirects=True if follow is None else _truthy(follow),
            max_response_bytes=max_bytes,
            services=services,
            cancelled=getattr(services, "cancelled", None),
        )

    def demand(self, prep_res: PreparedRequest) -> Demand:
        # One default limiter per host (with its port when not the scheme's own),
        # so a 429 from a host backs off every call to it (docs/limits.md).
        key = limiter_key(prep_res.url)
        demand = _DEMANDS.get(key)
        if demand is None:  # a Demand is frozen: one per host serves every request to it
            if len(_DEMANDS) >= 1024:
                _DEMANDS.clear()
            demand = _DEMANDS[key] = Demand(key=key)
        return demand

    def exec(self, prep_res: PreparedRequest) -> dict[str, Any]:
        from plait.nodes import http_sync

        return http_sync.send(prep_res)

    async def exec_async(self, prep_res: PreparedRequest) -> dict[str, Any]:
        if not _ASYNC_PATH:
            await _imported()
        result: dict[str, Any] = await _ASYNC_PATH[0].send(prep_res)
        return result


_DEMANDS: dict[str, Demand] = {}

# plait.nodes.http_async once imported whole (sys.modules has it half-made while
# another thread imports it)
_ASYNC_PATH: list[Any] = []


def _async_path() -> Any:
    if not _ASYNC_PATH:
        import importlib

        module = importlib.import_module("plait.nodes.http_async")
        if not _ASYNC_PATH:
            _ASYNC_PATH.append(module)
    return _ASYNC_PATH[0]


# per event loop: the one import its tasks wait for
_IMPORTS: dict[Any, Any] = {}


async def _imported() -> None:
    """Importing aiohttp takes ~0.2 s (it loads the system CA store): in a thread,
    so the run's loop keeps serving (a cancel, other nodes). The first wave of a
    batch (hundreds of tasks) waits for one import, not a thread job each; the
    import also waits for warm_up's, if that came first."""
    import asyncio

    loop = asyncio.get_running_loop()
    pending = _IMPORTS.get(loop)
    if pending is None:
        pending = _IMPORTS[loop] = loop.run_in_executor(None, _async_path)
        pending.add_done_callback(partial(_import_done, loop))
    # shielded: a task cancelled while it waits leaves the import to the others
    await asyncio.shield(pending)


def _import_done(loop: Any, future: Any) -> None:
    # imported, or failed (the next task tries again, as every task did before)
    _IMPORTS.pop(loop, None)
    if not future.cancelled():
        future.exception()  # retrieved: no "never retrieved" warning when nobody waits


# ---------------------------------------------------------------------------
# prep helpers

_HTTP_URL = re.compile(r"^https?://", re.IGNORECASE)


def _invalid(message: str) -> NodeError:
    return NodeError(message, retryable=False)


def _method(value: Any, *, has_body: bool) -> str:
    if value is None or value == "":
        return "POST" if has_body else "GET"
    if not isinstance(value, str):
        raise _invalid(f"'method' must be a string, got {type(value).__name__}")
    problem = _method_problem(value)
    if problem:
        raise _invalid(problem)
    return value.strip().upper()


def _method_problem(value: str) -> str | None:
    method = value.strip().upper()
    if method in METHODS:
        return None
    import difflib

    close = difflib.get_close_matches(method, METHODS, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; use one of {', '.join(METHODS)}"
    return f"unknown HTTP method '{value}'{hint}"


def _scheme_problem(url: str) -> str | None:
    if _HTTP_URL.match(url):
        return None
    hint = " (did you forget 'http://'?)" if "://" not in url else ""
    return f"'url' must start with http:// or https://, got '{url}'{hint}"


def _maybe_json(value: Any) -> Any:
    """A string holding a JSON object or list (a shell node's stdout) means that value."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _json_bytes(value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise _invalid("the JSON body holds NaN or Infinity, which JSON cannot carry")
    except TypeError as exc:
        raise _invalid(f"the JSON body cannot be sent as JSON: {exc}")
    return text.encode("utf-8")


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


def _has_header(headers: dict[str, str], name: str) -> bool:
    return bool(headers) and any(k.lower() == name for k in headers)


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


def _query_text(value: Any) -> str:
    if value is None:
        return ""
    return _text(value)


def _merge_query(url: str, params: dict[str, Any]) -> str:
    """``params`` merged into the URL's query: a key given in ``params`` replaces
    the URL's own values for it, a list repeats the key."""
    parts = urlsplit(url)
    keep = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        keep += [(str(key), _query_text(v)) for v in values]
    return urlunsplit(parts._replace(query=urlencode(keep, quote_via=quote)))


# host[:port] with nothing unusual in it: most URLs, checked without urlsplit
_PLAIN_AUTHORITY = re.compile(r"^https?://[A-Za-z0-9.\-_~]+(?::(\d{1,5}))?(?:[/?#]|$)", re.IGNORECASE)


def _check_authority(url: str, what: str) -> None:
    """A host and a numeric port, before anything is sent (either client would fail later,
    each with its own words)."""
    m = _PLAIN_AUTHORITY.match(url)
    if m is not None and (m.group(1) is None or int(m.group(1)) <= 65535):
        return
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise _invalid(f"{what}: invalid request: {_port_problem(url, exc)}")
    if not parts.hostname:
        raise _invalid(f"{what}: invalid request: the URL has no host")


def _port_problem(url: str, exc: Exception) -> str:
    try:
        authority = urlsplit(url).netloc.rsplit("@", 1)[-1]
    except ValueError:  # the URL itself does not split ("http://[::1": an unclosed bracket)
        return f"the URL is malformed ({exc})"
    port = authority.rpartition(":")[2] if ":" in authority else ""
    if port and not port.isdigit():
        return f"the port '{port}' is not a number"
    if port:
        return f"the port {port} is out of range (0-65535)"
    return str(exc)


def _positive_number(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    if (type(value) is int or type(value) is float) and 0 < value < float("inf"):
        return float(value)  # the usual case, checked at once
    if isinstance(value, bool):
        raise _invalid(f"'{name}' must be a positive number, got {value}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _invalid(f"'{name}' must be a positive number, got {_preview(value)}")
    if not number > 0 or number == float("inf"):
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
# redirects, the same rules for both clients


@dataclass(frozen=True, slots=True)
class Hop:
    """The next request of a redirect chain."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return (scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme))


def next_hop(
    req: PreparedRequest, hop: Hop, status: int, location: str, hops: int
) -> Hop:
    """Where a 3xx response sends the request next, and with what.

    The method changes as browsers (and httpx) change it: 303 becomes GET, so do
    302 and a POST answered by 301; the body and the headers describing it go
    when the method changes. When the new URL is on another origin, only the
    headers in :data:`SAFE_ACROSS_ORIGINS` (and the body's own, with the body)
    go along: credentials and custom headers never reach another host.
    """
    if hops > MAX_REDIRECTS:
        raise NodeError(
            f"{req.what}: too many redirects (more than {MAX_REDIRECTS})", retryable=False
        )
    url = urljoin(hop.url, location.strip())
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _invalid(
            f"{req.what}: invalid request: redirected to a URL that is not http or https "
            f"({_display_url(url) if '://' in url else scheme or 'no scheme'})"
        )
    _check_authority(url, req.what)
    method = hop.method
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    content = hop.content if method == hop.method else None
    cross = origin(url) != origin(hop.url)
    headers: dict[str, str] = {}
    for name, value in hop.headers.items():
        low = name.lower()
        if low in _FRAMING_HEADERS:
            continue
        if low in _BODY_HEADERS:
            if content is not None:
                headers[name] = value
        elif not cross or low in SAFE_ACROSS_ORIGINS:
            headers[name] = value
    return Hop(method, url, headers, content)


def first_hop(req: PreparedRequest) -> Hop:
    return Hop(req.method, req.url, req.headers, req.content)


# ---------------------------------------------------------------------------
# the response, the same for both clients


class BodyCap:
    """Counts a response body against ``max_response_bytes`` as it arrives."""

    __slots__ = ("cap", "headers", "req", "status", "total")

    def __init__(self, req: PreparedRequest, status: int, headers: dict[str, str]) -> None:
        self.req = req
        self.cap = req.max_response_bytes
        self.status = status
        self.headers = headers
        self.total = 0

    def check_declared(self) -> int | None:
        """The declared length when it can be trusted for the cap, after refusing one over it."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and "content-encoding" not in self.headers:
            if int(declared) > self.cap:
                raise self._too_large(f"Content-Length is {declared} bytes")
            return int(declared)
        return None

    def add(self, size: int) -> None:
        self.total += size
        if self.total > self.cap:
            raise self._too_large(f"stopped reading after {self.total} bytes")

    def _too_large(self, size_text: str) -> NodeError:
        return NodeError(
            f"response from {self.req.what} is larger than max_response_bytes ({self.cap} bytes): "
            f"{size_text}; raise max_response_bytes if you need it",
            outputs={"response": None, "status_code": self.status, "response_headers": self.headers},
            retryable=False,
        )


def finish(
    req: PreparedRequest, status: int, headers: dict[str, str], data: bytes, elapsed: float
) -> dict[str, Any]:
    """The node's outputs for a response, or the :class:`NodeError` a non-2xx becomes."""
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
    retry_after = _retry_after(headers.get("retry-after")) if retryable else None
    # a rate-limit answer: the host's limiter pauses, the retry is not an attempt
    throttled = status == 429 or (status == 503 and retry_after is not None)
    raise NodeError(
        f"HTTP {status}{_reason_phrase(status)} from {req.what}: "
        f"{body_preview(data, response, is_base64, headers)}",
        outputs=outputs,
        retryable=retryable,
        retry_after=retry_after,
        throttled=throttled,
        headers={k: v for k, v in headers.items() if k.lower().startswith(("x-ratelimit-", "retry-after"))}
        if throttled else None,
    )


# scheme, host and port of a URL with nothing unusual in its authority
_SCHEME_HOST_PORT = re.compile(r"^(https?)://([A-Za-z0-9.\-_~]+)(?::(\d{1,5}))?(?:[/?#]|$)", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def limiter_key(url: str) -> str:
    """The default limiter of a call: one per host (and port, when not the scheme's default)."""
    m = _SCHEME_HOST_PORT.match(url)  # every request asks: most URLs need no urlsplit
    if m is not None:
        scheme, host, port_text = m.groups()
        if port_text is None:
            return f"http:{host.lower()}"
        number = int(port_text)
        if number <= 65535:
            if number == _DEFAULT_PORTS[scheme.lower()]:
                return f"http:{host.lower()}"
            return f"http:{host.lower()}:{number}"
    parts = urlsplit(url)
    hostname = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    return f"http:{hostname}:{port}" if port is not None and port != default else f"http:{hostname}"


def timed_out(req: PreparedRequest, phase: str) -> NodeError:
    """``phase``: connecting, sending the request, waiting for the response, ..."""
    return NodeError(
        f"{req.what} timed out after {_seconds(req.timeout)}s {phase}", retryable=True
    )


def cancelled(req: PreparedRequest) -> NodeError:
    return NodeError(f"{req.what} was cancelled", retryable=False)


def could_not_connect(req: PreparedRequest, reason: str) -> NodeError:
    return NodeError(f"could not connect to {req.display_url}: {reason}", retryable=True)


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


# ---------------------------------------------------------------------------
# the error preview: safe on its own, before any redactor sees it

MASK = "***"
# A key that names a secret. "auth" but not "author"; "key" also catches
# "api_key", "apikey", "x-api-key".
_SECRET_KEY = (
    r"[A-Za-z0-9_.\-]*(?:token|key|secret|passw|pwd|credential|auth(?!or(?!iz))|session"
    r"|cookie|signature|csrf)[A-Za-z0-9_.\-]*"
)
_SECRET_KEY_RE = re.compile(rf"^{_SECRET_KEY}$", re.IGNORECASE)
_MASKED = rf"(?:(?:Bearer|Basic|Token|Digest)\s+)?{re.escape(MASK)}"
_TEXT_SECRETS = (
    # Authorization: Bearer abc (first, so that the key rule below sees it masked)
    (re.compile(r"\b(Bearer|Basic|Token|Digest)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE), rf"\1 {MASK}"),
    # "access_token": "abc" (JSON that did not parse, or JSON inside text)
    (re.compile(rf'("{_SECRET_KEY}"\s*:\s*)"(?:[^"\\]|\\.)*"?', re.IGNORECASE), rf'\1"{MASK}"'),
    # access_token=abc (a query string, a form body), session: abc, Set-Cookie: sid=abc
    (
        re.compile(rf"(\b{_SECRET_KEY}\s*[:=]\s*)(?![\"{{\[]|{_MASKED})[^\s&,;\"'<>{{}}]+", re.IGNORECASE),
        rf"\1{MASK}",
    ),
    # token = "abc", secret='abc' (code, logs)
    (re.compile(rf"(\b{_SECRET_KEY}\s*[:=]\s*)([\"'])(?!{re.escape(MASK)}\2).*?(?:\2|$)", re.IGNORECASE), rf"\1\2{MASK}\2"),
    # <token>abc</token>
    (re.compile(rf"(<({_SECRET_KEY})>)[^<]*", re.IGNORECASE), rf"\1{MASK}"),
    # a JSON Web Token wherever it stands
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"), MASK),
)


def _mask_value(value: Any, secret: bool = False) -> Any:
    if secret and value is not None and not isinstance(value, bool | int | float):
        return MASK
    if isinstance(value, dict):
        return {k: _mask_value(v, bool(_SECRET_KEY_RE.match(str(k)))) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_value(v) for v in value]
    return value


def mask_secrets(text: str) -> str:
    """``text`` with values that look like credentials replaced by ``***``."""
    for pattern, replacement in _TEXT_SECRETS:
        text = pattern.sub(replacement, text)
    return text


def body_preview(data: bytes, response: Any, is_base64: bool, headers: dict[str, str]) -> str:
    """The start of an error response's body for the failure message.

    Secrets are masked *before* the cut: a value cut in half by the limit no
    longer looks like the secret it is, so a redactor run later would let its
    first half through.
    """
    if not data:
        return "(empty body)"
    if is_base64:
        return f"({len(data)} bytes of {headers.get('content-type', 'binary data')})"
    if isinstance(response, str):
        text = response
    else:
        text = json.dumps(_mask_value(response), ensure_ascii=False)
    text = mask_secrets(" ".join(text.split()))
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


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def reason(exc: BaseException) -> str:
    """An exception's own words, without ``[Errno N]``; a refused or reset
    connection in the system's words, whichever client saw it."""
    if isinstance(exc, ConnectionError) and exc.errno and exc.errno > 0:
        import os

        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc).strip())
    return text or type(exc).__name__
