"""The ``async`` executor: a batch's attempts as tasks on the run's event loop.

Up to ``slots`` attempts run at once; the rest wait in a queue and start as
slots free up. A node with ``exec_async`` runs on the loop itself, so a
parallel batch of thousands of HTTP requests needs no thread per request; a
node without one has its ``exec`` run in a pool of ``slots`` threads, so every
node type works here. An interrupt cancels the attempts in flight (they come
back interrupted); a fail-fast stop only drops those not started, as for every
executor.

The driver's thread and the loop's thread meet in both directions in batches,
not once per item: waking a thread that waits costs a system call, and the
woken thread then fights the running one for the GIL (at 2,000 requests a
second that cost more CPU than the engine's own work). Attempts go into a
queue the loop reads; the loop is woken when the driver has nothing left to
do but wait for outcomes (or a good number of attempts piled up). Outcomes
finished in one turn of the loop go back to the driver as one list.

While an async batch runs, the cyclic collector's middle generation is
collected ten times less often (see :func:`_relax_gc`): hundreds of requests in
flight keep tens of thousands of young objects alive, and every collection of
that generation walked all of them again (a tenth of a large batch's CPU).
"""

from __future__ import annotations

import asyncio
import gc
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from plait.runtime.executors import Job
from plait.runtime.items import Attempt, Outcome, run_attempt_async

if TYPE_CHECKING:
    from plait.runtime.aio import RunLoop

#: attempts the driver may queue before it wakes the loop even though it is
#: still busy with outcomes (so a long batch of outcomes does not leave the
#: slots empty meanwhile)
_WAKE_AT = 32

#: the collector's generation-1 threshold while an async batch runs (CPython's
#: default is 10): a generation-1 collection every ~70,000 surviving
#: allocations instead of every ~7,000. Young garbage is still collected as
#: often (generation 0 is untouched), and cycles that lived through one
#: collection wait a little longer for the next.
_GC_MIDDLE = 100
_gc_lock = threading.Lock()
_gc_users = [0]
# (the thresholds to put back, the ones set here) while a batch relaxed them
_gc_saved: list[tuple[tuple[int, int, int], tuple[int, int, int]]] = []


def _relax_gc() -> None:
    """One more async batch running: the first one raises the generation-1 threshold."""
    with _gc_lock:
        if _gc_users[0] == 0:
            now = gc.get_threshold()
            if now[0] > 0 and now[1] < _GC_MIDDLE:  # a threshold of 0 means "off": left alone
                ours = (now[0], _GC_MIDDLE, now[2])
                gc.set_threshold(*ours)
                _gc_saved.append((now, ours))
        _gc_users[0] += 1


def _restore_gc() -> None:
    """One async batch fewer: the last one puts the thresholds back, unless
    someone else changed them meanwhile (theirs stay)."""
    with _gc_lock:
        _gc_users[0] -= 1
        if _gc_users[0] == 0 and _gc_saved:
            old, ours = _gc_saved.pop()
            if gc.get_threshold() == ours:
                gc.set_threshold(*old)


