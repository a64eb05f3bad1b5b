"""The runtime's side of the node contract (:class:`plait.nodes.base.Services`), for one run.

Only generic things live here: cancellation, the event bus, per-run resources
asked for by key, the usage ledger and the sub-workflow runner. Nothing here
names a node type: the http node's client pool, for one, is a resource the
http node makes for itself.

A sub-workflow gets services of its own (its location, its file stack, its
ledger) that share the run's cancellation, bus and resources with the root.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from plait.nodes.base import Demand, ItemContext, NodeError, PlaitNode, Services, Usage
from plait.runtime.cancel import CancelSignal
from plait.runtime.events import EventBus, Location, Step, UsageRecorded

if TYPE_CHECKING:
    from plait.runtime.aio import RunLoop
    from plait.runtime.compile import CompiledNode, CompiledWorkflow
    from plait.runtime.limits import Budget, BudgetTicket, Limiter, LimiterSet, Ticket
    from plait.runtime.prices import PriceTable
    from plait.runtime.subworkflows import SubWorkflows

T = TypeVar("T")
_MISSING = object()
_BOTH_PATHS = frozenset({"sync", "async"})


def new_run_id() -> str:
    return os.urandom(4).hex()


class UsageLedger:
    """Usage per node of one workflow level (thread-safe): calls, tokens, cost."""

    FIELDS = ("calls", "input_tokens", "output_tokens", "cached_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # node id -> [calls, input, output, cached, cost (None: no call had a known cost)]
        self._by_node: dict[str, list[Any]] = {}

    def add(self, node_id: str, usage: Usage) -> None:
        cost = usage.cost_usd
        lock = self._lock
        lock.acquire()  # by hand, not ``with``: half the cost, once per call and level
        try:
            row = self._by_node.get(node_id)
            if row is None:
                row = self._by_node[node_id] = [0, 0, 0, 0, None]
            row[0] += 1
            row[1] += usage.input_tokens
            row[2] += usage.output_tokens
            row[3] += usage.cached_tokens
            if cost is not None:
                row[4] = cost if row[4] is None else row[4] + cost
        finally:
            lock.release()

    def of(self, node_id: str) -> dict[str, Any]:
        with self._lock:
            row = list(self._by_node.get(node_id, (0, 0, 0, 0, None)))
        return self._shape(row, row[4])

    def total(self) -> dict[str, Any]:
        with self._lock:
            rows = [list(r) for r in self._by_node.values()]
        costs = [r[4] for r in rows if r[4] is not None]
        row = [sum(r[i] for r in rows) for i in range(4)]
        return self._shape(row, sum(costs) if costs else None)

    def _shape(self, row: list[Any], cost: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {"calls": int(row[0]), "input_tokens": int(row[1]), "output_tokens": int(row[2])}
        if row[3]:
            out["cached_tokens"] = int(row[3])
        if cost is not None:
            out["cost_usd"] = round(cost, 6)
        return out


class BudgetRefused(Exception):
    """An item's worst-case cost does not fit its budget: it is not launched."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Call:
    """One paid or rate-limited call of an item, between its demand and its settling:
    what it asked, the limiter and budget it holds, and the usage it reported."""

    __slots__ = ("budget", "budget_of", "demand", "headers", "limiter", "more", "ticket", "usage", "worst")

    def __init__(self, demand: Demand, limiter: Limiter | None = None) -> None:
        self.demand = demand
        self.limiter = limiter
        self.ticket: Ticket | None = None
        self.budget: BudgetTicket | None = None
        self.budget_of: Budget | None = None  # the budget it must be reserved in
        self.worst = 0.0  # its worst-case cost, in dollars
        self.headers: Any = None  # the x-ratelimit-* headers of a successful answer
        # what it used: the first record_usage (the usual one and only), then any more
        self.usage: Usage | None = None
        self.more: list[Usage] | None = None


