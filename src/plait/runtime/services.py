"""The runtime's side of the node contract (:class:`plait.nodes.base.Services`), for one run.

Only generic things live here: cancellation, the event bus, per-run resources
asked for by key, the usage ledger and the sub-workflow runner. Nothing here
names a node type: the http node's client pool, for one, is a resource the
http node makes for itself.

A sub-workflow gets services of its own (its location, its file stack, its
ledger) that share the run's cancellation, bus and resources with the root.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from plait.nodes.base import ItemContext, NodeError, PlaitNode, Services, Usage
from plait.runtime.events import EventBus, Location, Step, UsageRecorded

if TYPE_CHECKING:
    from plait.runtime.aio import RunLoop
    from plait.runtime.subworkflows import SubWorkflows

T = TypeVar("T")
_MISSING = object()


def new_run_id() -> str:
    return secrets.token_hex(4)


class UsageLedger:
    """Usage per node of one workflow level (thread-safe): calls, tokens, cost."""

    FIELDS = ("calls", "input_tokens", "output_tokens", "cached_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[str, list[float]] = {}
        self._cost: dict[str, float | None] = {}

    def add(self, node_id: str, usage: Usage) -> None:
        with self._lock:
            row = self._by_node.get(node_id)
            if row is None:
                row = self._by_node[node_id] = [0, 0, 0, 0]
            row[0] += 1
            row[1] += usage.input_tokens
            row[2] += usage.output_tokens
            row[3] += usage.cached_tokens
            if usage.cost_usd is not None:
                self._cost[node_id] = (self._cost.get(node_id) or 0.0) + usage.cost_usd

    def of(self, node_id: str) -> dict[str, Any]:
        with self._lock:
            row = list(self._by_node.get(node_id, (0, 0, 0, 0)))
            cost = self._cost.get(node_id)
        return self._shape(row, cost)

    def total(self) -> dict[str, Any]:
        with self._lock:
            rows = list(self._by_node.values())
            costs = [c for c in self._cost.values() if c is not None]
        row = [sum(r[i] for r in rows) for i in range(4)]
        return self._shape(row, sum(costs) if costs else None)

    def _shape(self, row: list[float], cost: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": int(row[0]), "input_tokens": int(row[1]), "output_tokens": int(row[2])}
        if row[3]:
            out["cached_tokens"] = int(row[3])
        if cost is not None:
            out["cost_usd"] = round(cost, 6)
        return out


class RunServices(Services):
    """Services for one run (``parent`` is None) or one sub-workflow run inside it."""

    def __init__(
        self,
        registry: Any,
        bus: EventBus | None = None,
        workflow_dir: str | None = None,
        *,
        cancelled: threading.Event | None = None,
        parent: tuple[RunServices, ItemContext] | None = None,
        stack: tuple[str, ...] = (),
        run_id: str | None = None,
    ) -> None:
        self.registry = registry
        self.bus = bus if bus is not None else EventBus()
        self.workflow_dir = workflow_dir
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        self.parent = parent
        self.ledger = UsageLedger()
        # The files of this workflow and the ones enclosing it, for cycle detection.
        self.stack = stack
        if parent is None:
            self._root: RunServices = self
            self.depth = 0
            self.path: tuple[Step, ...] = ()
            self.run_id = run_id or new_run_id()
        else:
            services, ctx = parent
            self._root = services._root
            self.depth = services.depth + 1
            self.path = (*services.path, (ctx.node_id, ctx.index))
            self.run_id = self._root.run_id
        self._warmed = False
        # Per-run resources by key; only the root's are used (children ask the root).
        self._resources: dict[str, Any] = {}
        self._closers: list[tuple[Callable[[Any], None], Any]] = []
        self._resource_lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}
        self._locations: dict[str, Location] = {}
        self._subworkflows: SubWorkflows | None = None
        self._loop: RunLoop | None = None
        #: the run's choice of executor (--executor), for sub-workflows too, root only
        self.executor_choice: str | None = None
        #: the run being resumed (its recorded results are reused), root only
        self.resumed_from: str | None = None
        self.reuse: Any = None  # a ReuseSource (runtime/resume.py) when resuming
        #: what a batch reading {"from": "-"} reads (the CLI's stdin, or --items FILE), root only
        self.stdin: Any = None
        #: the run's item cache: "default" (each node's own setting), "on", "off" or "refresh"
        self.cache_mode = "default"
        self._cache: Any = None

    @property
    def root(self) -> RunServices:
        return self._root

    def location(self, node_id: str) -> Location:
        loc = self._locations.get(node_id)
        if loc is None:
            loc = self._locations[node_id] = Location(node_id, self.path)
        return loc

    # -- per-run resources

    def resource(self, key: str, factory: Callable[[], T], close: Callable[[T], None] | None = None) -> T:
        root = self._root
        if root is not self:
            return root.resource(key, factory, close)
        hit = self._resources.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        with self._resource_lock:
            making = self._making.setdefault(key, threading.Lock())
        with making:  # one factory call per key; other keys are made meanwhile
            hit = self._resources.get(key, _MISSING)
            if hit is not _MISSING:
                return hit
            value = factory()
            with self._resource_lock:
                if close is not None:
                    self._closers.append((close, value))
                self._resources[key] = value
            return value

    def item_cache(self) -> Any:
        """The item cache (runtime/cache.py), opened on first use."""
        root = self._root
        if root._cache is None:
            from plait.paths import home
            from plait.runtime.cache import open_cache

            with root._resource_lock:
                if root._cache is None:
                    root._cache = open_cache(home())
        return root._cache

    # -- the run's event loop

    def event_loop(self) -> RunLoop:
        """The run's event loop thread, started on first use (the async executor, async nodes)."""
        root = self._root
        if root._loop is None:
            with root._resource_lock:
                if root._loop is None:
                    from plait.runtime.aio import RunLoop

                    root._loop = RunLoop(name=f"plait-loop-{root.run_id}")
        return root._loop

    async def async_resource(
        self,
        key: str,
        factory: Callable[[], Awaitable[T]] | Callable[[], T],
        aclose: Callable[[T], Awaitable[Any]] | None = None,
    ) -> T:
        return await self.event_loop().resource(key, factory, aclose)

    def call_async(self, coro: Awaitable[T]) -> T:
        import asyncio

        try:
            return self.event_loop().call(coro, self.cancelled)
        except asyncio.CancelledError:
            raise NodeError("interrupted", retryable=False) from None

    def warm_up(self, node_classes: Iterable[type[PlaitNode]]) -> None:
        """Let node types prepare slow shared resources in the background (the
        http node imports httpx and builds its SSL context) while the first
        nodes run."""
        root = self._root
        if root._warmed:
            return
        root._warmed = True
        for cls in node_classes:
            if cls.warm_up is not PlaitNode.warm_up:
                threading.Thread(target=cls.warm_up, args=(root,), name="plait-warm-up", daemon=True).start()

    def close(self) -> None:
        """Close the run's resources, newest first; one that fails does not stop the others.
        The async ones are closed on the event loop, which then stops."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.close()
        with self._resource_lock:
            closers, self._closers = self._closers, []
            self._resources.clear()
        for close, value in reversed(closers):
            try:
                close(value)
            except Exception:
                pass

    # -- usage

    def record_usage(self, ctx: ItemContext, usage: Usage) -> Usage:
        # One event, where the call happened; the usage is added at every level,
        # so the enclosing workflow node and the run count it too. The event is
        # made only when someone listens (it costs more than the rest here).
        if UsageRecorded in self.bus.listening:
            self.bus.emit(
                UsageRecorded(
                    self.location(ctx.node_id),
                    ctx.index,
                    ledger=usage.kind,
                    model=usage.model,
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cached_tokens=usage.cached_tokens,
                    cost_usd=usage.cost_usd,
                )
            )
        services: RunServices | None = self
        while services is not None:
            services.ledger.add(ctx.node_id, usage)
            if services.parent is None:
                break
            services, ctx = services.parent
        return usage

    def observe_rate(self, ctx: ItemContext, headers: Any) -> None:
        return None

    # -- sub-workflows

    def run_workflow(
        self, ctx: ItemContext, *, path: str | None, ir: dict[str, Any] | None, inputs: dict[str, Any]
    ) -> dict[str, Any]:
        root = self._root
        if root._subworkflows is None:
            from plait.runtime.subworkflows import SubWorkflows

            with root._resource_lock:
                if root._subworkflows is None:
                    root._subworkflows = SubWorkflows()
        return root._subworkflows.run(self, ctx, path=path, ir=ir, inputs=inputs)
