"""One attempt at one item: the per-item path, and the plain data that crosses the executor seam.

An :class:`Attempt` (index, item, attempt number) goes into an executor; an
:class:`Outcome` comes back. Both are plain data, so an executor may run the
attempt in another thread, another event loop or another process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from plait.nodes.base import ItemContext, NodeError
from plait.runtime.events import ItemFailed, ItemFinished, ItemStarted
from plait.runtime.services import BudgetRefused
from plait.templates import TemplateError

if TYPE_CHECKING:
    from plait.runtime.compile import CompiledNode
    from plait.runtime.services import Call, RunServices
    from plait.templates import Base

_EMPTY: dict[str, Any] = {}
_MAIN = threading.main_thread().ident


class Interrupt(BaseException):
    """Raised into a node's ``exec`` running in the main thread that did not come
    back after an interrupt (a ``read`` on a FIFO, a C call that ignores
    signals): the item ends as interrupted and the run winds down."""


class _Depth:
    """How deep the main thread is inside node ``exec`` calls (sub-workflows nest)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


# an instance, not a class attribute: setting one of those twice per item costs more
_MainExec = _Depth()


def main_thread_in_exec() -> bool:
    return _MainExec.depth > 0


class BadItem:
    """A record that could not be read. Its index is an item failure with ``message``."""

    __slots__ = ("message", "raw")

    def __init__(self, message: str, raw: str | None = None) -> None:
        self.message = message
        #: the start of the record's text, for a result file or a log
        self.raw = raw

    def __repr__(self) -> str:
        return f"BadItem({self.message!r})"


class Attempt:
    """What an executor is asked to run. ``params`` and ``key`` are set when the
    driver resolved them already (to look for a reusable result first)."""

    __slots__ = ("index", "item", "key", "number", "params")

    def __init__(
        self,
        index: int | None,
        item: Any,
        number: int = 1,
        params: dict[str, Any] | None = None,
        key: str | None = None,
    ) -> None:
        self.index = index
        self.item = item
        self.number = number
        self.params = params
        self.key = key

    def __repr__(self) -> str:
        return f"Attempt(index={self.index}, number={self.number})"


class Outcome:
    """The result of one attempt at one item."""

    __slots__ = (
        "action",
        "attempt",
        "budget",
        "cached",
        "cancelled",
        "duration",
        "error",
        "index",
        "item",
        "key",
        "ok",
        "outputs",
        "record",
        "retry_after",
        "retryable",
        "reused",
        "slot",
        "started",
        "throttled",
    )

    def __init__(self, index: int | None, item: Any, attempt: int, slot: int, started: float) -> None:
        self.index = index
        self.item = item
        self.attempt = attempt
        self.slot = slot
        self.started = started
        self.ok = False
        self.cancelled = False  # dropped before it started (cancel_pending, or the run stopping)
        self.outputs: dict[str, Any] | None = None
        self.error: str | None = None
        self.retryable = True
        self.retry_after: float | None = None
        self.duration = 0.0
        self.action = "default"
        self.key: str | None = None  # the item's key (runtime/keys.py), None when it has none
        self.reused: str | None = None  # the run whose recorded result this is
        #: a reused success: its recorded row (rowid, preview, outputs as stored JSON text)
        self.record: tuple[int, str | None, str] | None = None
        self.cached = False  # the result came from the item cache
        self.throttled = False  # a rate-limit answer (HTTP 429)
        self.budget = False  # not launched: its worst-case cost did not fit the budget

    @classmethod
    def dropped(cls, attempt: Attempt, slot: int = 0) -> Outcome:
        out = cls(attempt.index, attempt.item, attempt.number, slot, time.time())
        out.cancelled = True
        out.retryable = False
        out.key = attempt.key
        return out

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


def _begin(cn: CompiledNode, services: RunServices, attempt: Attempt, slot: int) -> Outcome:
    if services.cancelled.is_set():  # queued before the interrupt: it does not start
        return Outcome.dropped(attempt, slot)
    started = time.time()
    out = Outcome(attempt.index, attempt.item, attempt.number, slot, started)
    bus = services.bus
    if ItemStarted in bus.listening:
        bus.emit(ItemStarted(services.location(cn.id), attempt.index, attempt.number, slot, at=started))
    return out


