"""The batch driver: every attempt of a batch goes through here, whatever runs it.

It owns, once for every executor: the window of attempts in flight, the retry
heap (due times, backoff, ``Retry-After``), the failure policy (``fail_fast``,
``max_failures``, ``max_failure_rate``), interrupts, and the item events. It
submits :class:`Attempt` objects to an executor and takes :class:`Outcome`
objects back; each item's final outcome goes to ``on_final``, in completion
order (the caller restores input order).
"""

from __future__ import annotations

import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from plait.runtime.events import ItemFailed, ItemFinished, ItemInterrupted, ItemRetried, items_in
from plait.runtime.executors import Executor, Job
from plait.runtime.items import Attempt, BadItem, Outcome, resolve
from plait.templates import TemplateError

RETRY_CAP_S = 60.0
RETRY_AFTER_CAP_S = 300.0
WINDOW_FACTOR = 2  # attempts in flight per slot: keeps workers fed without a future per item
# After an interrupt, how long attempts in flight may take to come back before
# they are abandoned (and recorded as interrupted): the run stops within a second.
STOP_GRACE_S = 0.75
_WAKE_S = 0.5  # the longest the driver sleeps without looking at the cancel flag
RATE_FLOOR = 100  # max_failure_rate of a stream without a known total: at least this many items
#: rate-limit answers (429/503) an item may get before it fails: they are retried apart
#: from max_retries, but a server that never stops refusing must not hold a batch forever
MAX_THROTTLED_RETRIES = 20
#: the wait before retrying a throttled call that said no Retry-After (its limiter,
#: when it has one, pauses on its own terms)
THROTTLE_WAIT_S = 1.0


class StopReason(Enum):
    FAIL_FAST = "fail_fast"
    MAX_FAILURES = "max_failures"
    MAX_FAILURE_RATE = "max_failure_rate"
    INTERRUPTED = "interrupted"
    BUDGET = "budget"


@dataclass(frozen=True)
class Stop:
    """Why a batch stopped before every item ran."""

    reason: StopReason
    message: str


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed attempt is tried again (SPEC §5)."""

    max_attempts: int = 1
    wait: float = 0.0
    backoff: str = "fixed"  # or "exponential"

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        delay = self.wait
        if self.backoff == "exponential" and self.wait > 0:
            delay = min(self.wait * 2 ** (attempt - 1), max(RETRY_CAP_S, self.wait))
            delay += random.uniform(0, delay * 0.25)
        if retry_after is not None:
            delay = max(delay, min(retry_after, RETRY_AFTER_CAP_S))
        return delay


@dataclass(frozen=True)
class FailurePolicy:
    """When failed items stop a batch."""

    fail_fast: bool = True
    total: int | None = None  # None: not known (a stream)
    max_failures: int | None = None
    max_failure_rate: float | None = None

    def check(self, failures: int, finished: int = 0) -> Stop | None:
        if self.fail_fast:
            return Stop(StopReason.FAIL_FAST, "fail_fast")
        if self.max_failures is not None and failures > self.max_failures:
            return Stop(
                StopReason.MAX_FAILURES,
                f"batch aborted: {failures} items failed, more than max_failures={self.max_failures}",
            )
        # Measured against the whole batch, so the decision does not depend on
        # which items happened to finish first. A stream of unknown length
        # (standard input) is measured against what finished, never fewer than
        # RATE_FLOOR items, so a bad start does not abort it at once.
        rate = self.max_failure_rate
        if rate is None:
            return None
        of = self.total if self.total is not None else max(finished, RATE_FLOOR)
        if of and failures / of > rate:
            shown = f"{failures} of {of}" if self.total is not None else f"{failures} of the {finished} finished"
            return Stop(
                StopReason.MAX_FAILURE_RATE,
                f"batch aborted: {shown} items failed, more than "
                f"max_failure_rate={rate:g} ({rate * 100:g}%)",
            )
        return None


class RetryHeap:
    """Attempts waiting for their due time, earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Attempt]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due: float, attempt: Attempt) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, attempt))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Attempt | None:
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None

    def drain(self) -> list[Attempt]:
        waiting = [entry[2] for entry in self._heap]
        self._heap.clear()
        return waiting


