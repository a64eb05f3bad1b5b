"""Named rate limiters with adaptive back-off, and cost budgets that cannot overshoot.

A :class:`Limiter` guards one upstream (a provider, a model, a host). Before a
call, a caller *acquires* a :class:`Ticket` (waiting as long as the limits ask);
after it, the caller *settles* the ticket with what really happened: the tokens
used, whether the upstream throttled (429/503), its ``Retry-After`` and
``x-ratelimit-*`` headers. One limiter is shared by every batch, branch and
sub-workflow of a run (:class:`LimiterSet`), by threads and asyncio tasks alike.

What a limiter enforces
-----------------------
* ``rps`` / ``rpm``: token buckets of requests, refilled continuously at
  rps/s and rpm/60 per s. ``tpm``: a bucket of model tokens refilled at tpm/60
  per s; a call takes its *estimate* and :meth:`Limiter.settle` gives back or
  charges the difference with the real usage. A bucket holds ``burst`` seconds
  of its rate (1 s by default, and at least one request), so over any window of
  T seconds at most ``rate x T + burst`` passes: a provider that counts per
  minute never sees the minute's worth sent in the first second. A call larger
  than a whole bucket (a 50k-token prompt against ``tpm: 600000``) goes when the
  bucket is full and leaves it in debt, which later calls wait out, so the
  long-run rate still holds and no call is refused for being big.
* ``concurrency``: calls in flight at once; it is also the ceiling of the
  adaptive window below.

Fairness and waiting
--------------------
Waiters form one FIFO queue and only its head may be granted, so a big token
request at the head is never overtaken by small ones behind it, and callers are
served in arrival order across threads and event loops. One ``threading.Lock``
guards all state and is held only for the bookkeeping (a few microseconds);
nobody waits while holding it. Every waiter has its own wake-up primitive — a
``threading.Event`` for a thread, an ``asyncio.Event`` plus its loop for a task
— and whoever changes the state (a settle that frees a slot or refunds tokens,
a waiter that gives up, the head whose timer fired) runs one *dispatch* under
the lock: it grants the head, then the next, for as long as they may go, and
tells the new head when to look again. The wake-ups are delivered after the
lock is released (``Event.set`` for threads, ``loop.call_soon_threadsafe`` for
tasks), so a thread can free capacity for a coroutine and the other way round.
Only the head sleeps with a timeout (until its bucket refills or a pause ends);
the others sleep until they are told, so N waiters cost no polling.

Cancellation
------------
``acquire(..., cancelled)`` returns ``None`` as soon as ``cancelled`` is set.
With a :class:`CancelSignal` (a ``threading.Event`` that also calls
subscribers when set — the runtime should make ``Services.cancelled`` one) the
waiter is woken at once; a plain ``threading.Event`` is polled every 50 ms. An
asyncio task waiting in :meth:`Limiter.acquire_async` can also simply be
cancelled. A waiter that leaves takes its place out of the queue, so the ones
behind move up.

Adaptive back-off
-----------------
* ``settle(outcome="throttled", retry_after=...)`` (a 429 or 503) pauses the
  whole limiter until ``Retry-After`` has passed (``retry-after-ms`` and
  ``Retry-After`` headers are read when no value is given; without any, 2 s,
  doubling for each throttle in a row up to 60 s). Calls in flight finish.
* The concurrency window shrinks by half on a throttle (from what was really
  in flight, never below 1) and grows back by 1/window per success while it is
  what limits (+1 per window's worth of successes, as TCP does), up to
  ``concurrency`` when configured. Only calls sent under the current window
  move it: the 429s of a burst sent before a decrease are one congestion
  event, and their successes do not grow it back either.
* ``x-ratelimit-*`` headers (OpenAI's: ``limit``, ``remaining`` and ``reset``
  for ``requests`` and ``tokens``; resets as ``"1s"``, ``"6m0s"``, ``"250ms"``
  or plain seconds) slow requests before a 429 happens. With the limit, the
  limiter *mirrors the provider's bucket*: it holds ``limit``, has
  ``remaining`` less what is still in flight (which the provider may not have
  counted yet), and refills at (limit - remaining) / reset, since the reset is
  the time until it is full again (erring low: see ``Limiter._mirror``); calls wait for the mirror like for the
  limiter's own buckets, so an unconfigured limiter settles at the provider's
  own rate after the first answers. Without a limit header, the remaining calls
  are spread evenly over the time to reset, and when none remain nothing goes
  until the reset. ``header_pauses`` counts answers that left less than one
  call: the ones where, without the headers, the next call would have been a
  429.
* Rate-limit waits and throttles are counted apart (:meth:`Limiter.stats`), so
  a driver can retry a throttled call without counting it as an item failure.

Budgets
-------
:class:`Budget` keeps dollars as integer nano-dollars under one lock: a
reservation is granted only if everything spent plus everything reserved plus
it fits, in the budget and in every parent budget (a node's budget inside the
run's shares the run's lock). Settling replaces the reservation with the real
cost. As long as a reservation is an upper bound of the call's cost (see
``prices.worst_case_usd``), the spent total can never exceed the budget, however
many threads reserve at once.

Clocks
------
Time comes from an injectable clock (``now()``, ``wait(event, timeout)``,
``await wait_async(event, timeout)``): :class:`Clock` is the monotonic clock,
:class:`ManualClock` a clock that only moves when told, for deterministic tests.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from plait.ir.format import LIMITS as _FORMAT_LIMITS
from plait.runtime.cancel import CancelSignal

Outcome = Literal["ok", "error", "throttled"]
#: (message, json_path, hint): the shape workflow validation collects
LimitProblem = tuple[str, str, str]

#: a throttle without Retry-After pauses this long, doubling per throttle in a row
DEFAULT_RETRY_AFTER = 2.0
MAX_DEFAULT_RETRY_AFTER = 60.0
#: an absurd Retry-After (a misparsed date, a provider bug) is capped, not obeyed
MAX_RETRY_AFTER = 3600.0
#: how often a waiter looks at a plain threading.Event it cannot subscribe to
CANCEL_POLL = 0.05
#: the multiplicative decrease of the concurrency window on a throttle
WINDOW_DECREASE = 0.5

#: a limiter's fields and what they mean: declared once, in the workflow format's tables
LIMIT_FIELDS: dict[str, str] = {f.name: f.doc for f in _FORMAT_LIMITS}

_EPSILON = 1e-9
_OUTCOMES = frozenset(("ok", "error", "throttled"))


# ---------------------------------------------------------------------------
# clocks


class ClockLike(Protocol):
    def now(self) -> float: ...

    def wait(self, event: threading.Event, timeout: float | None, poll: float | None = None) -> None:
        """Return when ``event`` is set or ``timeout`` clock seconds have passed
        (or, with ``poll``, after at most that many real seconds)."""

    async def wait_async(
        self, event: asyncio.Event, timeout: float | None, poll: float | None = None
    ) -> None: ...


class Clock:
    """The real, monotonic clock."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float | None, poll: float | None = None) -> None:
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        if timeout is None or timeout > 0:
            event.wait(timeout)

    async def wait_async(
        self, event: asyncio.Event, timeout: float | None, poll: float | None = None
    ) -> None:
        if poll is not None:
            timeout = poll if timeout is None else min(timeout, poll)
        if timeout is None:
            await event.wait()
            return
        if timeout <= 0:
            return
        # A timer that sets the event is cheaper than asyncio.wait_for's task.
        handle = asyncio.get_running_loop().call_later(timeout, event.set)
        try:
            await event.wait()
        finally:
            handle.cancel()


