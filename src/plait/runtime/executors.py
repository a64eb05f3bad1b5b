"""Executors: the seam between batch semantics and where items actually run.

An executor takes tasks (``submit``) and hands back their outcomes
(``next_outcome``), nothing more. Ordering, retries, error policy and limits
live above, in :mod:`plait.runtime.batch`, once for every executor — the way
httpx keeps its transports behind one small interface. A distributed engine
is a third implementation of the same four methods.

A task is a callable taking the slot number (which lane of concurrency runs it)
and returning an outcome; tasks never raise.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

Task = Callable[[int], Any]
# What an executor hands back for a task dropped by cancel_pending().
CANCELLED = object()


class Executor(Protocol):
    #: how many tasks run at once; the batch keeps a small multiple of this in flight
    slots: int

    def submit(self, task: Task) -> None: ...

    def next_outcome(self, timeout: float | None = None) -> Any:
        """The next finished task's outcome, CANCELLED for a dropped one, None on timeout."""
        ...

    def cancel_pending(self) -> None:
        """Drop tasks that have not started; each still yields CANCELLED."""
        ...

    def close(self) -> None: ...


class SequentialExecutor:
    """Runs each task in the caller's thread, when its outcome is asked for."""

    slots = 1

    def __init__(self) -> None:
        self._pending: deque[Task] = deque()
        self._cancelled = False

    def submit(self, task: Task) -> None:
        self._pending.append(task)

    def next_outcome(self, timeout: float | None = None) -> Any:
        if not self._pending:
            if timeout:
                time.sleep(timeout)
            return None
        task = self._pending.popleft()
        if self._cancelled:
            return CANCELLED
        return task(0)

    def cancel_pending(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        self._pending.clear()


class ThreadExecutor:
    """A fixed set of worker threads, one per slot, fed through a queue."""

    def __init__(self, slots: int, name: str = "plait") -> None:
        self.slots = slots
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cancelled = False
        self._threads: list[threading.Thread] = []
        self._name = name

    def _start(self) -> None:
        slot = len(self._threads)
        t = threading.Thread(target=self._work, args=(slot,), name=f"{self._name}-{slot}", daemon=True)
        t.start()
        self._threads.append(t)

    def _work(self, slot: int) -> None:
        get, put = self._tasks.get, self._outcomes.put
        while True:
            task = get()
            if task is None:
                return
            put(CANCELLED if self._cancelled else task(slot))

    def submit(self, task: Task) -> None:
        # A worker per task until every slot has one: a batch of 3 items with
        # max_concurrent 200 starts 3 threads, not 200 (which cost ~80 ms, per
        # item of a batch of sub-workflows).
        if len(self._threads) < self.slots:
            self._start()
        self._tasks.put(task)

    def next_outcome(self, timeout: float | None = None) -> Any:
        try:
            return self._outcomes.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel_pending(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        # Workers finish their current task and exit; a task stuck in a system
        # call does not hold the run up (the threads are daemons).
        deadline = time.monotonic() + 1.0
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()


def make_executor(parallel: bool, max_concurrent: int, name: str = "plait") -> Executor:
    if not parallel or max_concurrent <= 1:
        return SequentialExecutor()
    return ThreadExecutor(max_concurrent, name=name)