class Window:
    """The attempts in flight, at most ``capacity`` of them."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._flying: dict[tuple[int | None, int], Attempt] = {}

    def __len__(self) -> int:
        return len(self._flying)

    @property
    def has_room(self) -> bool:
        return len(self._flying) < self.capacity

    def add(self, attempt: Attempt) -> None:
        self._flying[(attempt.index, attempt.number)] = attempt

    def remove(self, out: Outcome) -> bool:
        """False for an outcome the window no longer waits for (abandoned)."""
        return self._flying.pop((out.index, out.attempt), None) is not None

    def abandon(self) -> list[Attempt]:
        flying = list(self._flying.values())
        self._flying.clear()
        return flying


class ItemCheck(Protocol):
    """The driver's "already done?" for the items of one batch (resume, the item cache).

    ``before`` sees each item's first attempt, its params resolved: an outcome
    settles it without running, True parks it (it waits for an identical item
    in flight), None lets it run. ``after`` hears every final outcome and
    returns the outcomes of parked items it answers and the parked items that
    must run after all; ``retried`` hears an attempt that is retried. A check
    with ``keyed = False`` does without the item's key (``attempt.key`` is then
    None unless the item events carry it to a listener).
    """

    def before(self, attempt: Attempt) -> Outcome | bool | None: ...

    def after(self, out: Outcome) -> tuple[list[Outcome], list[Attempt]]: ...

    def retried(self, out: Outcome) -> None: ...


class Checks:
    """Several checks, asked in order (the first that knows an item answers)."""

    def __init__(self, *checks: ItemCheck) -> None:
        self.checks = checks
        self.keyed = any(getattr(c, "keyed", True) for c in checks)

    def before(self, attempt: Attempt) -> Outcome | bool | None:
        for check in self.checks:
            found = check.before(attempt)
            if found is not None:
                return found
        return None

    def after(self, out: Outcome) -> tuple[list[Outcome], list[Attempt]]:
        outcomes: list[Outcome] = []
        attempts: list[Attempt] = []
        for check in self.checks:
            more, again = check.after(out)
            outcomes += more
            attempts += again
        return outcomes, attempts

    def retried(self, out: Outcome) -> None:
        for check in self.checks:
            check.retried(out)


class BatchDriver:
    """Runs every item of one batch (or the one item of a node) through an executor."""

    def __init__(
        self,
        job: Job,
        executor: Executor,
        *,
        retry: RetryPolicy,
        failures: FailurePolicy,
        on_final: Callable[[Outcome], None],
        check: ItemCheck | None = None,
        admit: Callable[[int], bool] | None = None,
        grouped: bool = False,
    ) -> None:
        self.job = job
        #: batch.group: an attempt's item is a list of items, each counted in
        #: ``finished`` and ``failed`` (max_failures and max_failure_rate count items)
        self._grouped = grouped
        self.executor = executor
        self.retry = retry
        self.failures = failures
        self.on_final = on_final
        #: "already done?": a recorded or cached outcome for an item, before the
        #: executor sees it (the driver then resolves the item's params itself)
        self.check = check
        self._check_keyed = getattr(check, "keyed", True)
        #: may item N be launched now? (a results file's bounded reorder buffer says no
        #: while a slow item holds its head): the driver waits for outcomes meanwhile
        self.admit = admit
        self.finished = 0
        self._next = 0
        slots = max(1, executor.slots)
        self.window = Window(slots * WINDOW_FACTOR if slots > 1 else 1)
        # Sequential means in order: an item's retries come before the next
        # item, and fail_fast stops at the first failure, not after the rest ran.
        self.in_order = self.window.capacity == 1
        self.retries = RetryHeap()
        self.failed = 0
        self.stop: Stop | None = None
        services = job.services
        self._cancelled = services.cancelled
        self._bus = services.bus
        self._loc = services.location(job.node.id)
        self._stopped_at: float | None = None
        self._parked: dict[tuple[int | None, int], Attempt] = {}  # waiting for an identical item in flight
        self._ready: deque[Attempt] = deque()  # parked ones to run after all
        self._root = services.root
        #: throttled retries per item still going (they do not count as attempts)
        self._throttles: dict[int | None, int] = {}
        self.throttled = 0  # throttled retries in all
        self.not_launched = 0  # items the budget kept from starting

    # -- the loop

    def run(self, items: Iterator[tuple[int | None, Any]]) -> Stop | None:
        """Run every item; return why the batch stopped early, or None when every item ran."""
        executor = self.executor
        executor.start(self.job)
        try:
            self._loop(items)
        finally:
            executor.close()
        return self.stop

    def _loop(self, items: Iterator[tuple[int | None, Any]]) -> None:
        # The per-item path: the window's and the heap's containers are used
        # directly here (a method call per item would cost more than the rest).
        retries = self.retries
        heap = retries._heap
        flying = self.window._flying
        capacity = self.window.capacity
        in_order = self.in_order
        cancelled = self._cancelled
        submit, next_outcome = self.executor.submit, self.executor.next_outcome
        # An executor that runs an attempt in this thread (sequential) runs a
        # new item's first attempt at once in order: no window entry, no queue.
        run_now: Callable[[Attempt], Outcome] | None = getattr(self.executor, "run_now", None) if in_order else None
        handle = self._handle
        admit = self.admit
        exhausted = False
        ready = self._ready
        while True:
            if self.stop is None:
                if cancelled.is_set():
                    self._halt(Stop(StopReason.INTERRUPTED, "interrupted"))
                else:
                    if heap:
                        self._launch_due_retries()
                    while ready and len(flying) < capacity:
                        attempt = ready.popleft()
                        flying[(attempt.index, attempt.number)] = attempt
                        submit(attempt)
                    while not exhausted and len(flying) < capacity and not (in_order and heap):
                        if admit is not None and not admit(self._next):
                            break
                        try:
                            index, item = next(items)
                        except StopIteration:
                            exhausted = True
                            break
                        self._next = (index or 0) + 1
                        attempt = Attempt(index, item, 1)
                        if type(item) is BadItem:  # a malformed record of a source: its failure
                            self._bad(attempt)
                            continue
                        if self.check is not None and self._known(attempt):
                            continue
                        if run_now is not None:
                            handle(run_now(attempt))
                            # the next item only while nothing stopped the batch (fail_fast,
                            # an interrupt): the loop's head looks at both
                            if self.stop is not None or cancelled.is_set():
                                break
                            continue
                        flying[(index, 1)] = attempt
                        submit(attempt)
            if not flying:
                if self.stop is None and cancelled.is_set():
                    continue  # interrupted by what the last item did: the loop's head halts the batch
                if self._parked and self.stop is None and not ready and not heap:
                    # nothing runs that could answer them (a check lost track): they run themselves
                    ready.extend(self._parked.values())
                    self._parked.clear()
                    continue
                if (not heap and not ready) or self.stop is not None:
                    return
                # Nothing runs: wait for the next retry, but wake at once on an
                # interrupt (a retry wait can be a minute, a Retry-After five).
                due = retries.next_due() or 0.0
                cancelled.wait(max(0.0, due - time.monotonic()))
                continue
            out = next_outcome(self._timeout() if heap or self._stopped_at is not None else _WAKE_S)
            if out is None:
                self._abandon_if_overdue()
                continue
            if flying.pop((out.index, out.attempt), None) is not None:
                self._handle(out)

    def _timeout(self) -> float:
        timeout = _WAKE_S
        due = self.retries.next_due()
        if due is not None and self.stop is None:
            timeout = min(timeout, max(0.0, due - time.monotonic()))
        if self._stopped_at is not None:
            timeout = min(timeout, max(0.0, self._stopped_at + STOP_GRACE_S - time.monotonic()))
        return timeout

    def _bad(self, attempt: Attempt) -> None:
        bad = attempt.item
        # its item, wherever it is shown (errors, results file, record): the start of its text
        out = Outcome(attempt.index, bad.raw, 1, 0, time.time())
        out.error = bad.message
        out.retryable = False
        self._handle(out)

    def _known(self, attempt: Attempt) -> bool:
        """Resolve the item here and ask ``check``; True when it was settled without running."""
        assert self.check is not None
        # The item key only for whom it is for: a check that finds items by it (a
        # resume), or the listeners of the events that carry it (the run record).
        listening = self._bus.listening
        keyed = self._check_keyed or ItemFinished in listening or ItemFailed in listening
        try:
            attempt.params, attempt.key = resolve(self.job.node, self.job.base, attempt, keyed)
        except TemplateError as exc:  # the item cannot run: its failure, now
            out = Outcome(attempt.index, attempt.item, 1, 0, time.time())
            out.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
            out.retryable = False
            self._handle(out)
            return True
        except Exception:
            return False  # let the executor report it, as for any item
        known = self.check.before(attempt)
        if known is None:
            return False
        if known is True:
            self._parked[(attempt.index, attempt.number)] = attempt
            return True
        assert isinstance(known, Outcome)
        self._handle(known)
        return True

    def _launch_due_retries(self) -> None:
        now = time.monotonic()
        while self.window.has_room:
            attempt = self.retries.pop_due(now)
            if attempt is None:
                return
            self.window.add(attempt)
            self.executor.submit(attempt)

    def _halt(self, stop: Stop) -> None:
        self.stop = stop
        self.executor.cancel_pending()
        waiting = [*self.retries.drain(), *self._parked.values(), *self._ready]
        self._parked.clear()
        self._ready.clear()
        for attempt in waiting:  # waiting for a retry (or an identical item): it will not get one
            self._emit_interrupted(attempt.index, attempt.number, 0, 0.0)
        if stop.reason is StopReason.INTERRUPTED:
            self._stopped_at = time.monotonic()

    def _abandon_if_overdue(self) -> None:
        """After an interrupt, attempts that do not come back in time are given up."""
        if self._stopped_at is None or time.monotonic() < self._stopped_at + STOP_GRACE_S:
            return
        for attempt in self.window.abandon():
            self._emit_interrupted(attempt.index, attempt.number, 0, 0.0)

    # -- one outcome

    def _handle(self, out: Outcome) -> None:
        if out.cancelled:
            return
        bus = self._bus
        if out.ok:
            if ItemFinished in bus.listening:
                bus.emit(
                    ItemFinished(
                        self._loc, out.index, out.attempt, out.slot, out.duration * 1000.0,
                        item=out.item, outputs=out.outputs, key=out.key, action=out.action,
                        reused=out.reused, cached=out.cached, at=out.started + out.duration,
                        record=out.record,
                    )
                )
            self.finished += items_in(out.item) if self._grouped else 1
            if self._throttles:
                self._throttles.pop(out.index, None)
            self.on_final(out)
            if self.check is not None:
                self._settled(out)
            return
        if self._cancelled.is_set():
            # Stopped by the interrupt (a command killed on Ctrl-C): the item did
            # not finish, it did not fail; the record marks it interrupted.
            if self.stop is None:
                self._halt(Stop(StopReason.INTERRUPTED, "interrupted"))
            self._emit_interrupted(out.index, out.attempt, out.slot, out.duration * 1000.0)
            return
        if self._root.budget_stop is not None:  # set by the first item the budget refused
            # Not launched (or cut short once the budget stopped the run): no failure;
            # the record marks it cancelled and a resume runs it.
            if self.stop is None:
                self._halt(Stop(StopReason.BUDGET, self._root.budget_stop or out.error or "budget"))
            self.not_launched += 1
            self._throttles.pop(out.index, None)
            self._emit_interrupted(out.index, out.attempt, out.slot, out.duration * 1000.0)
            return
        error = out.error or "failed"
        throttles = self._throttles.get(out.index, 0) if self._throttles else 0
        if out.throttled and out.retryable and self.stop is None and throttles < MAX_THROTTLED_RETRIES:
            self._throttles[out.index] = throttles + 1
            self.throttled += 1
            wait = min(out.retry_after, RETRY_AFTER_CAP_S) if out.retry_after is not None else THROTTLE_WAIT_S
            if bus.wants(ItemRetried):
                bus.emit(
                    ItemRetried(
                        self._loc, out.index, out.attempt, out.slot, out.duration * 1000.0, error,
                        wait_s=round(wait, 3), at=out.started + out.duration, throttled=True,
                    )
                )
            self.retries.push(time.monotonic() + wait, Attempt(out.index, out.item, out.attempt + 1))
            if self.check is not None:
                self.check.retried(out)
            return
        if out.throttled and throttles >= MAX_THROTTLED_RETRIES:
            error = f"{error} (still rate limited after {throttles} throttled retries)"
            out.error = error
        if out.retryable and out.attempt - throttles < self.retry.max_attempts and self.stop is None:
            wait = self.retry.delay(out.attempt, out.retry_after)
            if bus.wants(ItemRetried):
                bus.emit(
                    ItemRetried(
                        self._loc, out.index, out.attempt, out.slot, out.duration * 1000.0, error,
                        wait_s=round(wait, 3), at=out.started + out.duration,
                    )
                )
            self.retries.push(time.monotonic() + wait, Attempt(out.index, out.item, out.attempt + 1))
            if self.check is not None:
                self.check.retried(out)
            return
        if bus.wants(ItemFailed):
            bus.emit(
                ItemFailed(
                    self._loc, out.index, out.attempt, out.slot, out.duration * 1000.0, error,
                    item=out.item, outputs=out.outputs, key=out.key, reused=out.reused,
                    at=out.started + out.duration,
                )
            )
        items = items_in(out.item) if self._grouped else 1
        self.failed += items
        self.finished += items
        if self._throttles:
            self._throttles.pop(out.index, None)
        self.on_final(out)
        self._settled(out)
        if self.stop is None:
            stop = self.failures.check(self.failed, self.finished)
            if stop is not None:
                self._halt(stop)

    def _settled(self, out: Outcome) -> None:
        """A final outcome: the check may answer the items that waited for it."""
        if self.check is None:
            return
        answered, again = self.check.after(out)
        for other in answered:
            if self._parked.pop((other.index, other.attempt), None) is not None:
                self._handle(other)
        for attempt in again:
            if self._parked.pop((attempt.index, attempt.number), None) is not None:
                self._ready.append(attempt)

    def _emit_interrupted(self, index: int | None, attempt: int, slot: int, duration_ms: float) -> None:
        if self._bus.wants(ItemInterrupted):
            reason = self.stop.reason.value if self.stop is not None else "interrupted"
            self._bus.emit(ItemInterrupted(self._loc, index, attempt, slot, duration_ms, reason=reason))