class AsyncExecutor:
    def __init__(self, slots: int, name: str = "plait") -> None:
        self.slots = slots
        self._name = name
        self._cancelled = False
        self._job: Job | None = None
        self._loop: RunLoop | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        # driver -> loop: attempts not started yet. A deque's append and popleft
        # are atomic, so both threads use it without a lock.
        self._inbox: deque[Attempt] = deque()
        self._woken = False  # a drain of the inbox is scheduled on the loop
        # on the loop
        self._tasks: dict[int, asyncio.Task[Outcome]] = {}  # by slot
        self._free: list[int] = list(range(slots - 1, -1, -1))
        self._done: list[Outcome] = []
        self._flushing = False
        # loop -> driver: lists of outcomes, and the driver's unread rest of one
        self._batches: queue.SimpleQueue[list[Outcome]] = queue.SimpleQueue()
        self._outcomes: deque[Outcome] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._run: Any = None
        self._gc_relaxed = False

    def start(self, job: Job) -> None:
        self._job = job
        self._loop = job.services.event_loop()
        self._aloop = self._loop.loop
        if job.node.cls.has_async_exec():
            self._run = partial(run_attempt_async, job.node, job.base, job.services)
        else:
            self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix=f"{self._name}-sync")
            self._run = partial(run_attempt_async, job.node, job.base, job.services, run_sync=self._in_pool)
        if not self._gc_relaxed:  # last: a start that failed is never closed
            self._gc_relaxed = True
            _relax_gc()

    async def _in_pool(self, fn: Any, arg: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, arg)

    # -- the driver's side

    def submit(self, attempt: Attempt) -> None:
        assert self._aloop is not None, "executor used before start()"
        inbox = self._inbox
        inbox.append(attempt)
        if len(inbox) >= _WAKE_AT:
            self._wake()

    def _wake(self) -> None:
        # The loop clears the flag before it reads the inbox: an attempt queued
        # while the flag is still set is read by the drain already scheduled.
        if not self._woken:
            self._woken = True
            assert self._aloop is not None
            self._aloop.call_soon_threadsafe(self._drain)

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        outcomes = self._outcomes
        if outcomes:
            if len(self._inbox) >= _WAKE_AT:
                self._wake()
            return outcomes.popleft()
        if self._inbox:
            self._wake()
        try:
            if timeout is not None and timeout <= 0:
                batch = self._batches.get_nowait()
            else:
                batch = self._batches.get(timeout=timeout)
        except queue.Empty:
            return None
        if len(batch) > 1:
            outcomes.extend(batch)
            return outcomes.popleft()
        return batch[0]

    def cancel_pending(self) -> None:
        self._cancelled = True
        job, loop = self._job, self._aloop
        if job is not None and loop is not None:
            interrupt = job.services.cancelled.is_set()
            loop.call_soon_threadsafe(self._stop, interrupt)

    def close(self) -> None:
        loop = self._aloop
        if loop is not None and self._tasks:
            loop.call_soon_threadsafe(self._cancel_in_flight)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 1.0
        while self._tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._gc_relaxed:
            self._gc_relaxed = False
            _restore_gc()

    # -- on the loop

    def _drain(self) -> None:
        self._woken = False
        inbox, free = self._inbox, self._free
        if self._cancelled:
            while inbox:
                self._finish(Outcome.dropped(inbox.popleft()))
            return
        while inbox and free:
            self._launch(inbox.popleft())

    def _launch(self, attempt: Attempt) -> None:
        slot = self._free.pop()
        assert self._aloop is not None
        task = self._aloop.create_task(self._run(attempt, slot))
        self._tasks[slot] = task
        task.add_done_callback(partial(self._ended, attempt, slot))

    def _ended(self, attempt: Attempt, slot: int, task: asyncio.Task[Outcome]) -> None:
        del self._tasks[slot]
        self._free.append(slot)
        if task.cancelled():  # cancelled before its first step: it never started
            out = Outcome.dropped(attempt, slot)
        else:
            exc = task.exception()
            if exc is None:
                out = task.result()
            else:  # the item path never raises; if it did, the batch must not hang
                out = Outcome(attempt.index, attempt.item, attempt.number, slot, time.time())
                out.error = f"internal error: {type(exc).__name__}: {exc}"
                out.retryable = False
        self._finish(out)
        inbox = self._inbox
        if inbox:
            if self._cancelled:
                self._drain()
            else:
                self._launch(inbox.popleft())

    def _finish(self, out: Outcome) -> None:
        self._done.append(out)
        if not self._flushing:
            self._flushing = True
            assert self._aloop is not None
            self._aloop.call_soon(self._flush)

    def _flush(self) -> None:
        # once per turn of the loop: every outcome of the turn in one hand-over
        self._flushing = False
        done, self._done = self._done, []
        if done:
            self._batches.put(done)

    def _stop(self, interrupt: bool) -> None:
        self._drain()  # drops what has not started (the flag is set)
        if interrupt:  # an interrupt stops what runs, too
            self._cancel_in_flight()

    def _cancel_in_flight(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