class ManualClock:
    """A clock that moves only when :meth:`advance` is called; for tests.

    A waiter whose deadline passes is woken by :meth:`advance` itself.
    :attr:`parked` counts waiters asleep in this clock that the clock has not
    woken yet, so a test can tell when every waiter has gone back to sleep.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._timers: dict[int, tuple[float, Callable[[], None]]] = {}
        self._sleeping: set[int] = set()

    def now(self) -> float:
        return self._now

    @property
    def parked(self) -> int:
        return len(self._sleeping)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            due = sorted(
                ((deadline, key, fn) for key, (deadline, fn) in self._timers.items() if deadline <= self._now),
                key=lambda d: (d[0], d[1]),
            )
            for _, key, _ in due:
                del self._timers[key]
                self._sleeping.discard(key)
        for _, _, fn in due:
            fn()

    def _park(self, timeout: float | None, wake: Callable[[], None]) -> int:
        key = next(self._seq)
        with self._lock:
            self._sleeping.add(key)
            if timeout is not None:
                self._timers[key] = (self._now + timeout, wake)
        return key

    def _unpark(self, key: int) -> None:
        with self._lock:
            self._timers.pop(key, None)
            self._sleeping.discard(key)

    def wait(self, event: threading.Event, timeout: float | None, poll: float | None = None) -> None:
        if event.is_set() or (timeout is not None and timeout <= 0):
            return
        key = self._park(timeout, event.set)
        try:
            event.wait(poll)
        finally:
            self._unpark(key)

    async def wait_async(
        self, event: asyncio.Event, timeout: float | None, poll: float | None = None
    ) -> None:
        if event.is_set() or (timeout is not None and timeout <= 0):
            return
        loop = asyncio.get_running_loop()
        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        key = self._park(timeout, wake)
        handle = loop.call_later(poll, event.set) if poll is not None else None
        try:
            await event.wait()
        finally:
            if handle is not None:
                handle.cancel()
            self._unpark(key)


# ---------------------------------------------------------------------------
# cancellation


# CancelSignal lives in runtime/cancel.py (every run makes one; the limiters are loaded on demand)


# ---------------------------------------------------------------------------
# header parsing

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: Any) -> float | None:
    """Seconds from OpenAI's reset formats: ``"1s"``, ``"6m0s"``, ``"250ms"``,
    ``"1h2m3.5s"``, or plain seconds (``"20"``, ``0.5``). None when unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return max(0.0, float(value)) if math.isfinite(value) else None
    text = str(value).strip().lower()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def _lower(headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    if not headers:
        return {}
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {str(k).lower(): str(v) for k, v in items}


def parse_retry_after(headers: Mapping[str, Any] | None, *, wall_now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an
    HTTP date); None when neither is there or readable."""
    h = _lower(headers)
    millis = h.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = h.get("retry-after")
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if wall_now is None else wall_now))


def _header_int(h: dict[str, str], name: str) -> int | None:
    value = h.get(name)
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


def outcome_for_status(status: int | None) -> Outcome:
    """The settle outcome for an HTTP status: 429 and 503 throttle, other
    failures are errors."""
    if status in (429, 503):
        return "throttled"
    if status is None or status < 400:
        return "ok"
    return "error"


# ---------------------------------------------------------------------------
# the limiter


class _Bucket:
    __slots__ = ("capacity", "level", "rate", "stamp")

    def __init__(self, rate_per_s: float, burst: float, now: float, minimum: float) -> None:
        self.rate = rate_per_s
        self.capacity = max(minimum, rate_per_s * burst)
        self.level = self.capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            level = self.level + (now - self.stamp) * self.rate
            self.level = level if level < self.capacity else self.capacity
            self.stamp = now

    def ready_at(self, amount: float, now: float) -> float:
        """Refill, then say when ``amount`` may be taken (more than the
        capacity: when full). Written out, as it runs on every acquire."""
        capacity = self.capacity
        level = self.level
        if now > self.stamp:
            level += (now - self.stamp) * self.rate
            if level > capacity:
                level = capacity
            self.level = level
            self.stamp = now
        need = amount if amount < capacity else capacity
        if level >= need - _EPSILON:
            return now
        return now + (need - level) / self.rate


@dataclass(eq=False, slots=True)
class Ticket:
    """One granted call: give it back to :meth:`Limiter.settle`."""

    limiter: Limiter
    tokens: int
    granted_at: float
    waited: float
    seq: int  # grants before this one
    settled: bool = False


class _Waiter:
    __slots__ = ("arrived", "ticket", "tokens", "wake_at")

    def __init__(self, tokens: int, arrived: float) -> None:
        self.tokens = tokens
        self.arrived = arrived
        self.ticket: Ticket | None = None
        self.wake_at: float | None = None  # set only for the head, when it must look again

    def signal(self) -> None:
        raise NotImplementedError


class _ThreadWaiter(_Waiter):
    __slots__ = ("event",)

    def __init__(self, tokens: int, arrived: float) -> None:
        super().__init__(tokens, arrived)
        self.event = threading.Event()

    def signal(self) -> None:
        self.event.set()


class _AsyncWaiter(_Waiter):
    __slots__ = ("event", "loop", "thread")

    def __init__(self, tokens: int, arrived: float, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(tokens, arrived)
        self.event = asyncio.Event()
        self.loop = loop
        self.thread = threading.get_ident()

    def signal(self) -> None:
        if threading.get_ident() == self.thread:
            self.event.set()
        else:
            try:
                self.loop.call_soon_threadsafe(self.event.set)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass


def _positive(name: str, value: Any, *, integer: bool = False) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"limiter '{name}': expected a positive number, got {value!r}")
    if value <= 0 or (integer and int(value) != value):
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"limiter '{name}': expected {kind}, got {value!r}")
    return float(value)


class Limiter:
    """Token buckets (rps, rpm, tpm) and an adaptive concurrency window, shared
    by threads and asyncio tasks. See the module documentation."""

    def __init__(
        self,
        name: str,
        *,
        rps: float | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        concurrency: int | None = None,
        burst: float | None = None,
        clock: ClockLike | None = None,
    ) -> None:
        self.name = name
        self.clock: ClockLike = clock or Clock()
        self.rps = _positive(f"{name}.rps", rps)
        self.rpm = _positive(f"{name}.rpm", rpm)
        self.tpm = _positive(f"{name}.tpm", tpm)
        ceiling = _positive(f"{name}.concurrency", concurrency, integer=True)
        self.burst = _positive(f"{name}.burst", burst) or 1.0
        self.concurrency = int(ceiling) if ceiling is not None else None

        now = self.clock.now()
        # the real clock's reading without its method around it (read twice per call)
        self._now = time.monotonic if type(self.clock) is Clock else self.clock.now
        self._lock = threading.Lock()
        self._requests: list[_Bucket] = []
        if self.rps is not None:
            self._requests.append(_Bucket(self.rps, self.burst, now, 1.0))
        if self.rpm is not None:
            self._requests.append(_Bucket(self.rpm / 60.0, self.burst, now, 1.0))
        self._tokens = _Bucket(self.tpm / 60.0, self.burst, now, 1.0) if self.tpm is not None else None
        self._queue: deque[_Waiter] = deque()
        self._next_seq = 0
        # No caps, and nothing learned yet (no throttle, no rate headers): every
        # call may go at once, so acquire skips the buckets. Cleared for good by
        # the first throttle or header that could hold a call back.
        self._free = not self._requests and self._tokens is None and not self.concurrency

        # the adaptive window: None = no limit on calls in flight (until a throttle)
        self._window: float | None = float(self.concurrency) if self.concurrency else None
        self._slots: int | None = self.concurrency  # int(window), kept beside it for speed
        self._in_flight = 0
        self._tokens_in_flight = 0
        self._decrease_seq = 0  # tickets granted from this one on were sent after the last decrease
        self._paused_until = -math.inf
        self._throttles_in_a_row = 0

        # the provider's own buckets, mirrored from x-ratelimit-* headers
        self._mirror_requests: _Bucket | None = None
        self._mirror_tokens: _Bucket | None = None
        # without a limit header: the remaining calls spread until _pace_until
        self._pace_until = -math.inf
        self._pace_interval = 0.0  # seconds between requests
        self._pace_token_rate: float | None = None  # tokens per second
        self._pace_next = -math.inf

        # counters
        self.acquired = 0
        self.waits = 0
        self.wait_seconds = 0.0
        self.throttles = 0
        self.header_pauses = 0
        self.cancelled_waits = 0

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], clock: ClockLike | None = None) -> Limiter:
        """A limiter from one entry of a workflow's ``limits`` block."""
        unknown = sorted(set(spec) - set(LIMIT_FIELDS))
        if unknown:
            raise ValueError(f"limiter '{name}': unknown field(s) {', '.join(unknown)}")
        return cls(name, clock=clock, **dict(spec.items()))

    def __repr__(self) -> str:
        caps = ", ".join(
            f"{k}={getattr(self, k):g}" for k in ("rps", "rpm", "tpm") if getattr(self, k) is not None
        )
        if self.concurrency:
            caps += f", concurrency={self.concurrency}" if caps else f"concurrency={self.concurrency}"
        return f"Limiter({self.name!r}{', ' + caps if caps else ''})"

    # -- public state ------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Callers queued in :meth:`acquire` right now."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def window(self) -> float | None:
        """The adaptive concurrency window (None: unlimited)."""
        return self._window

    @property
    def paused_until(self) -> float:
        """Clock time before which nothing is granted (after a throttle)."""
        return self._paused_until

    def stats(self) -> dict[str, Any]:
        """Counters a driver reports; rate-limit waits are not item failures."""
        with self._lock:
            now = self.clock.now()
            return {
                "name": self.name,
                "acquired": self.acquired,
                "waits": self.waits,
                "wait_seconds": round(self.wait_seconds, 6),
                "throttles": self.throttles,
                "header_pauses": self.header_pauses,
                "cancelled_waits": self.cancelled_waits,
                "in_flight": self._in_flight,
                "waiting": len(self._queue),
                "window": None if self._window is None else round(self._window, 3),
                "paused_for": round(max(0.0, self._paused_until - now), 6),
            }

    def ready_in(self, tokens: int = 0) -> float | None:
        """Seconds until a call of ``tokens`` at the head of the queue could go;
        None when it waits for a call in flight to finish."""
        with self._lock:
            now = self.clock.now()
            if not self._slot_free():
                return None
            at = self._ready_at(max(0, int(tokens)), now)
            return None if at == math.inf else max(0.0, at - now)

    # -- acquire -------------------------------------------------------------

    def _arrive(
        self,
        tokens_estimate: int,
        cancelled: threading.Event | None,
        make: Callable[[int, float], _Waiter],
    ) -> Ticket | tuple[_Waiter, float | None, int | None] | None:
        """The start of an acquire, for threads and tasks alike: a ticket at once
        when the call may go now, None when already cancelled, else the waiter
        queued (with how to watch ``cancelled``: a poll interval, a subscription)."""
        tokens = tokens_estimate if type(tokens_estimate) is int and tokens_estimate >= 0 else max(0, int(tokens_estimate))
        if cancelled is not None and cancelled.is_set():
            return None
        with self._lock:
            now = self._now()
            if self._free and not self._queue:
                self._in_flight += 1
                self._tokens_in_flight += tokens
                self.acquired += 1
                seq = self._next_seq
                self._next_seq = seq + 1
                return Ticket(self, tokens, now, 0.0, seq)
            slots = self._slots
            if not self._queue and (slots is None or self._in_flight < slots) and self._ready_at(tokens, now) <= now:
                return Ticket(self, tokens, now, 0.0, self._take(tokens, now))
            waiter = make(tokens, now)
            self._queue.append(waiter)
            self.waits += 1
            wakes = self._dispatch(now, waiter)
        _fire(wakes)
        poll: float | None = None
        key: int | None = None
        if cancelled is not None:
            if isinstance(cancelled, CancelSignal):
                key = cancelled.subscribe(waiter.signal)
            else:
                poll = CANCEL_POLL
        return waiter, poll, key

    def acquire(self, tokens_estimate: int = 0, cancelled: threading.Event | None = None) -> Ticket | None:
        """Block until a call of ``tokens_estimate`` model tokens may go.

        Returns its :class:`Ticket`, or None when ``cancelled`` was set first.
        """
        if self._free and type(tokens_estimate) is int and tokens_estimate >= 0 and (
            cancelled is None or not cancelled.is_set()
        ):
            # _arrive's grant of a free limiter without the call around it: every
            # call of a run with no limits goes here. The lock taken and released
            # by hand: half what ``with`` costs, on the per-call path.
            lock = self._lock
            lock.acquire()
            try:
                if self._free and not self._queue:
                    self._in_flight += 1
                    self._tokens_in_flight += tokens_estimate
                    self.acquired += 1
                    seq = self._next_seq
                    self._next_seq = seq + 1
                    return Ticket(self, tokens_estimate, self._now(), 0.0, seq)
            finally:
                lock.release()
        first = self._arrive(tokens_estimate, cancelled, _ThreadWaiter)
        if not isinstance(first, tuple):
            return first
        waiter, poll, key = first
        assert isinstance(waiter, _ThreadWaiter)
        try:
            while True:
                if waiter.ticket is not None:
                    return waiter.ticket
                if cancelled is not None and cancelled.is_set():
                    self._leave(waiter)
                    return None
                wake_at = waiter.wake_at
                timeout = None if wake_at is None else wake_at - self.clock.now()
                self.clock.wait(waiter.event, timeout, poll)
                with self._lock:
                    waiter.event.clear()
                    wakes = [] if waiter.ticket is not None else self._dispatch(self.clock.now(), waiter)
                _fire(wakes)
        except BaseException:
            # Ctrl-C in this very thread: a waiter left at the head would block everyone
            self._leave(waiter)
            raise
        finally:
            if isinstance(cancelled, CancelSignal):
                cancelled.unsubscribe(key)

    async def acquire_async(
        self, tokens_estimate: int = 0, cancelled: threading.Event | None = None
    ) -> Ticket | None:
        """:meth:`acquire` for a coroutine: the same queue and state. Cancelling
        the task while it waits gives its place up (and re-raises)."""
        first = self._arrive(tokens_estimate, cancelled, lambda tokens, now: _AsyncWaiter(tokens, now, asyncio.get_running_loop()))
        if not isinstance(first, tuple):
            return first
        waiter, poll, key = first
        assert isinstance(waiter, _AsyncWaiter)
        try:
            while True:
                if waiter.ticket is not None:
                    return waiter.ticket
                if cancelled is not None and cancelled.is_set():
                    self._leave(waiter)
                    return None
                wake_at = waiter.wake_at
                timeout = None if wake_at is None else wake_at - self.clock.now()
                await self.clock.wait_async(waiter.event, timeout, poll)
                with self._lock:
                    waiter.event.clear()
                    wakes = [] if waiter.ticket is not None else self._dispatch(self.clock.now(), waiter)
                _fire(wakes)
        except BaseException:  # the task was cancelled (or worse): give the place up
            self._leave(waiter)
            raise
        finally:
            if isinstance(cancelled, CancelSignal):
                cancelled.unsubscribe(key)

    def _leave(self, waiter: _Waiter) -> None:
        """A waiter gives up: out of the queue, or its grant handed back whole."""
        with self._lock:
            self.cancelled_waits += 1
            ticket = waiter.ticket
            if ticket is not None:
                self._undo(ticket)
            else:
                try:
                    self._queue.remove(waiter)
                except ValueError:
                    pass
            wakes = self._dispatch(self.clock.now(), None)
        _fire(wakes)

    def release(self, ticket: Ticket) -> None:
        """Hand back a ticket whose call was never made (the item did not start):
        its request and tokens return to the buckets."""
        with self._lock:
            if ticket.settled:
                return
            self._undo(ticket)
            wakes = self._dispatch(self.clock.now(), None)
        _fire(wakes)

    # -- settle --------------------------------------------------------------

    def settle(
        self,
        ticket: Ticket,
        *,
        actual_tokens: int | None = None,
        outcome: Outcome = "ok",
        retry_after: float | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """The call is over: free its slot, reconcile its tokens, adapt.

        ``actual_tokens``: the real usage (input + output); None keeps the
        estimate charged, except on a throttle, which used none. ``outcome``:
        ``"throttled"`` for 429/503 (pauses the limiter, halves the window),
        ``"error"`` for other failures (no adaptation), ``"ok"``.
        """
        if ticket.limiter is not self:
            raise ValueError(f"ticket of limiter '{ticket.limiter.name}' settled on '{self.name}'")
        if self._free and not headers and (outcome == "ok" or outcome == "error"):
            # the free limiter: no bucket to refund, no window to grow, nobody queued (see acquire)
            lock = self._lock
            lock.acquire()
            try:
                if self._free:  # else a throttle cleared it meanwhile: the full path below
                    if not ticket.settled:
                        ticket.settled = True
                        self._in_flight -= 1
                        self._tokens_in_flight -= ticket.tokens
                    return
            finally:
                lock.release()
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(sorted(_OUTCOMES))}, got {outcome!r}")
        h = _lower(headers) if headers else None
        if outcome == "throttled":
            if retry_after is None and h:
                retry_after = parse_retry_after(h)
            if actual_tokens is None:
                actual_tokens = 0  # a refused call used no tokens
        with self._lock:
            if ticket.settled:
                return
            ticket.settled = True
            self._in_flight -= 1
            tokens = ticket.tokens
            self._tokens_in_flight -= tokens
            if self._free and outcome != "throttled" and not h:
                return  # no bucket to refund, no window to grow, nobody queued (see acquire)
            now = self._now()
            token_bucket = self._tokens
            if token_bucket is not None and actual_tokens is not None:
                token_bucket.refill(now)
                level = token_bucket.level + tokens - (actual_tokens if actual_tokens > 0 else 0)
                token_bucket.level = level if level < token_bucket.capacity else token_bucket.capacity
            if outcome == "ok":
                self._throttles_in_a_row = 0
                # only calls sent under the current window say something about it
                if self._window is not None and ticket.seq >= self._decrease_seq:
                    self._grow()
            elif outcome == "throttled":
                self._throttled(ticket, now, retry_after)
            if h:
                self._read_headers(h, now)
            if not self._queue:
                return
            wakes = self._dispatch(now, None)
        _fire(wakes)

    def _throttled(self, ticket: Ticket, now: float, retry_after: float | None) -> None:
        self._free = False
        self.throttles += 1
        self._throttles_in_a_row += 1
        if retry_after is None:
            delay = min(
                MAX_DEFAULT_RETRY_AFTER, DEFAULT_RETRY_AFTER * 2 ** (self._throttles_in_a_row - 1)
            )
        else:
            delay = min(MAX_RETRY_AFTER, max(0.0, retry_after))
        self._paused_until = max(self._paused_until, now + delay)
        if ticket.seq >= self._decrease_seq:
            # what was really in flight, this call included, is the operating point
            used = self._in_flight + 1
            current = used if self._window is None else min(self._window, used)
            self._set_window(max(1.0, current * WINDOW_DECREASE))
            self._decrease_seq = self._next_seq

    def _grow(self) -> None:
        window = self._window
        if window is None:
            return
        # grow only a window that limits: an unused window says nothing about capacity
        if self._in_flight + 1 >= int(window + _EPSILON):
            window += 1.0 / window
            if self.concurrency is not None:
                window = min(window, float(self.concurrency))
            self._set_window(window)

    def _read_headers(self, h: dict[str, str], now: float) -> None:
        """Slow down before the provider says 429, from what it says is left.

        The calls still in flight may not be counted in ``remaining`` yet, so
        they are taken off it.
        """
        spread_until = -math.inf
        interval = 0.0
        token_rate: float | None = None
        self._free = False  # a mirror, a pace or a pause may follow: the full path decides from here on
        for kind in ("requests", "tokens"):
            remaining = _header_int(h, f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(h.get(f"x-ratelimit-reset-{kind}"))
            if remaining is None or reset is None:
                continue
            limit = _header_int(h, f"x-ratelimit-limit-{kind}")
            left = remaining - (self._in_flight if kind == "requests" else max(0, self._tokens_in_flight))
            if limit is not None and limit > 0:
                self._mirror(kind, limit, remaining, reset, left, now)
            elif left <= 0:
                self._header_pause(now + reset)
            elif reset > 0:
                spread_until = max(spread_until, now + reset)
                if kind == "requests":
                    interval = reset / left
                else:
                    token_rate = left / reset
        if spread_until > now:
            self._pace_until = spread_until
            self._pace_interval = interval
            self._pace_token_rate = token_rate

    def _mirror(self, kind: str, limit: int, remaining: int, reset: float, left: float, now: float) -> None:
        """The provider's bucket, as its headers describe it: ``limit`` full,
        ``remaining`` now, full again in ``reset`` seconds.

        The mirror must never think the provider has more than it has, or the
        next call is a 429. So: ``remaining`` is rounded down, the bucket may
        hold up to one more and refills at no less than (limit - remaining - 1)
        / reset, which is the rate taken; an answer never *raises* the mirror
        (answers are read out of order, and an old one describes a fuller
        bucket), only the refill does; and the first mirror, made from the
        first answer read, takes off every call still in flight, which includes
        every call that can have reached the provider after that one. The
        mirror holds at most ``limit`` less what is in flight (see
        ``_ready_at``).
        """
        mirror = self._mirror_requests if kind == "requests" else self._mirror_tokens
        rate = (limit - remaining - 1) / reset if reset > 0 and limit - remaining > 1 else None
        if mirror is None:
            if rate is None:
                if reset <= 0 or limit <= remaining:
                    return  # a full bucket tells nothing of its refill
                # one short of full: a rough rate, until the next answers correct it
                rate = (limit - remaining) / reset
            mirror = _Bucket(rate, 1.0, now, 1.0)
            mirror.capacity = float(limit)
            mirror.level = min(float(left), float(limit))
            if kind == "requests":
                self._mirror_requests = mirror
            else:
                self._mirror_tokens = mirror
        else:
            mirror.refill(now)
            if rate is not None:
                mirror.rate = rate
            mirror.capacity = float(limit)
            mirror.level = min(mirror.level, float(left), float(limit))
        if left < 1:
            self.header_pauses += 1  # without the mirror, the next call would be a 429

    def _header_pause(self, until: float) -> None:
        if until > self._paused_until:
            self._paused_until = until
            self.header_pauses += 1

    # -- internals (called with the lock held) ----------------------------------

    def _set_window(self, window: float) -> None:
        self._free = False
        self._window = window
        self._slots = max(1, int(window + _EPSILON))

    def _slot_free(self) -> bool:
        return self._slots is None or self._in_flight < self._slots

    def _ready_at(self, tokens: int, now: float) -> float:
        at = now
        paused = self._paused_until
        if paused > at:
            at = paused
        if self._pace_until > now and self._pace_next > at:
            at = self._pace_next
        for bucket in self._requests:  # _Bucket.ready_at(1.0, now), written out: the hot path
            level = bucket.level
            if now > bucket.stamp:
                level += (now - bucket.stamp) * bucket.rate
                if level > bucket.capacity:
                    level = bucket.capacity
                bucket.level = level
                bucket.stamp = now
            if level < 1.0 - _EPSILON:  # a request bucket holds at least 1
                t = now + (1.0 - level) / bucket.rate
                if t > at:
                    at = t
        token_bucket = self._tokens
        if token_bucket is not None and tokens:
            t = token_bucket.ready_at(tokens, now)
            if t > at:
                at = t
        # The provider's bucket holds at most its limit less what is on its way
        # to it; when that is less than this call, only an answer can help (inf).
        mirror = self._mirror_requests
        if mirror is not None:
            mirror.refill(now)
            room = mirror.capacity - self._in_flight
            if mirror.level > room:
                mirror.level = room
            if room < 1.0 - _EPSILON:
                return math.inf
            t = mirror.ready_at(1.0, now)
            if t > at:
                at = t
        mirror = self._mirror_tokens
        if mirror is not None and tokens:
            mirror.refill(now)
            room = mirror.capacity - self._tokens_in_flight
            if mirror.level > room:
                mirror.level = room
            if room < min(tokens, mirror.capacity) - _EPSILON:
                return math.inf
            t = mirror.ready_at(tokens, now)
            if t > at:
                at = t
        return at

    def _take(self, tokens: int, now: float) -> int:
        """Charge a call to every bucket; its sequence number."""
        for bucket in self._requests:
            bucket.level -= 1.0
        if self._tokens is not None:
            self._tokens.level -= tokens
        if self._mirror_requests is not None:
            self._mirror_requests.level -= 1.0
        if self._mirror_tokens is not None:
            self._mirror_tokens.level -= tokens
        self._in_flight += 1
        self._tokens_in_flight += tokens
        if self._pace_until > now:
            gap = self._pace_interval
            if self._pace_token_rate and tokens:
                gap = max(gap, tokens / self._pace_token_rate)
            self._pace_next = now + gap
        self.acquired += 1
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def _grant(self, tokens: int, now: float, arrived: float) -> Ticket:
        seq = self._take(tokens, now)
        waited = now - arrived
        self.wait_seconds += waited
        return Ticket(self, tokens, now, waited, seq)

    def _undo(self, ticket: Ticket) -> None:
        ticket.settled = True
        now = self.clock.now()
        for bucket in self._requests:
            bucket.refill(now)
            bucket.level = min(bucket.capacity, bucket.level + 1.0)
        for other, amount in (
            (self._tokens, ticket.tokens),
            (self._mirror_requests, 1.0),
            (self._mirror_tokens, ticket.tokens),
        ):
            if other is not None:
                other.refill(now)
                other.level = min(other.capacity, other.level + amount)
        self._in_flight -= 1
        self._tokens_in_flight -= ticket.tokens
        self.acquired -= 1

    def _dispatch(self, now: float, me: _Waiter | None) -> list[_Waiter]:
        """Grant the queue's head while it may go; tell a new head when to look.

        Returns the waiters to wake (after the lock is released). ``me`` is the
        waiter running this, which needs no wake-up.
        """
        wakes: list[_Waiter] = []
        queue = self._queue
        while queue:
            head = queue[0]
            if not self._slot_free():
                head.wake_at = None  # a settle will dispatch again
                break
            at = self._ready_at(head.tokens, now)
            if at == math.inf:
                head.wake_at = None  # waits for an answer, like for a free slot
                break
            if at > now:
                earlier = head.wake_at is None or at < head.wake_at
                head.wake_at = at
                if earlier and head is not me:
                    wakes.append(head)
                break
            queue.popleft()
            head.ticket = self._grant(head.tokens, now, head.arrived)
            if head is not me:
                wakes.append(head)
        return wakes


def _fire(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.signal()


# ---------------------------------------------------------------------------
# budgets

_NANO = 1_000_000_000


def _to_units(usd: float, *, up: bool) -> int:
    scaled = usd * _NANO
    # a float like 1.05e-6 * 1e9 is 1050.0000000000002: that is 1050, not 1051
    return math.ceil(scaled - 1e-6) if up else math.floor(scaled + 1e-6)


@dataclass(eq=False, slots=True)
class BudgetTicket:
    budget: Budget
    units: int
    settled: bool = False

    @property
    def usd(self) -> float:
        return self.units / _NANO


class Budget:
    """Dollars that reservations may not exceed, ever.

    ``reserve(worst_case_usd)`` under one lock: granted only if spent +
    reserved + it fits here and in every parent; ``settle(ticket, actual_usd)``
    swaps the reservation for the real cost; ``release(ticket)`` drops it.
    """

    def __init__(self, usd: float, *, name: str = "budget", parent: Budget | None = None) -> None:
        if isinstance(usd, bool) or not isinstance(usd, int | float) or not math.isfinite(usd) or usd < 0:
            raise ValueError(f"budget '{name}': expected a non-negative number of dollars, got {usd!r}")
        self.name = name
        self.usd = float(usd)
        self.parent = parent
        # one lock for a budget and all its parents: a reservation is one decision
        self._lock: threading.Lock = parent._lock if parent is not None else threading.Lock()
        # woken whenever a reservation ends, for reserve_wait
        self._ended: threading.Condition = (
            parent._ended if parent is not None else threading.Condition(self._lock)
        )
        # how many wait in reserve_wait: settling notifies only when someone does
        self._sleepers: list[int] = parent._sleepers if parent is not None else [0]
        self._limit = _to_units(self.usd, up=False)
        self._spent = 0
        self._reserved = 0
        self.refused = 0
        self.overrun_usd = 0.0

    def _chain(self) -> Iterator[Budget]:
        budget: Budget | None = self
        while budget is not None:
            yield budget
            budget = budget.parent

    def reserve(self, worst_case_usd: float) -> BudgetTicket | None:
        """Reserve an upper bound of a call's cost; None when it does not fit
        (the call must not be made)."""
        if worst_case_usd is None or not math.isfinite(worst_case_usd) or worst_case_usd < 0:
            raise ValueError(f"budget '{self.name}': cannot reserve {worst_case_usd!r}")
        units = _to_units(worst_case_usd, up=True)
        with self._lock:
            if self.parent is None:  # the common case, without building the chain
                if self._spent + self._reserved + units > self._limit:
                    self.refused += 1
                    return None
                self._reserved += units
                return BudgetTicket(self, units)
            chain = list(self._chain())
            if any(b._spent + b._reserved + units > b._limit for b in chain):
                self.refused += 1
                return None
            for b in chain:
                b._reserved += units
            return BudgetTicket(self, units)

    def reserve_wait(
        self, worst_case_usd: float, cancelled: threading.Event | None = None
    ) -> BudgetTicket | None:
        """:meth:`reserve`, but while calls in flight hold reservations that keep
        this one out, wait for them to end (their real cost is usually far below
        their worst case). None when it does not fit even with nothing in flight,
        or when ``cancelled`` is set."""
        if worst_case_usd is None or not math.isfinite(worst_case_usd) or worst_case_usd < 0:
            raise ValueError(f"budget '{self.name}': cannot reserve {worst_case_usd!r}")
        units = _to_units(worst_case_usd, up=True)
        with self._ended:
            chain = list(self._chain())
            while True:
                if all(b._spent + b._reserved + units <= b._limit for b in chain):
                    for b in chain:
                        b._reserved += units
                    return BudgetTicket(self, units)
                blocking = [b for b in chain if b._spent + b._reserved + units > b._limit]
                if all(b._spent + units > b._limit for b in blocking) or (
                    cancelled is not None and cancelled.is_set()
                ):
                    self.refused += 1
                    return None
                self._sleepers[0] += 1
                try:
                    self._ended.wait(CANCEL_POLL)
                finally:
                    self._sleepers[0] -= 1

    def pending(self) -> bool:
        """Whether reservations in flight could, once settled, make room."""
        with self._lock:
            return any(b._reserved > 0 for b in self._chain())

    def settle(self, ticket: BudgetTicket, actual_usd: float | None) -> None:
        """The call is over: its real cost replaces its reservation (None: the
        cost is unknown, the reservation is kept as spent)."""
        actual = ticket.units if actual_usd is None else _to_units(max(0.0, actual_usd), up=True)
        with self._lock:
            if ticket.settled:
                return
            ticket.settled = True
            units = ticket.units
            b: Budget | None = ticket.budget
            while b is not None:
                b._reserved -= units
                b._spent += actual
                if actual > units:
                    b.overrun_usd += (actual - units) / _NANO
                b = b.parent
            if self._sleepers[0]:
                self._ended.notify_all()

    def release(self, ticket: BudgetTicket) -> None:
        """The call was not made: drop its reservation."""
        with self._lock:
            if ticket.settled:
                return
            ticket.settled = True
            for b in ticket.budget._chain():
                b._reserved -= ticket.units
            if self._sleepers[0]:
                self._ended.notify_all()

    @property
    def spent(self) -> float:
        return self._spent / _NANO

    @property
    def reserved(self) -> float:
        return self._reserved / _NANO

    @property
    def remaining(self) -> float:
        with self._lock:
            return max(0, self._limit - self._spent - self._reserved) / _NANO

    @property
    def exhausted(self) -> bool:
        """True once nothing more can be reserved (less than a nano-dollar left)."""
        return self.remaining <= 0

    def __repr__(self) -> str:
        return f"Budget({self.name!r}, usd={self.usd:g}, spent={self.spent:g}, reserved={self.reserved:g})"


# ---------------------------------------------------------------------------
# the run's limiters


class LimiterSet:
    """The limiters of one run: declared by name in the workflow's ``limits``
    block, plus a default limiter made on first use for any other key.

    A default limiter has no caps but still adapts: a 429 pauses it and shrinks
    its window, so back-off works without configuration. Declaring a limit
    under a default key (``"llm:openai/gpt-4o"``, ``"http:api.example.com"``)
    configures that default.
    """

    def __init__(self, limits: Mapping[str, Mapping[str, Any]] | None = None, *, clock: ClockLike | None = None) -> None:
        problems = validate_limits(limits) if limits is not None else []
        if problems:
            message, path, hint = problems[0]
            raise ValueError(f"{path}: {message}" + (f" ({hint})" if hint else ""))
        self.clock: ClockLike = clock or Clock()
        self._lock = threading.Lock()
        self._declared = frozenset(limits or ())
        self._limiters: dict[str, Limiter] = {
            name: Limiter.from_spec(name, spec, self.clock) for name, spec in (limits or {}).items()
        }

    @property
    def declared(self) -> frozenset[str]:
        return self._declared

    def declare(self, name: str, spec: Mapping[str, Any]) -> Limiter:
        """Add a limiter a sub-workflow declares; a name the run has already keeps its
        first declaration (one limiter per name for the whole run)."""
        with self._lock:
            limiter = self._limiters.get(name)
            if name in self._declared and limiter is not None:
                return limiter
            if limiter is None:
                limiter = Limiter.from_spec(name, spec, self.clock)
                self._limiters[name] = limiter
            self._declared = self._declared | {name}
            return limiter

    def __contains__(self, name: object) -> bool:
        return name in self._limiters

    def __iter__(self) -> Iterator[Limiter]:
        return iter(list(self._limiters.values()))

    def named(self, name: str) -> Limiter:
        """A declared limiter (a node's ``"rate": NAME``); KeyError otherwise."""
        if name not in self._declared:
            from plait.errors import did_you_mean

            hint = did_you_mean(name, self._declared)
            raise KeyError(f"no limiter named '{name}' in 'limits'" + (f"; {hint}" if hint else ""))
        return self._limiters[name]

    def get(self, key: str) -> Limiter:
        """The limiter for ``key``: the declared one, else the default made once."""
        limiter = self._limiters.get(key)
        if limiter is not None:
            return limiter
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = Limiter(key, clock=self.clock)
                self._limiters[key] = limiter
            return limiter

    def stats(self) -> dict[str, dict[str, Any]]:
        return {limiter.name: limiter.stats() for limiter in self}


# ---------------------------------------------------------------------------
# validation


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def validate_limits(block: Any, path: str = "limits") -> list[LimitProblem]:
    """Problems in a workflow's ``limits`` block, as (message, json_path, hint)."""
    from plait.errors import did_you_mean

    example = '"limits": {"openai": {"rpm": 3000, "tpm": 2000000, "concurrency": 64}}'
    if not isinstance(block, Mapping):
        return [(
            f"'limits' must be an object of named limiters, got {type(block).__name__}",
            path,
            f"for example {example}",
        )]
    problems: list[LimitProblem] = []
    for name, spec in block.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not name.strip():
            problems.append(("a limiter needs a non-empty name", path, f"for example {example}"))
            continue
        if not isinstance(spec, Mapping):
            problems.append((
                f"limiter '{name}' must be an object, got {type(spec).__name__}",
                where,
                "give it any of: " + ", ".join(LIMIT_FIELDS),
            ))
            continue
        for key, value in spec.items():
            field_path = f"{where}.{key}"
            if key not in LIMIT_FIELDS:
                # a swap of letters ("rmp") is the likeliest typo of these short names
                swapped = [f for f in LIMIT_FIELDS if sorted(f) == sorted(str(key))]
                close = f"did you mean '{swapped[0]}'?" if swapped else did_you_mean(str(key), LIMIT_FIELDS)
                problems.append((
                    f"unknown field '{key}' in limiter '{name}'",
                    field_path,
                    close or "the fields are " + "; ".join(f"{k}: {v}" for k, v in LIMIT_FIELDS.items()),
                ))
                continue
            if not _is_number(value) or value <= 0:
                problems.append((
                    f"'{key}' of limiter '{name}' must be a positive number, got {value!r}",
                    field_path,
                    f"{key} is {LIMIT_FIELDS[key]}; leave it out for no limit",
                ))
            elif key == "concurrency" and int(value) != value:
                problems.append((
                    f"'concurrency' of limiter '{name}' must be a whole number, got {value!r}",
                    field_path,
                    f"for example {max(1, math.ceil(value))}",
                ))
    return problems


def validate_rate_name(name: Any, limits: Any, path: str) -> list[LimitProblem]:
    """A node's ``"rate"`` must name a limiter declared in ``limits``."""
    from plait.errors import did_you_mean

    declared = list(limits) if isinstance(limits, Mapping) else []
    if not isinstance(name, str) or not name.strip():
        return [(f"'rate' must be the name of a limiter, got {name!r}", path, "declare it under 'limits'")]
    if name in declared:
        return []
    hint = did_you_mean(name, declared)
    if not hint:
        hint = (
            f"declared: {', '.join(declared)}" if declared
            else f'declare it: "limits": {{"{name}": {{"rpm": 3000}}}}'
        )
    return [(f"'rate' names limiter '{name}', which 'limits' does not declare", path, hint)]


def validate_budget(block: Any, path: str = "budget") -> list[LimitProblem]:
    """Problems in a ``"budget": {"usd": 5}`` block."""
    if not isinstance(block, Mapping):
        return [(f"'budget' must be an object, got {type(block).__name__}", path, 'for example "budget": {"usd": 5}')]
    problems: list[LimitProblem] = []
    for key in block:
        if key != "usd":
            problems.append((f"unknown field '{key}' in 'budget'", f"{path}.{key}", "the only field is 'usd' (dollars)"))
    if "usd" not in block:
        problems.append(("'budget' needs 'usd', the most the run may spend in dollars", path, 'for example "budget": {"usd": 5}'))
    else:
        usd = block["usd"]
        if not _is_number(usd) or usd <= 0:
            problems.append((f"'usd' must be a positive number of dollars, got {usd!r}", f"{path}.usd", 'for example "usd": 5'))
    return problems


__all__ = [
    "DEFAULT_RETRY_AFTER",
    "LIMIT_FIELDS",
    "Budget",
    "BudgetTicket",
    "CancelSignal",
    "Clock",
    "ClockLike",
    "Limiter",
    "LimiterSet",
    "ManualClock",
    "Outcome",
    "Ticket",
    "outcome_for_status",
    "parse_duration",
    "parse_retry_after",
    "validate_budget",
    "validate_limits",
    "validate_rate_name",
]