def resolve(
    cn: CompiledNode, base: Base, attempt: Attempt, keyed: bool = True
) -> tuple[dict[str, Any], str | None]:
    """An attempt's params and its item key (the key of the params resolved
    without ``${__item_key__}`` and ``${__attempt__}``: one key for every attempt).
    ``keyed=False``: no key (None) unless a param uses it."""
    index = attempt.index
    if index is None:
        local: dict[str, Any] = {"__attempt__": attempt.number}
    else:
        assert cn.batch is not None
        local = {cn.batch.alias: attempt.item, "__index__": index, "__attempt__": attempt.number}
    if cn.uses_item_key:
        local["__item_key__"] = local["__attempt__"] = None
        key = cn.item_key(cn.resolve_params(base, local))
        local["__item_key__"], local["__attempt__"] = key, attempt.number
        return cn.resolve_params(base, local), key
    params = cn.resolve_params(base, local)
    return params, cn.item_key(params) if keyed else None


def _context(
    cn: CompiledNode, base: Base, services: RunServices, attempt: Attempt, out: Outcome, keyed: bool = True
) -> ItemContext:
    if attempt.params is not None:
        params, out.key = attempt.params, attempt.key
    else:
        params, out.key = resolve(cn, base, attempt, keyed)
    return ItemContext(cn.id, attempt.index, params, services, attempt.number)


def _post(out: Outcome, cn: CompiledNode, ctx: ItemContext, prep_res: Any, exec_res: Any) -> None:
    out.action = cn.node.post(ctx, prep_res, exec_res) or "default"
    outputs = ctx.outputs if ctx.outputs is not None else exec_res
    out.outputs = outputs
    if type(outputs) is dict and not outputs.get("error"):
        out.ok = True
    else:
        settle(out, outputs)


def _failed(out: Outcome, exc: BaseException) -> None:
    if isinstance(exc, NodeError):
        out.error = exc.message
        out.outputs = exc.outputs
        out.retryable = exc.retryable
        out.retry_after = exc.retry_after
        out.throttled = exc.throttled
    elif isinstance(exc, TemplateError):
        out.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        out.retryable = False
    else:
        out.error = f"{type(exc).__name__}: {exc}"


def run_attempt(
    cn: CompiledNode, base: Base, services: RunServices, attempt: Attempt, slot: int, *, lazy_key: bool = False
) -> Outcome:
    """One attempt: resolve params, then PocketFlow's prep → exec → post. Never raises.

    ``lazy_key``: the outcome is read in this process, where only the item
    events (``ItemFinished``, ``ItemFailed``) carry its key to their listeners
    (the run record): the key is made only while someone listens to them. An
    executor that runs attempts elsewhere leaves it False, since the events
    are emitted where the outcome arrives.
    """
    return attempt_runner(cn, base, services, lazy_key=lazy_key)(attempt, slot)


def attempt_runner(
    cn: CompiledNode, base: Base, services: RunServices, *, lazy_key: bool = False
) -> Callable[[Attempt, int], Outcome]:
    """:func:`run_attempt` for every attempt of one node: ``runner(attempt, slot)``,
    with what does not change from one item to the next (the node's methods, its
    params' plan, the run's flags) looked up once, not per item."""
    node = cn.node
    prep, node_exec, post = node.prep, node.exec, node.post
    demands = cn.demands
    node_id = cn.id
    bus = services.bus
    is_cancelled = services.cancelled.is_set
    now, clock, thread = time.time, time.perf_counter, threading.get_ident
    alias = cn.batch.alias if cn.batch is not None else ""
    resolve_params, item_key = cn.resolve_params, cn.item_key
    # an item's key comes from the params resolved without ${__item_key__}: resolve() makes it
    plain_params = not cn.uses_item_key
    main_exec = _MainExec

    def run(attempt: Attempt, slot: int) -> Outcome:
        # _begin and _context, written out: this is the per-item path of every in-process executor
        if is_cancelled():  # queued before the interrupt: it does not start
            return Outcome.dropped(attempt, slot)
        started = now()
        index, number = attempt.index, attempt.number
        out = Outcome(index, attempt.item, number, slot, started)
        listening = bus.listening
        if listening and ItemStarted in listening:
            bus.emit(ItemStarted(services.location(node_id), index, number, slot, at=started))
        t0 = clock()
        try:
            if attempt.params is not None:
                params, out.key = attempt.params, attempt.key
            else:
                keyed = not lazy_key or ItemFinished in listening or ItemFailed in listening
                if plain_params and index is not None:
                    params = resolve_params(base, {alias: attempt.item, "__index__": index, "__attempt__": number})
                    out.key = item_key(params) if keyed else None
                else:
                    params, out.key = resolve(cn, base, attempt, keyed)
            ctx = ItemContext(node_id, index, params, services, number)
            prep_res = prep(ctx)
            # One attribute for types without demand(); the rest only for those with one.
            call = _open(cn, services, ctx, prep_res) if demands else None
            if call is not None:
                services.reserve(cn, call)
                if call.limiter is not None:
                    call.ticket = call.limiter.acquire(call.demand.tokens, services.cancelled)
                    if call.ticket is None:  # Ctrl-C while it waited: it does not start
                        services.close_call(ctx, call, None, started=False)
                        raise Interrupt
                # the item's time is its call's, not its wait for the limiter or the budget
                out.started, t0 = now(), clock()
            try:
                if thread() == _MAIN:
                    main_exec.depth += 1
                    try:
                        exec_res = node_exec(prep_res)
                    finally:
                        main_exec.depth -= 1
                else:
                    exec_res = node_exec(prep_res)
            except BaseException as exc:
                if call is not None:
                    services.close_call(ctx, call, exc)
                raise
            if call is not None:
                services.close_call(ctx, call, None)
            # _post, written out
            action = post(ctx, prep_res, exec_res)
            if action != "default":
                out.action = action or "default"
            outputs = ctx.outputs if ctx.outputs is not None else exec_res
            out.outputs = outputs
            if type(outputs) is dict and not outputs.get("error"):
                out.ok = True
            else:
                settle(out, outputs)
        except Interrupt:
            out.error = "interrupted"
            out.retryable = False
        except BudgetRefused as exc:
            _refused(out, exc, services, ctx)
        except (Exception, SystemExit) as exc:  # a node's bug is an item failure, not a crash of the run
            # SystemExit too (a library calling sys.exit): in a worker thread it
            # would end the thread silently and leave the batch waiting forever.
            _failed(out, exc)
        out.duration = clock() - t0
        return out

    return run


