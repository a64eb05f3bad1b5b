"""A node's run: its items resolved, driven through an executor, and its output built (SPEC §5).

The driver (:mod:`plait.runtime.driver`) owns retries, the error policy, the
limits and the window; this module turns a node into a job for it and the
final outcomes into the node's output, in input order.
"""

from __future__ import annotations

import json
import time
from functools import partial
from typing import Any

from plait.runtime.compile import CompiledNode, CompiledWorkflow
from plait.runtime.driver import BatchDriver, Checks, FailurePolicy, RetryPolicy, Stop, StopReason
from plait.runtime.events import BatchStarted
from plait.runtime.executors import Executor, Job
from plait.runtime.items import Outcome, run_attempt
from plait.runtime.services import RunServices
from plait.templates import Base, TemplateError

_EMPTY: dict[str, Any] = {}


class BatchFailed(Exception):
    def __init__(self, message: str, index: int | None, outputs: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.outputs = outputs


def _job(cn: CompiledNode, base: Base, services: RunServices, workflow: CompiledWorkflow | None = None) -> Job:
    return Job(
        node=cn, base=base, services=services, run=partial(run_attempt, cn, base, services), workflow=workflow
    )


def _retry(cn: CompiledNode) -> RetryPolicy:
    return RetryPolicy(cn.max_attempts, cn.retry_wait, cn.retry_backoff)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


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
    services: RunServices,
    executor: Executor,
    workflow: CompiledWorkflow | None = None,
) -> dict[str, Any]:
    """Run a batch node; return its output (SPEC §5) or raise BatchFailed."""
    spec = cn.batch
    assert spec is not None
    t0 = time.perf_counter()
    items = resolve_items(cn, base)
    count = len(items)
    bus = services.bus
    if bus.active:
        bus.emit(BatchStarted(services.location(cn.id), count, spec.parallel, spec.max_concurrent))
    results: list[dict[str, Any] | None] = [None] * count
    durations: list[float] = []
    errors: list[dict[str, Any]] = []
    reused = [0]  # items whose recorded outcome was reused (resume)

    def on_final(out: Outcome) -> None:  # called by the driver, in this thread
        i: int = out.index  # type: ignore[assignment]  # batch items always have one
        result = {"index": i, "item": out.item, "attempts": out.attempt}
        if out.outputs:
            result.update(out.outputs)
        if out.reused:
            reused[0] += 1
        if not out.ok:
            result["error"] = out.error
            errors.append({"index": i, "item": out.item, "error": out.error, "attempts": out.attempt})
        results[i] = result
        durations.append(out.duration)

    policy = FailurePolicy(spec.error_handling == "fail_fast", count, spec.max_failures, spec.max_failure_rate)
    reuse = _reuse(cn, services)
    cache = _cache(cn, services)
    driver = BatchDriver(
        _job(cn, base, services, workflow),
        executor,
        retry=_retry(cn),
        failures=policy,
        on_final=on_final,
        check=_check(reuse, cache),
    )
    try:
        stop = driver.run(iter(enumerate(items)))
    finally:
        if reuse is not None:
            reuse.close()

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
            "max_retries": cn.max_attempts,
            "error_handling": spec.error_handling,
            "completed": len(finished),
            **({"reused": reused[0]} if services.root.reuse is not None else {}),
            **(cache.stats.metadata() if cache is not None else {}),
            "timing": {
                "total_ms": round(total_ms, 3),
                "avg_item_ms": round(sum(durations) / len(durations) * 1000.0, 3) if durations else 0.0,
                "p50_item_ms": round(percentile(durations, 0.5) * 1000.0, 3),
                "p95_item_ms": round(percentile(durations, 0.95) * 1000.0, 3),
                "max_item_ms": round(durations[-1] * 1000.0, 3) if durations else 0.0,
            },
            "llm_usage": services.ledger.of(cn.id),
        },
    }
    _raise_for(stop, errors, output)
    return output


def _raise_for(stop: Stop | None, errors: list[dict[str, Any]], output: dict[str, Any]) -> None:
    if stop is None:
        return
    if stop.reason is StopReason.INTERRUPTED:
        raise BatchFailed("interrupted", None, output)
    if stop.reason is StopReason.FAIL_FAST and errors:
        first = errors[0]
        raise BatchFailed(
            f"item {first['index']} failed: {first['error']}"
            + (f" (after {first['attempts']} attempts)" if first["attempts"] > 1 else ""),
            first["index"],
            output,
        )
    raise BatchFailed(stop.message, None, output)


def _reuse(cn: CompiledNode, services: RunServices) -> Any:
    """When resuming: the recorded outcomes of this node, to reuse (top-level nodes only)."""
    source = services.root.reuse
    if source is None or services.parent is not None:
        return None
    return source.for_node(cn.id, cn.fingerprint)


def _cache(cn: CompiledNode, services: RunServices) -> Any:
    """The node's item cache check, when it caches on this run."""
    mode = services.root.cache_mode
    if mode == "off":
        return None
    wanted = mode in ("on", "refresh") or (cn.cache if cn.cache is not None else cn.cls.cacheable)
    if not wanted:
        return None
    from plait.runtime.cache import CacheCheck

    return CacheCheck(services.item_cache(), cn, ttl=cn.cache_ttl, read=mode != "refresh")


def _check(*checks: Any) -> Any:
    present = [c for c in checks if c is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else Checks(*present)


def run_single(cn: CompiledNode, base: Base, services: RunServices, executor: Executor) -> Outcome:
    """A node without a batch: one item, same retries."""
    final: list[Outcome] = []
    reuse = _reuse(cn, services)
    driver = BatchDriver(
        _job(cn, base, services),
        executor,
        retry=_retry(cn),
        failures=FailurePolicy(),
        on_final=final.append,
        check=_check(reuse, _cache(cn, services)),
    )
    try:
        stop = driver.run(iter([(None, None)]))
    finally:
        if reuse is not None:
            reuse.close()
    if not final:  # interrupted before it could finish
        out = Outcome(None, None, 1, 0, time.time())
        out.error = "interrupted" if stop is not None and stop.reason is StopReason.INTERRUPTED else "did not run"
        out.retryable = False
        return out
    return final[0]
