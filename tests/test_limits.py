"""Rate limiters, adaptive back-off and budgets (plait.runtime.limits).

Time is a ManualClock that moves only when a test says so, so nothing here
depends on how fast the machine is; real threads and a real event loop do the
waiting. `settled()` waits (bounded) until every queued waiter is asleep again,
so "nobody was granted" is checked after the waiters had their chance to run.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from openai_server import OpenAIServer
from plait.nodes.http import limiter_key
from plait.runtime.limits import (
    DEFAULT_RETRY_AFTER,
    Budget,
    CancelSignal,
    Limiter,
    LimiterSet,
    ManualClock,
    Ticket,
    outcome_for_status,
    parse_duration,
    parse_retry_after,
    validate_budget,
    validate_limits,
    validate_rate_name,
)

BOUND = 10.0  # seconds any wait in these tests may take before it is a failure


def wait_until(predicate: Callable[[], bool], what: str = "condition") -> None:
    deadline = time.monotonic() + BOUND
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def settled(limiter: Limiter, clock: ManualClock) -> None:
    """Every queued waiter is asleep in the clock (twice in a row, to let a
    just-woken one run)."""
    for _ in range(2):
        wait_until(lambda: clock.parked == limiter.waiting, "waiters to go back to sleep")
        time.sleep(0.005)


class Waiters:
    """Threads that each acquire once, started one at a time in a known order."""

    def __init__(self, limiter: Limiter, clock: ManualClock) -> None:
        self.limiter, self.clock = limiter, clock
        self.tickets: dict[str, Ticket | None] = {}
        self.threads: list[threading.Thread] = []

    def start(self, name: str, tokens: int = 0, cancelled: threading.Event | None = None) -> None:
        queued = self.limiter.waiting

        def run() -> None:
            self.tickets[name] = self.limiter.acquire(tokens, cancelled)

        thread = threading.Thread(target=run, name=f"waiter-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)
        wait_until(lambda: self.limiter.waiting == queued + 1 or name in self.tickets, f"{name} to queue")
        settled(self.limiter, self.clock)

    def granted(self) -> list[str]:
        """Names granted so far, in grant order."""
        done = [(t.seq, n) for n, t in self.tickets.items() if t is not None]
        return [n for _, n in sorted(done)]

    def join(self) -> None:
        for thread in self.threads:
            thread.join(BOUND)
            assert not thread.is_alive(), f"{thread.name} still waiting"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


# ---------------------------------------------------------------------------
# parsing


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("250ms", 0.25), ("1h2m3.5s", 3723.5), ("20", 20.0),
     ("0.5", 0.5), (" 2m ", 120.0), ("17ms", 0.017), (3, 3.0)],
)
def test_reset_durations_in_openai_formats(text: Any, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "1s2", None, True])
def test_unreadable_durations_are_none(text: Any) -> None:
    assert parse_duration(text) is None


def test_retry_after_from_headers() -> None:
    assert parse_retry_after({"Retry-After-Ms": "1500", "Retry-After": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    date = "Wed, 21 Oct 2015 07:28:30 GMT"
    assert parse_retry_after({"Retry-After": date}, wall_now=1445412500.0) == pytest.approx(10.0)
    assert parse_retry_after({"x-other": "1"}) is None
    assert [outcome_for_status(s) for s in (200, 404, 429, 500, 503)] == [
        "ok", "error", "throttled", "error", "throttled",
    ]


# ---------------------------------------------------------------------------
# buckets


def test_request_buckets_hold_one_second_and_refill(clock: ManualClock) -> None:
    limiter = Limiter("api", rps=4, rpm=120, clock=clock)  # rpm=120 is 2/s: the tighter one
    first = [limiter.acquire() for _ in range(2)]
    assert all(t is not None for t in first)
    assert limiter.ready_in() == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.ready_in() == 0
    assert limiter.acquire() is not None
    assert limiter.ready_in() == pytest.approx(0.5)
    clock.advance(10)  # idle time fills the bucket only up to its burst
    assert [limiter.acquire() is not None for _ in range(2)] == [True, True]
    assert limiter.ready_in() == pytest.approx(0.5)


def test_a_slow_rate_still_lets_one_request_through(clock: ManualClock) -> None:
    limiter = Limiter("slow", rpm=6, clock=clock)  # one per 10 s; a bucket of at least one
    assert limiter.acquire() is not None
    assert limiter.ready_in() == pytest.approx(10.0)


def test_token_bucket_waits_for_the_tokens_asked(clock: ManualClock) -> None:
    limiter = Limiter("llm", tpm=6000, clock=clock)  # 100 tokens/s, a bucket of 100
    assert limiter.acquire(80) is not None
    assert limiter.ready_in(20) == 0
    assert limiter.ready_in(50) == pytest.approx(0.3)
    assert limiter.ready_in(0) == 0  # a call without tokens is not held by them


def test_a_call_bigger_than_the_bucket_goes_when_full_and_leaves_debt(clock: ManualClock) -> None:
    limiter = Limiter("llm", tpm=6000, clock=clock)
    assert limiter.acquire(250) is not None  # full bucket: it goes, 150 into debt
    assert limiter.ready_in(1) == pytest.approx(1.51)
    assert limiter.ready_in(500) == pytest.approx(2.5)  # bigger than the bucket: waits for full


def test_concurrency_is_a_window_of_calls_in_flight(clock: ManualClock) -> None:
    limiter = Limiter("api", concurrency=2, clock=clock)
    a, b = limiter.acquire(), limiter.acquire()
    assert a is not None and b is not None
    assert limiter.ready_in() is None
    limiter.settle(a)
    assert limiter.ready_in() == 0


# ---------------------------------------------------------------------------
# fairness and waiting


def test_waiters_are_served_in_arrival_order_across_threads(clock: ManualClock) -> None:
    limiter = Limiter("api", rps=1, clock=clock)
    assert limiter.acquire() is not None
    waiters = Waiters(limiter, clock)
    names = [f"w{i}" for i in range(6)]
    for name in names:
        waiters.start(name)
    for step in range(1, len(names) + 1):
        clock.advance(1.0)
        wait_until(lambda step=step: len(waiters.granted()) == step, "the next grant")
        settled(limiter, clock)
        assert waiters.granted() == names[:step]  # one per second, never out of turn
    waiters.join()
    assert limiter.stats()["waits"] == len(names)
    assert limiter.stats()["wait_seconds"] == pytest.approx(sum(range(1, 7)))


def test_a_big_request_at_the_head_is_not_starved_by_small_ones(clock: ManualClock) -> None:
    limiter = Limiter("llm", tpm=6000, clock=clock)  # 100 tokens/s
    assert limiter.acquire(100) is not None  # bucket empty
    waiters = Waiters(limiter, clock)
    waiters.start("big", tokens=90)
    for i in range(4):
        waiters.start(f"small{i}", tokens=5)
    clock.advance(0.5)  # 50 tokens: enough for every small one, not for the head
    settled(limiter, clock)
    assert waiters.granted() == []
    clock.advance(0.4)
    wait_until(lambda: len(waiters.granted()) == 1, "the big request")
    settled(limiter, clock)
    assert waiters.granted() == ["big"]
    clock.advance(0.2)  # 20 tokens: all four small ones
    wait_until(lambda: len(waiters.granted()) == 5, "the small requests")
    assert waiters.granted() == ["big", "small0", "small1", "small2", "small3"]
    waiters.join()


def test_cancellation_wakes_a_waiter_at_once(clock: ManualClock) -> None:
    limiter = Limiter("api", concurrency=1, clock=clock)
    held = limiter.acquire()
    assert held is not None
    cancel = CancelSignal()
    waiters = Waiters(limiter, clock)
    waiters.start("stuck", cancelled=cancel)
    waiters.start("behind")
    cancel.set()  # no time passes and no slot frees: only the signal can wake it
    wait_until(lambda: "stuck" in waiters.tickets, "the cancelled waiter to return")
    assert waiters.tickets["stuck"] is None
    assert limiter.waiting == 1  # it gave its place up
    limiter.settle(held)
    wait_until(lambda: waiters.granted() == ["behind"], "the next waiter")
    waiters.join()
    assert limiter.stats()["cancelled_waits"] == 1


def test_a_plain_event_cancels_too(clock: ManualClock) -> None:
    limiter = Limiter("api", concurrency=1, clock=clock)
    assert limiter.acquire() is not None
    cancel = threading.Event()
    waiters = Waiters(limiter, clock)
    waiters.start("stuck", cancelled=cancel)
    cancel.set()  # polled, as a plain Event cannot call anyone
    wait_until(lambda: "stuck" in waiters.tickets, "the cancelled waiter to return")
    assert waiters.tickets["stuck"] is None and limiter.waiting == 0
    waiters.join()
    assert limiter.acquire(cancelled=cancel) is None  # already cancelled: no wait at all


def test_a_limiter_with_nothing_to_enforce_grants_at_once_and_counts_every_call(clock: ManualClock) -> None:
    limiter = Limiter("llm:free", clock=clock)
    cancel = CancelSignal()
    first, second = limiter.acquire(40, cancel), limiter.acquire(2.7)  # a float estimate: the general path
    assert first is not None and second is not None
    assert (first.tokens, second.tokens, first.seq, second.seq) == (40, 2, 0, 1)
    assert limiter.in_flight == 2 and limiter.stats()["acquired"] == 2
    limiter.settle(first, actual_tokens=12)
    limiter.settle(second)
    assert limiter.in_flight == 0 and limiter.stats()["waits"] == 0
    cancel.set()
    assert limiter.acquire(5, cancel) is None and limiter.stats()["acquired"] == 2
    # a throttle gives it something to enforce: the next call waits for the pause
    held = limiter.acquire(1)
    assert held is not None
    limiter.settle(held, outcome="throttled", retry_after=3.0)
    assert limiter.ready_in(1) == pytest.approx(3.0)


class _Interrupt(BaseException):
    """What a Ctrl-C handler raises, without pytest taking it for a real one."""


def test_ctrl_c_in_the_waiting_thread_gives_its_place_up(clock: ManualClock) -> None:
    limiter = Limiter("api", concurrency=1, clock=clock)
    held = limiter.acquire()
    assert held is not None

    def interrupt(signum: int, frame: Any) -> None:
        raise _Interrupt()

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(_Interrupt):
            limiter.acquire()  # blocks in this (the main) thread until the signal
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert limiter.waiting == 0  # not left at the head, blocking everyone behind
    limiter.settle(held)
    assert limiter.acquire() is not None


def test_a_released_ticket_gives_its_request_and_tokens_back(clock: ManualClock) -> None:
    limiter = Limiter("llm", rpm=60, tpm=6000, concurrency=1, clock=clock)
    ticket = limiter.acquire(100)
    assert ticket is not None and limiter.ready_in(100) is None
    limiter.release(ticket)
    assert limiter.ready_in(100) == 0 and limiter.in_flight == 0


# ---------------------------------------------------------------------------
# adaptive back-off


def test_a_throttle_pauses_the_whole_limiter_for_retry_after(clock: ManualClock) -> None:
    limiter = Limiter("api", rps=100, concurrency=10, clock=clock)
    tickets = [limiter.acquire() for _ in range(3)]
    limiter.settle(tickets[0], outcome="throttled", retry_after=5)  # type: ignore[arg-type]
    waiters = Waiters(limiter, clock)
    for i in range(3):
        waiters.start(f"w{i}")
    clock.advance(4.9)
    settled(limiter, clock)
    assert waiters.granted() == []  # nothing at all while paused
    for ticket in tickets[1:]:  # calls in flight still finish
        limiter.settle(ticket)  # type: ignore[arg-type]
    settled(limiter, clock)
    assert waiters.granted() == []
    assert limiter.ready_in() == pytest.approx(0.1)
    clock.advance(0.1)
    # the window halved from the 3 in flight to 1.5: one at a time from now on
    wait_until(lambda: waiters.granted() == ["w0"], "the first waiter after the pause")
    settled(limiter, clock)
    assert waiters.granted() == ["w0"]
    limiter.settle(waiters.tickets["w0"])  # type: ignore[arg-type]
    # a success grows it by 1/window, to 2.17: both others go
    wait_until(lambda: waiters.granted() == ["w0", "w1", "w2"], "the other waiters")
    assert limiter.window == pytest.approx(1.5 + 1 / 1.5)
    waiters.join()
    assert limiter.stats()["throttles"] == 1


def test_retry_after_comes_from_headers_or_a_growing_default(clock: ManualClock) -> None:
    limiter = Limiter("api", clock=clock)
    limiter.settle(limiter.acquire(), outcome="throttled", headers={"Retry-After-Ms": "1250"})  # type: ignore[arg-type]
    assert limiter.ready_in() == pytest.approx(1.25)
    clock.advance(2)
    limiter.settle(limiter.acquire(), outcome="throttled")  # type: ignore[arg-type]
    assert limiter.ready_in() == pytest.approx(DEFAULT_RETRY_AFTER * 2)  # the second in a row
    clock.advance(10)
    limiter.settle(limiter.acquire())  # type: ignore[arg-type]
    limiter.settle(limiter.acquire(), outcome="throttled")  # type: ignore[arg-type]
    assert limiter.ready_in() == pytest.approx(DEFAULT_RETRY_AFTER)  # a success reset the streak


def test_the_window_halves_once_per_congestion_and_grows_back_additively(clock: ManualClock) -> None:
    limiter = Limiter("api", concurrency=8, clock=clock)
    burst = [limiter.acquire() for _ in range(8)]
    assert limiter.window == 8
    for ticket in burst:  # all sent before the first 429 came back: one event
        limiter.settle(ticket, outcome="throttled", retry_after=0)  # type: ignore[arg-type]
    assert limiter.window == 4
    again = [limiter.acquire() for _ in range(4)]
    assert limiter.ready_in() is None  # the window, not the ceiling, limits now
    limiter.settle(again[0], outcome="throttled", retry_after=0)  # type: ignore[arg-type]
    assert limiter.window == 2
    for ticket in again[1:]:
        limiter.settle(ticket, outcome="ok")  # type: ignore[arg-type]
    low = [limiter.acquire() for _ in range(2)]
    limiter.settle(low[0], outcome="throttled", retry_after=0)  # type: ignore[arg-type]
    limiter.settle(low[1], outcome="throttled", retry_after=0)  # type: ignore[arg-type]
    one = limiter.acquire()
    limiter.settle(one, outcome="throttled", retry_after=0)  # type: ignore[arg-type]
    assert limiter.window == 1  # the floor

    seen = [limiter.window]
    for _ in range(200):  # keep the window full, every call succeeds
        tickets = []
        while limiter.ready_in() == 0:
            tickets.append(limiter.acquire())
        for ticket in tickets:
            limiter.settle(ticket)  # type: ignore[arg-type]
        seen.append(limiter.window)
    assert seen == sorted(seen)  # only ever up
    assert seen[-1] == 8  # back to the ceiling, never past it
    # additive: +1 takes about a window's worth of successes
    assert seen.index(next(w for w in seen if w is not None and w >= 2)) >= 1


def test_an_unconfigured_limiter_still_backs_off(clock: ManualClock) -> None:
    limiter = Limiter("default", clock=clock)
    tickets = [limiter.acquire() for _ in range(10)]
    assert limiter.window is None
    limiter.settle(tickets[0], outcome="throttled", retry_after=3)  # type: ignore[arg-type]
    assert limiter.window == 5  # half of what was in flight
    assert limiter.ready_in() is None  # 9 still in flight
    for ticket in tickets[1:6]:
        limiter.settle(ticket)  # type: ignore[arg-type]
    assert limiter.window == 5  # successes of calls sent before the 429 do not grow it
    assert limiter.ready_in() == pytest.approx(3.0)  # 4 in flight: a slot, after the pause


def test_headers_with_a_limit_mirror_the_providers_bucket(clock: ManualClock) -> None:
    limiter = Limiter("api", clock=clock)
    held = limiter.acquire()
    assert held is not None
    # OpenAI's reset is the time until the bucket is full again: 90 to go in 9 s is
    # 10/s, taken as 89 in 9 s since `remaining` is rounded down
    limiter.settle(held, headers={
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "9s",
    })
    tickets = []
    for _ in range(10):
        assert limiter.ready_in() == 0
        tickets.append(limiter.acquire())
    assert limiter.ready_in() == pytest.approx(9 / 89)  # its refill rate, not the 9 s reset
    for ticket in tickets[1:8]:
        limiter.settle(ticket)  # type: ignore[arg-type]
    # none left and two still out: wait for three to refill, not for the reset
    limiter.settle(tickets[0], headers={  # type: ignore[arg-type]
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "10s",
    })
    assert limiter.ready_in() == pytest.approx(3 / 9.9)
    # an older answer, read late, describes a fuller bucket: it does not raise the mirror
    limiter.settle(tickets[8], headers={  # type: ignore[arg-type]
        "x-ratelimit-limit-requests": "100",
        "x-ratelimit-remaining-requests": "50",
        "x-ratelimit-reset-requests": "5s",
    })
    assert limiter.ready_in() == pytest.approx(3 / 9.8)
    assert limiter.stats()["header_pauses"] == 1


def test_token_headers_with_a_limit_mirror_the_providers_tokens(clock: ManualClock) -> None:
    limiter = Limiter("llm", clock=clock)
    limiter.settle(limiter.acquire(100), actual_tokens=120, headers={  # type: ignore[arg-type]
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "1000",
        "x-ratelimit-reset-tokens": "9s",  # 9000 to go in 9 s: 1000/s
    })
    assert limiter.ready_in(1000) == 0
    assert limiter.ready_in(1500) == pytest.approx(500 / (8999 / 9))
    assert limiter.ready_in(0) == 0  # calls without tokens are not held


def test_without_a_limit_header_the_remaining_requests_are_spread(clock: ManualClock) -> None:
    limiter = Limiter("api", clock=clock)
    ticket = limiter.acquire()
    limiter.settle(  # type: ignore[arg-type]
        ticket, headers={"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "5s"}
    )
    assert limiter.acquire() is not None
    assert limiter.ready_in() == pytest.approx(0.5)  # 10 requests left over 5 s
    clock.advance(0.5)
    other = limiter.acquire()
    assert other is not None
    assert limiter.ready_in() == pytest.approx(0.5)
    # nothing left: wait for the reset, not for a 429
    limiter.settle(  # type: ignore[arg-type]
        other, headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}
    )
    assert limiter.ready_in() == pytest.approx(360.0)
    assert limiter.stats()["header_pauses"] == 1
    clock.advance(360)
    assert limiter.ready_in() == 0


def test_in_flight_calls_count_against_the_remaining_requests(clock: ManualClock) -> None:
    limiter = Limiter("api", clock=clock)
    tickets = [limiter.acquire() for _ in range(5)]
    limiter.settle(  # type: ignore[arg-type]
        tickets[0], headers={"x-ratelimit-remaining-requests": "6", "x-ratelimit-reset-requests": "1s"}
    )
    assert limiter.acquire() is not None
    assert limiter.ready_in() == pytest.approx(0.5)  # 6 left, 4 still out: 2 over 1 s


def test_without_a_limit_header_tokens_are_spread_too(clock: ManualClock) -> None:
    limiter = Limiter("llm", clock=clock)
    limiter.settle(  # type: ignore[arg-type]
        limiter.acquire(50),
        headers={"x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "10s"},
    )
    assert limiter.acquire(200) is not None
    assert limiter.ready_in(10) == pytest.approx(2.0)  # 100 tokens/s: 200 tokens take 2 s
    clock.advance(10)
    assert limiter.ready_in(10) == 0  # past the reset the headers no longer hold


def test_tokens_are_reconciled_with_the_real_usage(clock: ManualClock) -> None:
    limiter = Limiter("llm", tpm=6000, clock=clock)  # a bucket of 100
    ticket = limiter.acquire(80)
    limiter.settle(ticket, actual_tokens=30)  # type: ignore[arg-type]
    assert limiter.ready_in(70) == 0  # 50 refunded
    assert limiter.ready_in(71) > 0
    ticket = limiter.acquire(70)
    limiter.settle(ticket, actual_tokens=170)  # type: ignore[arg-type]
    assert limiter.ready_in(1) == pytest.approx(1.01)  # charged 100 more: in debt
    clock.advance(2)
    throttled = limiter.acquire(60)
    limiter.settle(throttled, outcome="throttled", retry_after=0)  # type: ignore[arg-type]
    assert limiter.ready_in(100) == 0  # a throttled call used no tokens


# ---------------------------------------------------------------------------
# asyncio


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in its own thread, stopped at the end."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-loop", daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(BOUND)
    loop.close()


def test_threads_and_coroutines_share_one_queue(loop: asyncio.AbstractEventLoop) -> None:
    limiter = Limiter("api", concurrency=1)
    held = limiter.acquire()
    assert held is not None
    order: list[tuple[int, str]] = []
    done: list[Any] = []

    def thread_waiter(name: str) -> None:
        ticket = limiter.acquire()
        assert ticket is not None
        order.append((ticket.seq, name))
        limiter.settle(ticket)  # frees the slot for whoever is next, thread or task

    async def task_waiter(name: str) -> None:
        ticket = await limiter.acquire_async()
        assert ticket is not None
        order.append((ticket.seq, name))
        limiter.settle(ticket)

    expected = []
    for i in range(3):
        for kind in ("thread", "task"):
            name = f"{kind}{i}"
            expected.append(name)
            queued = limiter.waiting
            if kind == "thread":
                t = threading.Thread(target=thread_waiter, args=(name,), daemon=True)
                t.start()
                done.append(t)
            else:
                done.append(asyncio.run_coroutine_threadsafe(task_waiter(name), loop))
            wait_until(lambda q=queued: limiter.waiting == q + 1, f"{name} to queue")
    limiter.settle(held)
    for item in done:
        if isinstance(item, threading.Thread):
            item.join(BOUND)
            assert not item.is_alive()
        else:
            item.result(BOUND)
    assert [name for _, name in sorted(order)] == expected
    assert limiter.in_flight == 0


def test_async_waiters_follow_the_clock_and_can_be_cancelled(
    loop: asyncio.AbstractEventLoop, clock: ManualClock
) -> None:
    limiter = Limiter("api", rps=1, clock=clock)
    assert limiter.acquire() is not None
    granted: list[str] = []

    async def waiter(name: str, cancelled: threading.Event | None = None) -> Ticket | None:
        ticket = await limiter.acquire_async(cancelled=cancelled)
        if ticket is not None:
            granted.append(name)
        return ticket

    first = asyncio.run_coroutine_threadsafe(waiter("first"), loop)
    wait_until(lambda: limiter.waiting == 1)
    task_box: list[asyncio.Task[Any]] = []

    def start_second() -> None:
        task_box.append(loop.create_task(waiter("second")))

    loop.call_soon_threadsafe(start_second)
    wait_until(lambda: limiter.waiting == 2)
    cancel = CancelSignal()
    third = asyncio.run_coroutine_threadsafe(waiter("third", cancel), loop)
    wait_until(lambda: limiter.waiting == 3)
    settled(limiter, clock)

    loop.call_soon_threadsafe(task_box[0].cancel)  # the task gives its place up
    wait_until(lambda: limiter.waiting == 2)
    cancel.set()
    assert third.result(BOUND) is None
    assert limiter.waiting == 1 and granted == []
    clock.advance(1.0)
    assert first.result(BOUND) is not None
    assert granted == ["first"] and limiter.waiting == 0


# ---------------------------------------------------------------------------
# budgets


def test_budget_reserves_worst_cases_and_settles_real_costs() -> None:
    budget = Budget(1.0)
    a = budget.reserve(0.6)
    assert a is not None
    assert budget.reserve(0.5) is None  # 0.6 + 0.5 would not fit
    b = budget.reserve(0.4)
    assert b is not None and budget.remaining == 0
    budget.settle(a, 0.1)
    assert budget.spent == pytest.approx(0.1) and budget.reserved == pytest.approx(0.4)
    assert budget.remaining == pytest.approx(0.5)
    budget.release(b)
    assert budget.reserved == 0 and budget.remaining == pytest.approx(0.9)
    c = budget.reserve(0.2)
    assert c is not None
    budget.settle(c, None)  # unknown cost: the reservation counts as spent
    assert budget.spent == pytest.approx(0.3)
    budget.settle(c, 5.0)  # settling twice changes nothing
    assert budget.spent == pytest.approx(0.3) and budget.overrun_usd == 0


def test_a_node_budget_also_fits_in_the_run_budget() -> None:
    run = Budget(1.0, name="run")
    node = Budget(0.8, name="node", parent=run)
    other = run.reserve(0.5)
    assert other is not None
    assert node.reserve(0.6) is None  # fits the node's 0.8, not the run's remaining 0.5
    ticket = node.reserve(0.5)
    assert ticket is not None and run.remaining == 0
    node.settle(ticket, 0.25)
    assert node.spent == pytest.approx(0.25) and run.spent == pytest.approx(0.25)


def test_budget_has_zero_overshoot_under_50_threads() -> None:
    budget = Budget(3.0)
    start = threading.Barrier(50)
    spent: list[float] = []
    refused = [0]
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(400):
            worst = rng.choice([0.001, 0.0033, 0.007, 0.01, 0.0125])
            ticket = budget.reserve(worst)
            if ticket is None:
                with lock:
                    refused[0] += 1
                continue
            # real costs never above the reservation; exactly it a quarter of the time
            actual = worst if rng.random() < 0.25 else round(worst * rng.random(), 9)
            budget.settle(ticket, actual)
            with lock:
                spent.append(actual)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert refused[0] > 0  # the budget really ran out
    assert budget.reserved == 0
    assert budget.spent <= 3.0  # zero overshoot
    assert budget.spent == pytest.approx(sum(spent), abs=len(spent) * 1e-9)  # no lost update
    assert 3.0 - budget.spent < 0.0125 + 1e-9  # and it was really used up


def test_budget_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Budget(-1)
    with pytest.raises(ValueError):
        Budget(1).reserve(float("nan"))


# ---------------------------------------------------------------------------
# the run's limiters and validation


def test_limiter_set_from_a_limits_block(clock: ManualClock) -> None:
    limiters = LimiterSet({"openai": {"rps": 50, "rpm": 3000, "tpm": 2000000, "concurrency": 64}}, clock=clock)
    openai = limiters.named("openai")
    assert (openai.rps, openai.rpm, openai.tpm, openai.concurrency) == (50, 3000, 2000000, 64)
    default = limiters.get("llm:openai/gpt-4o")  # the key an llm node's demand names
    assert default.name == "llm:openai/gpt-4o" and default is not openai
    assert limiters.get("llm:openai/gpt-4o") is default  # one per key, shared
    assert limiters.get(limiter_key("https://API.example.com:443/v1/x")).name == "http:api.example.com"
    with pytest.raises(KeyError, match="did you mean 'openai'"):
        limiters.named("opneai")
    assert set(limiters.stats()) == {"openai", "llm:openai/gpt-4o", "http:api.example.com"}


def test_a_limit_declared_under_a_default_key_configures_that_default() -> None:
    limiters = LimiterSet({"http:api.example.com": {"rps": 5}})
    assert limiters.get(limiter_key("https://api.example.com/items")).rps == 5


def test_the_http_nodes_default_key_is_one_per_host_and_port() -> None:
    assert limiter_key("http://127.0.0.1:8080/a") == "http:127.0.0.1:8080"
    assert limiter_key("https://Example.COM/") == "http:example.com"
    assert limiter_key("https://example.com:443/x") == "http:example.com"


def test_limits_block_validation_messages() -> None:
    assert validate_limits({"openai": {"rps": 50, "rpm": 3000, "tpm": 2e6, "concurrency": 64, "burst": 0.5}}) == []
    problems = validate_limits({
        "openai": {"rmp": 3000, "tpm": -5, "concurrency": 2.5},
        "": {},
        "slow": "fast",
        "zero": {"rps": 0},
        "flag": {"rps": True},
    })
    by_path = {path: (message, hint) for message, path, hint in problems}
    assert by_path["limits.openai.rmp"] == ("unknown field 'rmp' in limiter 'openai'", "did you mean 'rpm'?")
    assert by_path["limits.openai.tpm"][0] == "'tpm' of limiter 'openai' must be a positive number, got -5"
    assert "model tokens per minute" in by_path["limits.openai.tpm"][1]
    assert by_path["limits.openai.concurrency"] == (
        "'concurrency' of limiter 'openai' must be a whole number, got 2.5", "for example 3"
    )
    assert by_path["limits"][0] == "a limiter needs a non-empty name"
    assert by_path["limits.slow"][0] == "limiter 'slow' must be an object, got str"
    assert "limits.zero.rps" in by_path and "limits.flag.rps" in by_path
    assert validate_limits([1, 2], "wf.limits")[0][:2] == (
        "'limits' must be an object of named limiters, got list", "wf.limits"
    )


def test_rate_and_budget_validation_messages() -> None:
    limits = {"openai": {"rpm": 10}}
    assert validate_rate_name("openai", limits, "nodes[0].rate") == []
    [(message, path, hint)] = validate_rate_name("opnai", limits, "nodes[0].rate")
    assert message == "'rate' names limiter 'opnai', which 'limits' does not declare"
    assert (path, hint) == ("nodes[0].rate", "did you mean 'openai'?")
    [(_, _, hint)] = validate_rate_name("anthropic", None, "nodes[1].rate")
    assert hint == 'declare it: "limits": {"anthropic": {"rpm": 3000}}'
    assert validate_budget({"usd": 5}) == []
    problems = validate_budget({"usd": 0, "dollars": 5}, "nodes[2].budget")
    assert ("unknown field 'dollars' in 'budget'", "nodes[2].budget.dollars", "the only field is 'usd' (dollars)") in problems
    assert any(p[1] == "nodes[2].budget.usd" and "positive number" in p[0] for p in problems)
    assert validate_budget({})[0][0] == "'budget' needs 'usd', the most the run may spend in dollars"


def test_bad_specs_are_refused_up_front() -> None:
    with pytest.raises(ValueError, match="rmp"):
        LimiterSet({"x": {"rmp": 1}})
    with pytest.raises(ValueError, match="positive"):
        Limiter("x", rps=0)
    with pytest.raises(ValueError, match="integer"):
        Limiter("x", concurrency=1.5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# against the local OpenAI-compatible server


def _chat(client: httpx.Client, base: str) -> httpx.Response:
    return client.post(f"{base}/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def test_threads_and_tasks_sharing_a_limiter_stay_under_the_servers_limit(
    loop: asyncio.AbstractEventLoop,
) -> None:
    with OpenAIServer() as server:
        # the limiter is well inside the server's limits, so that late packets
        # (a loaded machine) cannot add up to a 429
        server.enforce(rpm=3000, burst_requests=10)  # 50/s, at most 10 at once
        limiter = Limiter("local", rps=20, burst=0.15)  # 20/s, at most 3 at once
        base = server.base_url
        statuses: list[int] = []

        def thread_batch(count: int) -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(count):
                    ticket = limiter.acquire(0)
                    assert ticket is not None
                    response = _chat(client, base)
                    statuses.append(response.status_code)
                    limiter.settle(ticket, outcome=outcome_for_status(response.status_code), headers=response.headers)

        async def task_batch(count: int) -> None:
            async with httpx.AsyncClient(timeout=10) as client:
                for _ in range(count):
                    ticket = await limiter.acquire_async(0)
                    assert ticket is not None
                    response = await client.post(
                        f"{base}/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    )
                    statuses.append(response.status_code)
                    limiter.settle(ticket, outcome=outcome_for_status(response.status_code), headers=response.headers)

        futures = [asyncio.run_coroutine_threadsafe(task_batch(5), loop) for _ in range(2)]
        threads = [threading.Thread(target=thread_batch, args=(5,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        for f in futures:
            f.result(30)
        assert server.request_count == 30 == len(statuses)
        assert server.throttled_count == 0 and set(statuses) == {200}
        assert limiter.stats()["throttles"] == 0


def test_after_a_429_nothing_is_sent_during_retry_after() -> None:
    with OpenAIServer() as server:
        server.rate_limit(1, retry_after=0.3)
        limiter = Limiter("local")  # no caps: back-off alone
        grants: list[float] = []
        pause: list[tuple[float, float]] = []

        def worker() -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(3):
                    while True:
                        ticket = limiter.acquire()
                        assert ticket is not None
                        grants.append(ticket.granted_at)
                        response = _chat(client, server.base_url)
                        before = time.monotonic()
                        limiter.settle(ticket, outcome=outcome_for_status(response.status_code), headers=response.headers)
                        if response.status_code == 429:
                            pause.append((before, time.monotonic()))
                        else:
                            break

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        [(before, after)] = pause
        # the pause began inside that settle (between `before` and `after`) and
        # lasts Retry-After: no ticket was granted within it
        assert all(g < after or g >= before + 0.3 for g in grants)
        assert any(g >= before + 0.3 for g in grants)  # and the retries did go afterwards
        assert limiter.stats()["throttles"] == 1
        assert (server.request_count, server.ok_count, server.throttled_since(0)) == (13, 12, 1)


def test_with_no_configuration_the_headers_stop_429s_after_the_first_answer() -> None:
    with OpenAIServer() as server:
        server.enforce(rpm=3000, burst_requests=5)  # 50/s, at most 5 at once
        limiter = LimiterSet().get(limiter_key(server.base_url))  # the default: no caps at all
        calls: list[tuple[float, int]] = []  # (granted at, status)
        answered: list[float] = []  # when an answer (and its headers) had been read

        def worker() -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(6):
                    while True:
                        ticket = limiter.acquire()
                        assert ticket is not None
                        response = _chat(client, server.base_url)
                        calls.append((ticket.granted_at, response.status_code))
                        limiter.settle(ticket, outcome=outcome_for_status(response.status_code), headers=response.headers)
                        answered.append(time.monotonic())
                        if response.status_code == 200:
                            break

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
            assert not t.is_alive()
        assert server.ok_count == 48
        # the calls granted before any answer was read went blind, and some of
        # them may have met a 429; every later one waited for the server's bucket
        # as its headers describe it
        first_answer = min(answered)
        assert [g for g, status in calls if status == 429 and g > first_answer] == []
        assert any(g > first_answer for g, _ in calls)
