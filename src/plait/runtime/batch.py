"""Items and batches: run one node once per item, above the executor seam.

Everything a user relies on lives here, once, for every executor: results in
input order, retries with exponential backoff, jitter, a cap and
``Retry-After``, the ``fail_fast`` / ``continue`` policies with their limits,
the bounded window of items in flight, and the item events.
"""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from plait.nodes.base import ItemContext, NodeError, Services
from plait.runtime.compile import CompiledNode
from plait.runtime.events import Event, EventBus
from plait.runtime.executors import CANCELLED, Executor
from plait.templates import Base, TemplateError

RETRY_CAP_S = 60.0
RETRY_AFTER_CAP_S = 300.0
WINDOW_FACTOR = 2  # items in flight per slot: keeps workers fed without a future per item
_EMPTY: dict[str, Any] = {}


class Outcome:
    """The result of one attempt at one item."""

    __slots__ = (
        "action",
        "attempt",
        "duration",
        "error",
        "index",
        "item",
        "ok",
        "outputs",
        "retry_after",
        "retryable",
        "slot",
        "started",
    )

    def __init__(self, index: int | None, item: Any, attempt: int, slot: int, started: float) -> None:
        self.index = index
        self.item = item
        self.attempt = attempt
        self.slot = slot
        self.started = started
        self.ok = False
        self.outputs: dict[str, Any] | None = None
        self.error: str | None = None
        self.retryable = True
        self.retry_after: float | None = None
        self.duration = 0.0
        self.action = "default"


def run_item(
    cn: CompiledNode,
    base: Base,
    services: Services,
    bus: EventBus,
    index: int | None,
    item: Any,
    attempt: int,
    slot: int,
) -> Outcome | object:
    """One attempt: resolve params, then PocketFlow's prep → exec → post. Never raises."""
    if services.cancelled.is_set():  # queued before the interrupt: it does not start
        return CANCELLED
    started = time.time()
    t0 = time.perf_counter()
    out = Outcome(index, item, attempt, slot, started)
    if bus.active:
        bus.emit(Event("item_started", cn.id, index=index, attempt=attempt, slot=slot, at=started))
    try:
        if index is None:
            local = _EMPTY
        else:
            assert cn.batch is not None
            local = {cn.batch.alias: item, "__index__": index}
        ctx = ItemContext(cn.id, index, cn.resolve_params(base, local), services, attempt)
        node = cn.node
        prep_res = node.prep(ctx)
        exec_res = node.exec(prep_res)
        out.action = node.post(ctx, prep_res, exec_res) or "default"
        outputs = ctx.outputs if ctx.outputs is not None else exec_res
        out.outputs = outputs
        error = outputs.get("error") if isinstance(outputs, dict) else None
        if error:
            out.error = error if isinstance(error, str) else json.dumps(error, default=str)
        elif not isinstance(outputs, dict):
            out.error = f"node returned {type(outputs).__name__}, not a dict of outputs"
            out.retryable = False
        else:
            out.ok = True
    except NodeError as exc:
        out.error = exc.message
        out.outputs = exc.outputs
        out.retryable = exc.retryable
        out.retry_after = exc.retry_after
    except TemplateError as exc:
        out.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
        out.retryable = False
    except (Exception, SystemExit) as exc:  # a node's bug is an item failure, not a crash of the run
        # SystemExit too (a library calling sys.exit): in a worker thread it
        # would end the thread silently and leave the batch waiting forever.
        out.error = f"{type(exc).__name__}: {exc}"
    out.duration = time.perf_counter() - t0
    return out