class _CallPlan:
    """What :meth:`RunServices.open_call` decides once per compiled node rather
    than per call: its budget and its limiter (the named one, none, or the
    default one per demand key)."""

    __slots__ = ("budget", "by_key", "cn", "limiter", "rate")

    def __init__(self, cn: CompiledNode, budget: Budget | None) -> None:
        self.cn = cn  # held so that id(cn), the plan's key, is not reused while the plan lives
        self.budget = budget
        self.rate = cn.rate
        self.limiter: Limiter | None = None  # the named limiter, once found
        self.by_key: dict[str, Limiter] = {}  # default limiters by demand key


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
        # A CancelSignal wakes limiter waits at once on Ctrl-C (a plain Event is polled).
        self.cancelled = cancelled if cancelled is not None else CancelSignal()
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
        self._budget_warned: set[str] = set()  # sub-workflows told their budget is not applied
        self._warm_paths: dict[type[Any], frozenset[str]] = {}
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
        #: the run's --max-parallel-nodes, for sub-workflows too, root only (None: each workflow's own)
        self.max_parallel_nodes: int | None = None
        #: the run being resumed (its recorded results are reused), root only
        self.resumed_from: str | None = None
        self.reuse: Any = None  # a ReuseSource (runtime/resume.py) when resuming
        #: what a batch reading {"from": "-"} reads (the CLI's stdin, or --items FILE), root only
        self.stdin: Any = None
        #: the run's item cache: "default" (each node's own setting), "on", "off" or "refresh"
        self.cache_mode = "default"
        self._cache: Any = None
        # Limits, budgets and prices (docs/limits.md): the root's serve every level.
        self.limiters: LimiterSet | None = None
        self.budget: Budget | None = None
        self.prices: PriceTable | None = None  # this level's table (its workflow's prices over the user's)
        self._node_budgets: dict[int, Budget] = {}
        self._calls: dict[int, Call] = {}  # by id() of the ItemContext making the call
        self._plans: dict[int, _CallPlan] = {}  # by id() of the CompiledNode, root only
        # prices by model id, looked up once per run level (None: no known price)
        self._price_of: dict[str, Any] = {}
        #: why the run stopped for its budget (the first refusal), root only
        self.budget_stop: str | None = None
        self._limits_lock = threading.Lock()

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
        """The item cache (runtime/cache.py), opened on first use; None when its file
        cannot be read (the run goes on without it, and says so once)."""
        root = self._root
        if root._cache is None:
            from plait.paths import home
            from plait.runtime.cache import CacheUnreadable, open_cache

            with root._resource_lock:
                if root._cache is None:
                    try:
                        root._cache = open_cache(home())
                    except CacheUnreadable as exc:
                        root._cache = False
                        from plait.runtime.events import RunWarning

                        root.bus.emit(RunWarning(None, f"{exc.message}; this run goes without it ({exc.hint})"))
        return root._cache or None

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

    def warm_up(
        self, node_classes: Iterable[type[PlaitNode]], paths: Mapping[type[Any], set[str]] | None = None
    ) -> None:
        """Let node types prepare slow shared resources in the background (the
        http node imports aiohttp or httpx) while the run is set up and the
        first nodes run. ``paths``: which of ``exec`` ("sync") and
        ``exec_async`` ("async") each type's nodes will use (see
        :meth:`warm_paths`)."""
        root = self._root
        if root._warmed:
            return
        root._warmed = True
        if paths is not None:
            root._warm_paths = {cls: frozenset(p) for cls, p in paths.items()}
        for cls in node_classes:
            if cls.warm_up is not PlaitNode.warm_up:
                threading.Thread(target=cls.warm_up, args=(root,), name="plait-warm-up", daemon=True).start()

    def warm_paths(self, cls: type[PlaitNode]) -> frozenset[str]:
        """For a node type's ``warm_up``: "sync" when some node of the type will
        run ``exec``, "async" when some will run ``exec_async`` (both when not known)."""
        return self._root._warm_paths.get(cls, _BOTH_PATHS)

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
        if self._root is self and self._cache:
            self._cache.flush()  # the hit counts it keeps in memory

    # -- limits, budgets, prices

    def configure_limits(self, compiled: CompiledWorkflow) -> None:
        """Set up the limiters, budgets and prices of a workflow about to run here:
        the root's are the run's; a sub-workflow adds the limiters it declares to
        them and prices its calls with its own ``prices``."""
        wf = compiled.workflow
        root = self._root
        with root._limits_lock:
            if wf.limits:  # else the first call with a demand makes the run's set (shell-only runs never load it)
                if root.limiters is None:
                    from plait.runtime.limits import LimiterSet

                    root.limiters = LimiterSet(wf.limits)
                else:
                    for name, spec in wf.limits.items():
                        root.limiters.declare(name, spec)
            if self is root and wf.budget_usd is not None and root.budget is None:
                from plait.runtime.limits import Budget

                if root.executor_choice == "dask":
                    from plait.errors import UsageError

                    raise UsageError(
                        "this workflow has a budget, which the dask executor's workers cannot share",
                        hint="run it without --executor dask (threads or async keep the budget exact)",
                    )

                root.budget = Budget(wf.budget_usd, name="run")
            elif self is not root and wf.budget_usd is not None:
                self._child_budget_ignored(compiled)
        if wf.prices is not None:
            from plait.runtime.prices import PriceTable

            self.prices = PriceTable.load(wf.prices)
        elif self.parent is not None:
            self.prices = self.parent[0].price_table()
        self._price_of = {}  # looked up in the table above from here on

    def _child_budget_ignored(self, compiled: CompiledWorkflow) -> None:
        """A sub-workflow's own budget is not enforced (the run has one ledger, the
        top level's): said once per run and workflow, not silently dropped."""
        root = self._root
        name = compiled.file or "an inline workflow"
        if name in root._budget_warned:
            return
        root._budget_warned.add(name)
        from plait.runtime.events import RunWarning

        root.bus.emit(
            RunWarning(
                None,
                f"the sub-workflow {name} declares budget.usd={compiled.workflow.budget_usd:g}, which is not "
                "applied when it runs inside another workflow: set the budget on the top-level workflow "
                "(it counts every call, the sub-workflows' too)",
            )
        )

    def price_table(self) -> PriceTable:
        if self.prices is None:
            from plait.runtime.prices import default_table

            self.prices = default_table()
        return self.prices

    def _budget_for(self, cn: CompiledNode) -> Budget | None:
        root = self._root
        if cn.budget_usd is None:
            return root.budget
        budget = root._node_budgets.get(id(cn))
        if budget is None:
            from plait.runtime.limits import Budget

            with root._limits_lock:
                budget = root._node_budgets.get(id(cn))
                if budget is None:
                    budget = Budget(cn.budget_usd, name=cn.id, parent=root.budget)
                    root._node_budgets[id(cn)] = budget
        return budget

    def _plan(self, cn: CompiledNode) -> _CallPlan:
        root = self._root
        plan = root._plans.get(id(cn))
        if plan is None:
            budget = self._budget_for(cn)
            with root._limits_lock:
                plan = root._plans.get(id(cn))
                if plan is None:
                    plan = root._plans[id(cn)] = _CallPlan(cn, budget)
        return plan

    def _limiter(self, plan: _CallPlan, key: str) -> Limiter | None:
        rate = plan.rate
        if rate is False:
            return None
        if isinstance(rate, str):
            if plan.limiter is None:
                plan.limiter = self._limiters().named(rate)  # KeyError, every call, when undeclared
            return plan.limiter
        limiter = plan.by_key.get(key)
        if limiter is None:
            limiter = plan.by_key[key] = self._limiters().get(key)
        return limiter

    def _limiters(self) -> LimiterSet:
        root = self._root
        limiters = root.limiters
        if limiters is None:
            from plait.runtime.limits import LimiterSet

            with root._limits_lock:
                if root.limiters is None:
                    root.limiters = LimiterSet()
            limiters = root.limiters
            assert limiters is not None
        return limiters

    def open_call(self, cn: CompiledNode, ctx: ItemContext, demand: Demand) -> Call:
        """Before a call: price its worst case for its budget and find its limiter.
        The caller then reserves (:meth:`reserve` / :meth:`reserve_async`) and
        acquires a limiter ticket, and always ends with :meth:`close_call`."""
        plan = self._root._plans.get(id(cn)) or self._plan(cn)
        # the default limiter of a key already met: found without the method call
        limiter = plan.by_key.get(demand.key) if plan.rate is None else None
        call = Call(demand, limiter if limiter is not None else self._limiter(plan, demand.key))
        budget = plan.budget
        if budget is not None:
            root = self._root
            if root.budget_stop is not None:
                raise BudgetRefused(root.budget_stop)
            table = self.price_table()
            model = demand.model or ""
            bound = demand.input_tokens_bound if demand.input_tokens_bound is not None else demand.input_tokens
            worst = table.worst_case_usd(model, bound, demand.max_output_tokens)
            if worst is None:
                why = (
                    f"model '{model}' has no known price" if table.resolve(model) is None
                    else f"model '{model}' has no known output limit (give the node max_tokens)"
                )
                raise NodeError(f"cannot reserve this call in budget '{budget.name}': {why}", retryable=False)
            call.budget_of = budget
            call.worst = worst
        self._calls[id(ctx)] = call
        return call

    def reserve(self, cn: CompiledNode, call: Call) -> None:
        """Reserve the call's worst case, waiting while calls in flight hold the room
        it needs; BudgetRefused when it cannot fit."""
        budget = call.budget_of
        if budget is None:
            return
        call.budget = budget.reserve_wait(call.worst, self.cancelled)
        if call.budget is None:
            self._refused(cn, call)

    async def reserve_async(self, cn: CompiledNode, call: Call) -> None:
        import asyncio

        budget = call.budget_of
        if budget is None:
            return
        while True:
            call.budget = budget.reserve(call.worst)
            if call.budget is not None:
                return
            if not budget.pending() or self.cancelled.is_set():
                self._refused(cn, call)
            await asyncio.sleep(0.005)  # calls in flight hold the room: wait for them

    def _refused(self, cn: CompiledNode, call: Call) -> None:
        root = self._root
        budget = call.budget_of
        assert budget is not None
        if self.cancelled.is_set():
            raise NodeError("interrupted", retryable=False)
        whose = "the run" if budget.name == "run" else f"node '{cn.id}'"
        message = (
            f"budget reached: ${budget.usd:g} for {whose}, ${budget.spent:.6g} spent; "
            f"the next call may cost up to ${call.worst:.6g}"
        )
        with root._limits_lock:
            if root.budget_stop is None:
                root.budget_stop = message
        raise BudgetRefused(root.budget_stop or message)

    def close_call(self, ctx: ItemContext, call: Call, exc: BaseException | None, started: bool = True) -> None:
        """After a call (``exc``: how it failed, None when it did not): settle the
        limiter ticket with the real usage and what the provider said, and the
        budget with the real cost. ``started`` False: the call was never made."""
        self._calls.pop(id(ctx), None)
        first = call.usage
        cost: float | None = None
        tokens: int | None = None
        if first is not None:
            more = call.more
            if more is None:  # the usual case, without the sums
                tokens = first.input_tokens + first.output_tokens
                cost = first.cost_usd
            else:
                usage = [first, *more]
                tokens = sum(u.input_tokens + u.output_tokens for u in usage)
                costs = [u.cost_usd for u in usage]
                cost = None if any(c is None for c in costs) else sum(c for c in costs if c is not None)
        ticket = call.ticket
        limiter = call.limiter
        if ticket is not None and limiter is not None:
            if exc is None:
                if started:
                    limiter.settle(ticket, actual_tokens=tokens, outcome="ok", headers=call.headers)
                else:
                    limiter.release(ticket)
            elif not started:
                limiter.release(ticket)
            elif isinstance(exc, NodeError) and exc.throttled:
                limiter.settle(ticket, actual_tokens=0, outcome="throttled",
                               retry_after=exc.retry_after, headers=exc.headers)
            else:
                headers = call.headers
                if headers is None and isinstance(exc, NodeError):
                    headers = exc.headers
                outcome: Literal["ok", "error"] = "ok" if first is not None else "error"
                limiter.settle(ticket, actual_tokens=tokens, outcome=outcome, headers=headers)
        if call.budget is not None:
            budget = call.budget.budget
            if not started or (first is None and isinstance(exc, NodeError) and (exc.throttled or not exc.retryable)):
                # never made, refused by the provider, or refused before the call: nothing was paid
                budget.release(call.budget)
            elif first is None and exc is not None:
                budget.settle(call.budget, None)  # it may have been paid: keep the worst case as spent
            else:
                budget.settle(call.budget, cost)

    def drop_call(self, ctx: ItemContext) -> None:
        """Forget a call that was refused before it held anything."""
        self._calls.pop(id(ctx), None)

    def observe_rate(self, ctx: ItemContext, headers: Any) -> None:
        call = self._calls.get(id(ctx))
        if call is not None:
            call.headers = headers

    def limiter_stats(self) -> dict[str, dict[str, Any]]:
        limiters = self._root.limiters
        return limiters.stats() if limiters is not None else {}

    # -- usage

    def record_usage(self, ctx: ItemContext, usage: Usage) -> Usage:
        if usage.cost_usd is None and usage.model:
            model = usage.model
            price = self._price_of.get(model, _MISSING)
            if price is _MISSING:
                price = self._price_of[model] = self.price_table().resolve(model)
            if price is not None:
                inp, out, cached = usage.input_tokens, usage.output_tokens, usage.cached_tokens
                usage = Usage(model, inp, out, cached, price.cost(inp, out, cached), usage.kind)
        call = self._calls.get(id(ctx))
        if call is not None:
            if call.usage is None:
                call.usage = usage
            elif call.more is None:
                call.more = [usage]
            else:
                call.more.append(usage)
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
        self.ledger.add(ctx.node_id, usage)
        parent = self.parent
        while parent is not None:
            services, ctx = parent
            services.ledger.add(ctx.node_id, usage)
            parent = services.parent
        return usage

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
