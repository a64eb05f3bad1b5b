"""The executors that run attempts in this process: in the caller's thread, or in a thread pool."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from plait.runtime.events import RunWarning
from plait.runtime.executors import Job
from plait.runtime.items import Attempt, Outcome


class SequentialExecutor:
    """Runs each attempt in the caller's thread, when its outcome is asked for."""

    slots = 1

    def __init__(self) -> None:
        self._pending: deque[Attempt] = deque()
        self._cancelled = False
        self._run: Callable[[Attempt, int], Outcome] = _not_started

    def start(self, job: Job) -> None:
        self._run = job.run

    def submit(self, attempt: Attempt) -> None:
        self._pending.append(attempt)

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        if not self._pending:
            if timeout:
                time.sleep(timeout)
            return None
        attempt = self._pending.popleft()
        if self._cancelled:
            return Outcome.dropped(attempt)
        return self._run(attempt, 0)

    def run_now(self, attempt: Attempt) -> Outcome:
        """Run ``attempt`` at once and return its outcome: what ``submit`` then
        ``next_outcome`` would do, for a driver that runs items one at a time."""
        if self._cancelled:
            return Outcome.dropped(attempt)
        return self._run(attempt, 0)

    def cancel_pending(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        self._pending.clear()


class ThreadExecutor:
    """A fixed set of worker threads, one per slot, fed through a queue."""

    def __init__(self, slots: int, name: str = "plait") -> None:
        self.slots = slots
        self._tasks: queue.SimpleQueue[Attempt | None] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._cancelled = False
        self._threads: list[threading.Thread] = []
        self._name = name
        self._run: Callable[[Attempt, int], Outcome] = _not_started
        self._inline = False
        self._job: Job | None = None

    def start(self, job: Job) -> None:
        self._run = job.run
        self._job = job

    def _start_worker(self) -> bool:
        slot = len(self._threads)
        t = threading.Thread(target=self._work, args=(slot,), name=f"{self._name}-{slot}", daemon=True)
        try:
            t.start()
        except RuntimeError as exc:  # "can't start new thread": the system's limit
            self._short_of_threads(exc)
            return False
        self._threads.append(t)
        return True

    def _short_of_threads(self, exc: RuntimeError) -> None:
        wanted, got = self.slots, len(self._threads)
        self.slots = max(got, 1)
        if got:
            message = (
                f"could start only {got} of {wanted} threads ({exc}): the batch runs {got} items at a "
                "time; lower max_concurrent, or raise the system's limit on threads"
            )
        else:
            message = (
                f"could not start a thread ({exc}): the batch runs one item at a time in the main thread; "
                "lower max_concurrent, or raise the system's limit on threads"
            )
            self._inline = True
        job = self._job
        if job is not None:
            job.services.bus.emit(RunWarning(job.services.location(job.node.id), message))

    def _work(self, slot: int) -> None:
        get, put, run = self._tasks.get, self._outcomes.put, self._run
        while True:
            attempt = get()
            if attempt is None:
                return
            if self._cancelled:
                put(Outcome.dropped(attempt, slot))
                continue
            try:
                put(run(attempt, slot))
            except BaseException as exc:  # the item path never raises; if it did, the batch must not hang
                out = Outcome(attempt.index, attempt.item, attempt.number, slot, time.time())
                out.error = f"internal error: {type(exc).__name__}: {exc}"
                out.retryable = False
                put(out)

    def submit(self, attempt: Attempt) -> None:
        # A worker per attempt until every slot has one: a batch of 3 items with
        # max_concurrent 200 starts 3 threads, not 200 (which cost ~80 ms, per
        # item of a batch of sub-workflows).
        if len(self._threads) < self.slots and not self._inline:
            self._start_worker()
        self._tasks.put(attempt)

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        if self._inline and not self._threads:  # no thread could start: run here, one at a time
            try:
                attempt = self._tasks.get_nowait()
            except queue.Empty:
                return None
            if attempt is None:
                return None
            return Outcome.dropped(attempt) if self._cancelled else self._run(attempt, 0)
        try:
            return self._outcomes.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel_pending(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        # Workers finish their current attempt and exit; one stuck in a system
        # call does not hold the run up (the threads are daemons).
        deadline = time.monotonic() + 1.0
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads.clear()


def _not_started(attempt: Attempt, slot: int) -> Outcome:
    raise RuntimeError("executor used before start()")