async def run_attempt_async(
    cn: CompiledNode,
    base: Base,
    services: RunServices,
    attempt: Attempt,
    slot: int,
    run_sync: Callable[[Callable[[Any], Any], Any], Awaitable[Any]] | None = None,
) -> Outcome:
    """The same attempt on an event loop: ``exec_async`` when the node has one,
    else ``exec`` handed to ``run_sync`` (a thread). Never raises; cancelled, it
    comes back as an interrupted failure."""
    out = _begin(cn, services, attempt, slot)
    if out.cancelled:
        return out
    t0 = time.perf_counter()
    try:
        ctx = _context(cn, base, services, attempt, out)
        node = cn.node
        prep_res = node.prep(ctx)
        call = _open(cn, services, ctx, prep_res) if cn.demands else None
        if call is not None:
            await services.reserve_async(cn, call)
            if call.limiter is not None:
                try:
                    call.ticket = await call.limiter.acquire_async(call.demand.tokens, services.cancelled)
                except BaseException:
                    services.close_call(ctx, call, None, started=False)
                    raise
                if call.ticket is None:
                    services.close_call(ctx, call, None, started=False)
                    raise asyncio.CancelledError
            out.started, t0 = time.time(), time.perf_counter()
        try:
            if run_sync is None:
                exec_res = await node.exec_async(prep_res)
            else:
                exec_res = await run_sync(node.exec, prep_res)
        except BaseException as exc:
            if call is not None:
                services.close_call(ctx, call, exc)
            raise
        if call is not None:
            services.close_call(ctx, call, None)
        _post(out, cn, ctx, prep_res, exec_res)
    except asyncio.CancelledError:
        out.error = "interrupted"
        out.retryable = False
    except BudgetRefused as exc:
        _refused(out, exc, services, ctx)
    except (Exception, SystemExit) as exc:
        _failed(out, exc)
    out.duration = time.perf_counter() - t0
    return out


def _open(cn: CompiledNode, services: RunServices, ctx: ItemContext, prep_res: Any) -> Call | None:
    demand = cn.node.demand(prep_res)
    if demand is None:
        return None
    return services.open_call(cn, ctx, demand)


def _refused(out: Outcome, exc: BudgetRefused, services: RunServices, ctx: ItemContext) -> None:
    """Not launched for the budget: no failure of the item; the batch stops."""
    services.drop_call(ctx)
    out.budget = True
    out.error = exc.message
    out.retryable = False


def settle(out: Outcome, outputs: Any) -> None:
    """Judge what a node returned: an ``error`` in its outputs is a failure (SPEC §5)."""
    out.outputs = outputs
    error = outputs.get("error") if isinstance(outputs, dict) else None
    if error:
        out.error = error if isinstance(error, str) else json.dumps(error, default=str)
    elif not isinstance(outputs, dict):
        out.error = f"node returned {type(outputs).__name__}, not a dict of outputs"
        out.retryable = False
    else:
        out.ok = True
