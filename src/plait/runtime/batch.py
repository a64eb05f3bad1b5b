"""A node's run: its items resolved, driven through an executor, and its output built (SPEC §5).

The driver (:mod:`plait.runtime.driver`) owns retries, the error policy, the
limits and the window; this module turns a node into a job for it and the
final outcomes into the node's output, in input order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any

from plait.nodes.base import NodeError
from plait.runtime.compile import CompiledNode, CompiledWorkflow
from plait.runtime.driver import BatchDriver, Checks, FailurePolicy, RetryPolicy, Stop, StopReason
from plait.runtime.events import BatchStarted
from plait.runtime.executors import Executor, Job
from plait.runtime.items import BadItem, Outcome, attempt_runner
from plait.runtime.results import ResultList
from plait.runtime.services import RunServices
from plait.templates import Base, TemplateError

_EMPTY: dict[str, Any] = {}
#: a streaming batch's output lists this many failures (all are in the results file)
ERRORS_KEPT = 100


class BatchFailed(Exception):
    def __init__(self, message: str, index: int | None, outputs: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.outputs = outputs


def _job(cn: CompiledNode, base: Base, services: RunServices, workflow: CompiledWorkflow | None = None) -> Job:
    return Job(
        node=cn, base=base, services=services, run=attempt_runner(cn, base, services, lazy_key=True), workflow=workflow
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


def resolve_items(cn: CompiledNode, base: Base) -> tuple[Sequence[Any], bool]:
    """The batch's items, and whether the list is this batch's own (parsed here from
    text, so it may let go of each item once read)."""
    assert cn.items is not None
    owned = False
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
                owned = True
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
    if isinstance(value, ResultList):  # another batch's results: read one by one, not copied
        return value, False
    if not isinstance(value, list):
        kind = {
            dict: "an object", str: "a string", type(None): "null", bool: "a boolean",
            int: "an integer", float: "a number",
        }.get(type(value), f"a {type(value).__name__}")
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
    return value, owned


def _letting_go(items: list[Any], start_at: int) -> Iterator[tuple[int, Any]]:
    """(index, item) of a list only this batch holds, each dropped from it once handed
    out: a million parsed items are freed as they run, not at the end (the attempt
    keeps its own for retries)."""
    for i in range(start_at, len(items)):
        item = items[i]
        items[i] = None
        yield i, item


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except ValueError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Timing:
    """Item durations in constant memory: count, sum and max exactly, percentiles
    from a histogram of 2 % wide buckets (so a million items keep no list)."""

    _RATIO = 1.02
    _FLOOR = 1e-6  # 1 µs: everything shorter shares the first bucket

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self._buckets: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        # floor() is int() here, for less: past the floor, seconds * _INV_FLOOR >= 1.0
        # (floor * _INV_FLOOR is 1.0 exactly), so the log is never negative
        b = 0 if seconds <= _FLOOR_S else _floor(_log(seconds * _INV_FLOOR) * _INV_LOG_RATIO) + 1
        buckets = self._buckets
        buckets[b] = buckets.get(b, 0) + 1

    def percentile(self, q: float) -> float:
        if not self.count:
            return 0.0
        rank = math.ceil(q * self.count)  # nearest rank: p95 of two items is the slower one
        seen = 0
        for b in sorted(self._buckets):
            seen += self._buckets[b]
            if seen >= rank:
                value = self._FLOOR * self._RATIO ** max(b - 0.5, 0) if b else self._FLOOR
                return min(value, self.max)
        return self.max

    def summary(self, total_ms: float) -> dict[str, float]:
        return {
            "total_ms": round(total_ms, 3),
            "avg_item_ms": round(self.total / self.count * 1000.0, 3) if self.count else 0.0,
            "p50_item_ms": round(self.percentile(0.5) * 1000.0, 3),
            "p95_item_ms": round(self.percentile(0.95) * 1000.0, 3),
            "max_item_ms": round(self.max * 1000.0, 3),
        }


# one log per item instead of math.log(x, base)'s two
_FLOOR_S = Timing._FLOOR
_INV_FLOOR = 1.0 / _FLOOR_S
_log, _floor = math.log, math.floor
_INV_LOG_RATIO = 1.0 / math.log(Timing._RATIO)


class _Groups:
    """``batch.group``: consecutive items handed over as one list; remembers which
    items each group holds, to give every item its own result again."""

    def __init__(self, items: Iterator[tuple[int, Any]], size: int, max_bytes: int | None) -> None:
        self._items = items
        self.size = size
        self.max_bytes = max_bytes
        self.members: dict[int, list[tuple[int, Any]]] = {}  # group index -> (item index, item)
        #: the item index the next group starts at (a results file's buffer admits by item)
        self.next_item = 0

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        gi = 0
        group: list[tuple[int, Any]] = []
        used = 0
        for index, item in self._items:
            if type(item) is BadItem:  # a malformed record fails alone
                if group:
                    yield self._close(gi, group)
                    gi, group, used = gi + 1, [], 0
                self.members[gi] = [(index, item.raw)]  # shown as the start of its text
                self.next_item = index + 1
                yield gi, item
                gi += 1
                continue
            size = len(json.dumps(item, default=str)) if self.max_bytes is not None else 0
            if group and (len(group) >= self.size or (self.max_bytes is not None and used + size > self.max_bytes)):
                yield self._close(gi, group)
                gi, group, used = gi + 1, [], 0
            group.append((index, item))
            used += size
        if group:
            yield self._close(gi, group)

    def _close(self, gi: int, group: list[tuple[int, Any]]) -> tuple[int, Any]:
        self.members[gi] = group
        self.next_item = group[-1][0] + 1
        return gi, [item for _, item in group]

    def spread(self, out: Outcome, primary: str | None) -> list[tuple[int, Any, dict[str, Any] | None]]:
        """(item index, item, outputs) for each item of the group ``out`` ran."""
        members = self.members.pop(out.index, [])  # type: ignore[arg-type]
        outputs = out.outputs if isinstance(out.outputs, dict) else None
        field = _per_item_field(outputs, primary, len(members))
        spread = []
        for k, (index, item) in enumerate(members):
            mine = outputs
            if outputs is not None and field is not None:
                mine = {**outputs, field: outputs[field][k]}
            spread.append((index, item, mine))
        return spread


def _per_item_field(outputs: dict[str, Any] | None, primary: str | None, n: int) -> str | None:
    """The output that holds one value per item of a group: the primary one when it is a
    list of the group's length, else the only such list."""
    if outputs is None:
        return None
    if primary is not None and isinstance(outputs.get(primary), list) and len(outputs[primary]) == n:
        return primary
    lists = [k for k, v in outputs.items() if isinstance(v, list) and len(v) == n]
    return lists[0] if len(lists) == 1 else None