def backoff(attempt: int, retry_wait: float, retry_after: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``: doubling, jittered, capped."""
    delay = 0.0
    if retry_wait > 0:
        delay = min(retry_wait * 2 ** (attempt - 1), max(RETRY_CAP_S, retry_wait))
        delay += random.uniform(0, delay * 0.25)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
    return delay


class Limits:
    """When to stop launching items."""

    def __init__(
        self,
        fail_fast: bool,
        total: int,
        max_failures: int | None = None,
        max_failure_rate: float | None = None,
    ) -> None:
        self.fail_fast = fail_fast
        self.total = total
        self.max_failures = max_failures
        self.max_failure_rate = max_failure_rate

    def exceeded(self, failures: int) -> str | None:
        """A reason to abort, or None."""
        if self.fail_fast:
            return "fail_fast"
        if self.max_failures is not None and failures > self.max_failures:
            return (
                f"batch aborted: {failures} items failed, more than max_failures={self.max_failures}"
            )
        # Measured against the whole batch, so the decision does not depend on
        # which items happened to finish first.
        if (
            self.max_failure_rate is not None
            and self.total
            and failures / self.total > self.max_failure_rate
        ):
            return (
                f"batch aborted: {failures} of {self.total} items failed, more than "
                f"max_failure_rate={self.max_failure_rate:g} ({self.max_failure_rate * 100:g}%)"
            )
        return None


def drive(
    cn: CompiledNode,
    base: Base,
    services: Services,
    bus: EventBus,
    executor: Executor,
    items: Iterator[tuple[int | None, Any]],
    limits: Limits,
    on_final: Callable[[Outcome], None],
) -> str | None:
    """Run every item through the executor, retrying failures, and pass each
    item's final outcome to ``on_final`` (in completion order).

    Returns why the batch stopped early (``"fail_fast"``, a limit message,
    ``"interrupted"``) or None when every item ran.
    """
    window = executor.slots * WINDOW_FACTOR if executor.slots > 1 else 1
    # Sequential means in order: an item's retries come before the next item,
    # and fail_fast stops at the first failure, not after the rest ran.
    in_order = window == 1
    cancelled = services.cancelled
    emit = bus.emit if bus.active else None
    task = partial(run_item, cn, base, services, bus)
    retries: list[tuple[float, int, int | None, Any, int]] = []  # (due, seq, index, item, attempt)
    seq = 0
    in_flight = 0
    failures = 0
    stop: str | None = None
    exhausted = False
    max_retries, retry_wait = cn.max_retries, cn.retry_wait
    next_outcome, submit = executor.next_outcome, executor.submit
    try:
        while True:
            if stop is None and cancelled.is_set():
                stop = "interrupted"
                executor.cancel_pending()
                retries.clear()
            if stop is None:
                if retries:
                    now = time.monotonic()
                    while retries and in_flight < window and retries[0][0] <= now:
                        _, _, index, item, attempt = heapq.heappop(retries)
                        submit(partial(task, index, item, attempt))
                        in_flight += 1
                while not exhausted and in_flight < window and not (in_order and retries):
                    try:
                        index, item = next(items)
                    except StopIteration:
                        exhausted = True
                        break
                    submit(partial(task, index, item, 1))
                    in_flight += 1
            if in_flight == 0:
                if not retries or stop is not None:
                    return stop
                # Nothing runs: wait for the next retry, but wake at once on an
                # interrupt (a retry wait can be a minute, a Retry-After five).
                cancelled.wait(max(0.0, retries[0][0] - time.monotonic()))
                continue
            timeout = 0.5  # wake now and then to notice an interrupt
            if retries:
                timeout = min(timeout, max(0.0, retries[0][0] - time.monotonic()))
            out = next_outcome(timeout)
            if out is None:
                continue
            in_flight -= 1
            if out is CANCELLED:
                continue
            if out.ok:
                if emit:
                    emit(_finished(cn.id, out, "item_finished"))
                on_final(out)
                continue
            if cancelled.is_set():
                # Stopped by the interrupt (a command killed on Ctrl-C): the item did
                # not finish, it did not fail; the record marks it interrupted.
                if stop is None:
                    stop = "interrupted"
                    executor.cancel_pending()
                    retries.clear()
                continue
            if out.retryable and out.attempt <= max_retries and stop is None:
                wait = backoff(out.attempt, retry_wait, out.retry_after)
                if emit:
                    ev = _finished(cn.id, out, "item_retried")
                    ev.data = {"wait_s": round(wait, 3)}
                    emit(ev)
                seq += 1
                heapq.heappush(retries, (time.monotonic() + wait, seq, out.index, out.item, out.attempt + 1))
                continue
            if emit:
                emit(_finished(cn.id, out, "item_failed"))
            failures += 1
            on_final(out)
            if stop is None:
                reason = limits.exceeded(failures)
                if reason is not None:
                    stop = reason
                    executor.cancel_pending()
                    retries.clear()
    finally:
        executor.close()


def _finished(node_id: str, out: Outcome, kind: str) -> Event:
    return Event(
        kind,
        node_id,
        index=out.index,
        attempt=out.attempt,
        slot=out.slot,
        status="success" if out.ok else "failed",
        duration_ms=out.duration * 1000.0,
        error=out.error,
        at=out.started + out.duration,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


class BatchFailed(Exception):
    def __init__(self, message: str, index: int | None, outputs: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.outputs = outputs


def resolve_items(cn: CompiledNode, base: Base) -> list[Any]:
    assert cn.items is not None
    try:
        value = cn.items.resolve(base, _EMPTY)
    except TemplateError as exc:  # a miss found only now is the node's failure, not a crash
        raise BatchFailed(
            f"batch.items: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), None, {}
        ) from None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise BatchFailed(
                    f"batch.items is a string that looks like a JSON list but does not parse ({exc}): "
                    f"{_preview(value)}",
                    None,
                    {},
                )
        elif text == "":
            value = []
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        kind = {dict: "an object", str: "a string", type(None): "null", bool: "a boolean"}.get(
            type(value), f"a {type(value).__name__}"
        )
        hint = ""
        if isinstance(value, dict):
            lists = [k for k, v in value.items() if isinstance(v, list)]
            if lists:
                hint = f"; did you mean one of its lists: {', '.join(lists[:5])}?"
        raise BatchFailed(
            f"batch.items must resolve to a list, but {cn.items.value!r} gave {kind}: "
            f"{_preview(value)}{hint}",
            None,
            {},
        )
    return value


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def run_batch(
    cn: CompiledNode,
    base: Base,
    services: Services,
    bus: EventBus,
    executor: Executor,
    usage: Callable[[], dict[str, int]],
) -> dict[str, Any]:
    """Run a batch node; return its output (SPEC §5) or raise BatchFailed."""
    spec = cn.batch
    assert spec is not None
    t0 = time.perf_counter()
    items = resolve_items(cn, base)
    count = len(items)
    if bus.active:
        bus.emit(
            Event(
                "batch_started",
                cn.id,
                data={"total": count, "parallel": spec.parallel, "max_concurrent": spec.max_concurrent},
            )
        )
    results: list[dict[str, Any] | None] = [None] * count
    durations: list[float] = []
    errors: list[dict[str, Any]] = []
    lock = threading.Lock()  # on_final runs in the coordinator; the lock is cheap insurance

    def on_final(out: Outcome) -> None:
        i: int = out.index  # type: ignore[assignment]  # batch items always have one
        if out.ok:
            assert out.outputs is not None
            result = {"index": i, "item": out.item, "attempts": out.attempt, **out.outputs}
        else:
            result = {
                "index": i,
                "item": out.item,
                "attempts": out.attempt,
                **(out.outputs or _EMPTY),
                "error": out.error,
            }
            with lock:
                errors.append({"index": i, "item": out.item, "error": out.error, "attempts": out.attempt})
        results[i] = result
        durations.append(out.duration)

    limits = Limits(
        spec.error_handling == "fail_fast", count, spec.max_failures, spec.max_failure_rate
    )
    stop = drive(cn, base, services, bus, executor, iter(enumerate(items)), limits, on_final)
    errors.sort(key=lambda e: e["index"])
    durations.sort()
    total_ms = (time.perf_counter() - t0) * 1000.0
    finished = [r for r in results if r is not None]
    output = {
        "results": results if len(finished) == count else finished,
        "count": count,
        "success_count": len(finished) - len(errors),
        "error_count": len(errors),
        "errors": errors,
        "batch_metadata": {
            "parallel": spec.parallel,
            "max_concurrent": spec.max_concurrent,
            "max_retries": cn.max_retries,
            "error_handling": spec.error_handling,
            "completed": len(finished),
            "timing": {
                "total_ms": round(total_ms, 3),
                "avg_item_ms": round(sum(durations) / len(durations) * 1000.0, 3) if durations else 0.0,
                "p50_item_ms": round(percentile(durations, 0.5) * 1000.0, 3),
                "p95_item_ms": round(percentile(durations, 0.95) * 1000.0, 3),
                "max_item_ms": round(durations[-1] * 1000.0, 3) if durations else 0.0,
            },
            "llm_usage": usage(),
        },
    }
    if stop == "interrupted":
        raise BatchFailed("interrupted", None, output)
    if stop == "fail_fast" and errors:
        first = errors[0]
        raise BatchFailed(
            f"item {first['index']} failed: {first['error']}"
            + (f" (after {first['attempts']} attempts)" if first["attempts"] > 1 else ""),
            first["index"],
            output,
        )
    if stop is not None:
        raise BatchFailed(stop, None, output)
    return output


def run_single(
    cn: CompiledNode, base: Base, services: Services, bus: EventBus, executor: Executor
) -> Outcome:
    """A node without a batch: one item, same retries."""
    final: list[Outcome] = []
    stop = drive(cn, base, services, bus, executor, iter([(None, None)]), Limits(True, 1), final.append)
    if not final:  # interrupted before it could finish
        out = Outcome(None, None, 1, 0, time.time())
        out.error = "interrupted" if stop == "interrupted" else "did not run"
        out.retryable = False
        return out
    return final[0]
