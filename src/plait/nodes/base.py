"""The node contract: the one thing a node module may depend on.

A node type is a subclass of :class:`PlaitNode`, which is PocketFlow's ``Node``
(``prep`` / ``exec`` / ``post``, with ``max_retries`` and ``wait``). It declares its
interface once, in ``param_specs`` and ``output_specs``; that declaration feeds validation,
static template checks, ``plait nodes``, the JSON Schema and the docs.

The runtime creates one instance per workflow node and hands every item (or the
single run of a non-batch node) its own :class:`ItemContext` as PocketFlow's
``shared`` argument. ``prep`` picks what ``exec`` needs out of it, ``exec`` does
the work and touches no shared state, ``post`` stores the outputs on the
context and returns the action. Because nothing per-item lives on the instance,
items can run side by side and be retried freely.

PocketFlow's own ``_exec`` keeps the retry counter on the instance
(``self.cur_retry``), which is not safe when items run in parallel, so the
runtime drives ``prep``/``exec``/``post`` itself and owns retries (with backoff,
jitter and ``Retry-After``); ``max_retries`` (total attempts, as PocketFlow
counts them) and ``wait`` are still set from the node's retry settings so a
node reads them where PocketFlow users expect them.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from pocketflow import Node as _PocketFlowNode

T = TypeVar("T")

PARAM_TYPES = ("string", "integer", "number", "boolean", "object", "array", "any")


@dataclass(frozen=True)
class Param:
    """One declared parameter of a node type."""

    name: str
    type: str = "any"  # one of PARAM_TYPES, or several joined by "|"
    required: bool = False
    default: Any = None
    description: str = ""
    #: hand a templated string over as :class:`TemplatedText`, pieces kept apart
    keep_parts: bool = False
    #: False: the value is passed on untouched, its ``${...}`` belong to someone
    #: else (an inline sub-workflow's own templates)
    templates: bool = True

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(self.type.split("|"))


@dataclass(frozen=True)
class Output:
    """One declared output of a node type."""

    name: str
    type: str = "any"
    description: str = ""


class NodeError(Exception):
    """Raised by a node when its work failed.

    ``outputs`` are still stored, so an ``error`` handler can read them (a shell
    node's ``exit_code`` and ``stderr``). ``retryable=False`` stops retries early
    for failures that cannot get better; ``retry_after`` (seconds) is honoured by
    node and batch retries. ``throttled`` marks a rate-limit answer (HTTP 429, or
    a 503 with Retry-After): the run's limiter for this call pauses, and the retry
    does not count against ``max_retries``. ``headers`` are the response's
    headers, when the limiter can learn from them (``x-ratelimit-*``).
    """

    def __init__(
        self,
        message: str,
        *,
        outputs: dict[str, Any] | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        throttled: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.outputs = outputs
        self.retryable = retryable
        self.retry_after = retry_after
        self.throttled = throttled
        self.headers = headers


@dataclass(frozen=True)
class Demand:
    """What one call asks of a rate-limited, paid service (``PlaitNode.demand``).

    Before ``exec`` the runtime waits for room on the limiter named ``key`` (the
    node's ``rate`` field, when it has one, names the limiter instead) and, when
    a budget applies, reserves the call's worst-case cost, priced from ``model``,
    ``input_tokens`` and ``max_output_tokens``; after ``exec`` it settles both
    with what the call really used (``record_usage``).
    """

    key: str  # the default limiter: "llm:openai/gpt-4o-mini", "http:api.example.com"
    tokens: int = 0  # the tokens the call may use (prompt estimate + output cap), for tpm limits
    model: str | None = None
    input_tokens: int = 0  # the prompt's estimated tokens
    max_output_tokens: int | None = None
    #: a count the prompt's real tokens cannot exceed, for budget reservations that
    #: must never be short (None: ``input_tokens`` is taken as the bound)
    input_tokens_bound: int | None = None

    # Written out (dataclass keeps a class's own __init__): the generated one of a
    # frozen dataclass sets each field through object.__setattr__, which costs
    # about three times more, once per call on the per-item path. Same fields,
    # defaults and order, so eq, hash, repr and dataclasses.replace are unchanged.
    def __init__(
        self,
        key: str,
        tokens: int = 0,
        model: str | None = None,
        input_tokens: int = 0,
        max_output_tokens: int | None = None,
        input_tokens_bound: int | None = None,
    ) -> None:
        fields = self.__dict__
        fields["key"] = key
        fields["tokens"] = tokens
        fields["model"] = model
        fields["input_tokens"] = input_tokens
        fields["max_output_tokens"] = max_output_tokens
        fields["input_tokens_bound"] = input_tokens_bound


@dataclass(frozen=True)
class Usage:
    """What one call to a paid service used, for the run's usage ledger.

    ``kind`` names the ledger (``"llm"``: the batch and run report it as
    ``llm_usage``); tokens and cost are summed per item, node, batch and run.
    """

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float | None = None
    kind: str = "llm"

    # Written out, as Demand's, for the same reason.
    def __init__(
        self,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_tokens: int = 0,
        cost_usd: float | None = None,
        kind: str = "llm",
    ) -> None:
        fields = self.__dict__
        fields["model"] = model
        fields["input_tokens"] = input_tokens
        fields["output_tokens"] = output_tokens
        fields["cached_tokens"] = cached_tokens
        fields["cost_usd"] = cost_usd
        fields["kind"] = kind


class Services:
    """What the runtime lends to nodes. Implemented by the runtime.

    Only generic things live here: cancellation, per-run resources asked for by
    key, the usage ledger and sub-workflows. Nodes reach shared resources only
    through here, so a node never imports runtime internals, and the runtime
    never names a node type.
    """

    #: the directory of the workflow file, for paths relative to it
    workflow_dir: str | None = None
    #: set when the run is being stopped (Ctrl-C, fail-fast); long work should check it
    cancelled: threading.Event

    def resource(self, key: str, factory: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
        """A per-run resource (a connection pool, a session), shared by every item,
        batch and sub-workflow of the run.

        ``factory`` makes it on first use, once even when many threads ask at the
        same time; ``close`` (if given) is called on it when the run ends, in the
        reverse order of creation. Keys are the node type's own business: prefix
        them with the type name (``"http.clients"``).
        """
        raise NotImplementedError

    async def async_resource(
        self,
        key: str,
        factory: Callable[[], Awaitable[T]] | Callable[[], T],
        aclose: Callable[[T], Awaitable[Any]] | None = None,
    ) -> T:
        """The async twin of :meth:`resource`, for ``exec_async`` and :meth:`call_async`.

        The resource is made on the run's event loop (so an aiohttp session
        belongs to that loop), once per key, and ``aclose`` is awaited there
        when the run ends, before the loop stops. ``factory`` may be a plain
        function or a coroutine function.
        """
        raise NotImplementedError

    def call_async(self, coro: Awaitable[T]) -> T:
        """Run a coroutine on the run's event loop (started on first use) and
        wait for its result, from a node's synchronous ``exec``. When the run is
        cancelled while it waits, the coroutine is cancelled and
        ``NodeError("interrupted")`` is raised."""
        raise NotImplementedError

    def record_usage(self, ctx: ItemContext, usage: Usage) -> Usage:
        """Record one call's usage against this item; returns it with ``cost_usd``
        filled in from the run's price table when the node did not set it (None
        when the model's price is unknown)."""
        raise NotImplementedError

    def observe_rate(self, ctx: ItemContext, headers: Mapping[str, str]) -> None:
        """Let the limiter of this item's call learn from a successful response's
        ``x-ratelimit-*`` headers (a throttled one carries them in NodeError)."""

    def run_workflow(
        self, ctx: ItemContext, *, path: str | None, ir: dict[str, Any] | None, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        """Run a child workflow and return its declared outputs."""
        raise NotImplementedError


class ItemContext:
    """Everything one run of a node (one batch item) sees. PocketFlow's ``shared``."""

    __slots__ = ("attempt", "index", "node_id", "outputs", "params", "services")

    def __init__(
        self,
        node_id: str,
        index: int | None,
        params: dict[str, Any],
        services: Services,
        attempt: int = 1,
    ) -> None:
        self.node_id = node_id
        self.index = index  # None outside a batch
        self.params = params
        self.services = services
        self.attempt = attempt
        self.outputs: dict[str, Any] | None = None


class PlaitNode(_PocketFlowNode):
    """Base class of every node type, built-in or custom."""

    #: the name used in a workflow's ``type`` field
    type_name: ClassVar[str] = ""
    #: one line for ``plait nodes``
    description: ClassVar[str] = ""
    #: the declared interface (PocketFlow already uses ``params`` on the instance)
    param_specs: ClassVar[tuple[Param, ...]] = ()
    output_specs: ClassVar[tuple[Output, ...]] = ()
    #: the output printed when the workflow declares none and this node ran last
    primary_output: ClassVar[str | None] = None
    #: accept params that are not declared (the ``echo`` node)
    open_params: ClassVar[bool] = False
    #: outputs are not known before the run (a sub-workflow's), so templates are not checked
    dynamic_outputs: ClassVar[bool] = False
    #: the version of what the type does with its params: part of every item's key,
    #: so bump it when the same params would now give other results (resume re-runs them)
    version: ClassVar[str] = "1"
    #: cache this type's successful results across runs unless a node or the run says not to
    cacheable: ClassVar[bool] = False
    #: the version of cached results: bump it to make every cached entry of the type a miss
    cache_version: ClassVar[str] = "1"

    def __init__(self, node_id: str = "", max_retries: int = 1, wait: float = 0.0) -> None:
        # Total attempts, as PocketFlow (and pflow's max_retries) count them.
        super().__init__(max_retries=max_retries, wait=wait)
        self.node_id = node_id

    def prep(self, shared: ItemContext) -> Any:
        return shared.params

    def exec(self, prep_res: Any) -> dict[str, Any]:
        raise NotImplementedError

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        """Optional: the same work as ``exec``, as a coroutine.

        A node type that defines it can run on the ``async`` executor, where a
        parallel batch keeps thousands of items in flight on one event loop
        (``auto`` picks it for a parallel batch of such a node). It must not
        block the loop; ``prep`` and ``post`` stay synchronous and cheap.
        """
        raise NotImplementedError

    def demand(self, prep_res: Any) -> Demand | None:
        """Optional: what this item's call asks of a rate-limited or paid service
        (None: nothing). Called after ``prep``, before every attempt's ``exec``."""
        return None

    @classmethod
    def has_async_exec(cls) -> bool:
        return cls.exec_async is not PlaitNode.exec_async

    def post(self, shared: ItemContext, prep_res: Any, exec_res: dict[str, Any]) -> str:
        shared.outputs = exec_res
        return "default"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str | None]]:
        """Optional static checks beyond the declared types, run by `plait validate`
        and before every run: a list of (message, param name or None)."""
        return []

    @classmethod
    def check_warnings(cls, params: dict[str, Any]) -> list[str]:
        """Optional: what may go wrong that validation cannot refuse (the run goes on),
        shown by `plait validate` and at the start of a run."""
        return []

    @classmethod
    def warm_up(cls, services: Services) -> None:
        """Optional: prepare slow shared resources in the background at run start."""

    @classmethod
    def interface(cls) -> dict[str, Any]:
        """The declaration as plain data (``plait nodes --json``, docs, schema)."""
        return {
            "type": cls.type_name,
            "description": cls.description,
            "params": [
                {
                    "name": p.name,
                    "type": p.type,
                    "required": p.required,
                    "default": p.default,
                    "description": p.description,
                }
                for p in cls.param_specs
            ],
            "outputs": [
                {"name": o.name, "type": o.type, "description": o.description} for o in cls.output_specs
            ],
            "open_params": cls.open_params,
        }


class TemplatedText(str):
    """A string param rendered from a template, that also keeps its pieces.

    The runtime hands this to params declared with ``Param(keep_parts=True)``.
    ``parts`` alternates literal text and template values:
    ``(("literal", "echo "), ("value", <the resolved value>), ...)``. The shell
    node uses it to pass values as data (environment variables) instead of
    splicing them into code; everywhere else it behaves as the rendered ``str``.
    """

    parts: tuple[tuple[str, Any], ...]

    def __new__(cls, rendered: str, parts: tuple[tuple[str, Any], ...]) -> TemplatedText:
        obj = super().__new__(cls, rendered)
        obj.parts = parts
        return obj