def _open_items(cn: CompiledNode, base: Base, services: RunServices, start_at: int) -> tuple[Any, int | None, Any]:
    """The batch's items as (iterator of (index, item), total or None, the source to close)."""
    spec = cn.batch
    assert spec is not None and cn.items is not None
    if isinstance(spec.items, dict):
        try:
            resolved = cn.items.resolve(base, _EMPTY)
        except TemplateError as exc:
            raise BatchFailed(f"batch.items: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), None, {})
        try:
            # only batches that read a source pay for its import
            from plait.runtime.sources import open_source

            source = open_source(resolved, base_dir=services.workflow_dir, stdin=services.root.stdin, start_at=start_at)
        except NodeError as exc:
            raise BatchFailed(exc.message, None, {}) from None
        if source.warning is not None:
            from plait.runtime.events import RunWarning

            services.bus.emit(RunWarning(services.location(cn.id), source.warning))
        return iter(source), source.total, source
    items, owned = resolve_items(cn, base)
    if owned:
        assert isinstance(items, list)
        return _letting_go(items, start_at), len(items), None
    listed: Iterator[tuple[int, Any]] = enumerate(items)
    if start_at:
        listed = ((i, x) for i, x in listed if i >= start_at)
    return listed, len(items), None


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
    sink = _open_sink(cn, base, services)
    start_at = sink.head if sink is not None and sink.order == "input" else 0
    source = None
    try:
        items, total, source = _open_items(cn, base, services, start_at)
        if sink is not None and sink.order != "input" and len(sink.done):
            done = sink.done
            items = ((i, x) for i, x in items if i not in done)
        groups = _Groups(items, spec.group, spec.group_bytes) if spec.group else None
        stop, collected = _drive(cn, base, services, executor, workflow, iter(groups) if groups else items,
                                 total, sink, groups)
        if stop is None and total is None and spec.max_failure_rate is not None and collected.error_count:
            # A stream's length is known once it ends: the rate now has its usual meaning.
            stop = FailurePolicy(False, collected.finished, None, spec.max_failure_rate).check(
                collected.error_count, collected.finished
            )
    except BaseException:
        if sink is not None:
            sink.close(success=False)
        raise
    finally:
        if source is not None:
            source.close()
    output = collected.output(stop, (time.perf_counter() - t0) * 1000.0, total)
    _raise_for(stop, output["errors"], output)
    return output


def _open_sink(cn: CompiledNode, base: Base, services: RunServices) -> Any:
    spec = cn.batch
    assert spec is not None
    if spec.results is None or cn.results is None:
        return None
    try:
        resolved = cn.results.resolve(base, _EMPTY)
    except TemplateError as exc:
        raise BatchFailed(f"batch.results: {exc.message}", None, {}) from None
    fields = ["item", "attempts", *(o.name for o in cn.cls.output_specs)]
    reuse = services.root.reuse if services.parent is None else None
    # --rerun NODE starts its results over; --only-unfinished keeps failures failed
    resume = reuse is not None and cn.id not in getattr(reuse, "rerun", ())
    try:
        from plait.runtime.sinks import ResultSink

        return ResultSink(
            resolved,
            base_dir=services.workflow_dir,
            resume=resume,
            default_fields=fields,
            keep_failed=bool(getattr(reuse, "only_unfinished", False)),
        )
    except NodeError as exc:
        raise BatchFailed(exc.message, None, {}) from None


class _Collected:
    """The final results of a batch: a list in input order, or rows in the sink."""

    def __init__(self, cn: CompiledNode, services: RunServices, sink: Any, total: int | None, cache: Any) -> None:
        self.cn = cn
        self.services = services
        self.sink = sink
        self.cache = cache
        # Kept compactly, as JSON text: a million results in tens of MB, not hundreds.
        self.results = ResultList(total or 0) if sink is None else None
        self.errors: list[dict[str, Any]] = list(sink.resumed_errors) if sink is not None else []
        self.error_count = sink.error_count if sink is not None else 0
        self.finished = (sink.count if sink is not None else 0)
        self.seen = 0
        self.reused = 0
        self.throttled = 0
        self.timing = Timing()

    def add(self, out: Outcome, spread: tuple[int, Any, dict[str, Any] | None] | None = None) -> None:
        """A final outcome: its item's own, or (``spread``) one item's of the group it ran."""
        if spread is None:
            i, item, outputs = out.index, out.item, out.outputs  # a batch item's index: never None
        else:
            i, item, outputs = spread
        if out.reused:
            self.reused += 1
        self.finished += 1
        ok = out.ok
        if not ok:
            self.error_count += 1
            if self.sink is None or len(self.errors) < ERRORS_KEPT:
                self.errors.append({"index": i, "item": item, "error": out.error, "attempts": out.attempt})
        if self.results is not None:
            if ok:
                record = out.record  # a reused item: its outputs' stored text, not encoded again
                text = record[2] if record is not None and outputs is out.outputs else None
                self.results.put_item(i, item, out.attempt, outputs, text=text)  # type: ignore[arg-type]
            else:
                self.results.put_item(i, item, out.attempt, outputs, out.error)  # type: ignore[arg-type]
        else:
            result: dict[str, Any] = {"index": i, "item": item, "attempts": out.attempt}
            if outputs:
                result.update(outputs)
            if not ok:
                result["error"] = out.error
            self.sink.write(i, result)
        self.timing.add(out.duration)

    def output(self, stop: Stop | None, total_ms: float, total: int | None) -> dict[str, Any]:
        spec = self.cn.batch
        assert spec is not None
        self.errors.sort(key=lambda e: e["index"])
        # A batch that ran to the end has as many items as it read: a count made
        # first is an estimate for a malformed file (a JSON array stops at its error).
        count = self.finished if stop is None or total is None else total
        results: Any = self.sink.close(success=stop is None) if self.results is None else self.results.present()
        meta: dict[str, Any] = {
            "parallel": spec.parallel,
            "max_concurrent": spec.max_concurrent,
            "max_retries": self.cn.max_attempts,
            "error_handling": spec.error_handling,
            "completed": self.finished,
        }
        if spec.group:
            meta["group"] = spec.group
        if self.services.root.reuse is not None:
            meta["reused"] = self.reused
        if self.cache is not None:
            meta.update(self.cache.stats.metadata())
        meta["timing"] = self.timing.summary(total_ms)
        usage = self.services.ledger.of(self.cn.id)
        meta["llm_usage"] = usage
        if "cost_usd" in usage:
            meta["cost_usd"] = usage["cost_usd"]
        if self.throttled:
            meta["throttled"] = self.throttled
        extra: dict[str, Any] = {}
        if stop is not None and stop.reason is StopReason.BUDGET:
            meta["budget"] = stop.message
            if self.results is not None and total:
                extra["not_run"] = self.results.missing()
        return {
            "results": results,
            "count": count,
            "success_count": self.finished - self.error_count,
            "error_count": self.error_count,
            "errors": self.errors,
            "batch_metadata": meta,
            **extra,
        }


def _drive(
    cn: CompiledNode,
    base: Base,
    services: RunServices,
    executor: Executor,
    workflow: CompiledWorkflow | None,
    items: Iterator[tuple[int, Any]],
    total: int | None,
    sink: Any,
    groups: _Groups | None,
) -> tuple[Stop | None, _Collected]:
    spec = cn.batch
    assert spec is not None
    bus = services.bus
    if bus.active:
        carried = len(sink.done) if sink is not None else 0
        bus.emit(BatchStarted(services.location(cn.id), total, spec.parallel, spec.max_concurrent,
                              grouped=groups is not None, carried=carried,
                              carried_failed=sink.error_count if carried else 0))
    reuse = _reuse(cn, services)
    cache = _cache(cn, services)
    collected = _Collected(cn, services, sink, total, cache)
    primary = cn.cls.primary_output

    def spread(out: Outcome) -> None:  # called by the driver, in this thread
        assert groups is not None
        for one in groups.spread(out, primary):
            collected.add(out, one)

    on_final = collected.add if groups is None else spread

    policy = FailurePolicy(spec.error_handling == "fail_fast", total, spec.max_failures, spec.max_failure_rate)
    driver = BatchDriver(
        _job(cn, base, services, workflow),
        executor,
        retry=_retry(cn),
        failures=policy,
        on_final=on_final,
        check=_check(reuse, cache),
        admit=_admit(sink, groups),
        grouped=groups is not None,
    )
    try:
        stop = driver.run(items)
    finally:
        if reuse is not None:
            reuse.close()
        collected.throttled = driver.throttled
    return stop, collected


def _admit(sink: Any, groups: _Groups | None) -> Any:
    """The driver's "may the next one start?": the results file's bounded buffer
    decides, by item index (a group by the first item it would hold)."""
    if sink is None:
        return None
    if groups is None:
        return sink.can_accept
    can_accept = sink.can_accept
    return lambda _group: can_accept(groups.next_item)


def _raise_for(stop: Stop | None, errors: list[dict[str, Any]], output: dict[str, Any]) -> None:
    if stop is None:
        return
    if stop.reason is StopReason.INTERRUPTED:
        raise BatchFailed("interrupted", None, output)
    if stop.reason is StopReason.BUDGET:
        not_run = output.get("not_run")
        left = f"; {len(not_run)} of {output['count']} items did not run" if not_run is not None else ""
        raise BatchFailed(f"{stop.message}{left}", None, output)
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
    cache = services.item_cache()
    if cache is None:  # its file cannot be read: said once, and the run goes without it
        return None
    from plait.runtime.cache import CacheCheck

    return CacheCheck(cache, cn, ttl=cn.cache_ttl, read=mode != "refresh")


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
        if stop is not None and stop.reason is StopReason.BUDGET:
            out.error = stop.message
        out.retryable = False
        return out
    return final[0]
