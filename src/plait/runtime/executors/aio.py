"""The ``async`` executor: a batch's attempts as tasks on the run's event loop.

Up to ``slots`` attempts run at once (a semaphore); outcomes cross back to the
driver's thread through a queue, as with the thread pool. A node with
``exec_async`` runs on the loop itself, so a parallel batch of thousands of
HTTP requests needs no thread per request; a node without one has its
``exec`` run in a pool of ``slots`` threads, so every node type works here.
An interrupt cancels the attempts in flight (they come back interrupted); a
fail-fast stop only drops those not started, as for every executor.
"""

from __future__ import annotations

import asyncio
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from plait.runtime.executors import Job
from plait.runtime.items import Attempt, Outcome, run_attempt_async

if TYPE_CHECKING:
    from plait.runtime.aio import RunLoop


class AsyncExecutor:
    def __init__(self, slots: int, name: str = "plait") -> None:
        self.slots = slots
        self._name = name
        self._outcomes: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._cancelled = False
        self._job: Job | None = None
        self._loop: RunLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._free: list[int] = list(range(slots - 1, -1, -1))
        self._semaphore: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._run: Any = None

    def start(self, job: Job) -> None:
        self._job = job
        self._loop = job.services.event_loop()
        if job.node.cls.has_async_exec():
            self._run = partial(run_attempt_async, job.node, job.base, job.services)
        else:
            self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix=f"{self._name}-sync")
            self._run = partial(run_attempt_async, job.node, job.base, job.services, run_sync=self._in_pool)

    async def _in_pool(self, fn: Any, arg: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, arg)

    def submit(self, attempt: Attempt) -> None:
        assert self._loop is not None, "executor used before start()"
        self._loop.loop.call_soon_threadsafe(self._spawn, attempt)

    def _spawn(self, attempt: Attempt) -> None:  # on the loop
        task = asyncio.get_running_loop().create_task(self._attempt(attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempt(self, attempt: Attempt) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.slots)
        try:
            async with self._semaphore:
                if self._cancelled:
                    out = Outcome.dropped(attempt)
                else:
                    slot = self._free.pop()
                    try:
                        out = await self._run(attempt, slot)
                    finally:
                        self._free.append(slot)
        except asyncio.CancelledError:  # cancelled while waiting for a slot: it never started
            out = Outcome.dropped(attempt)
        self._outcomes.put(out)

    def next_outcome(self, timeout: float | None = None) -> Outcome | None:
        try:
            return self._outcomes.get(timeout=timeout)
        except queue.Empty:
            return None

    def cancel_pending(self) -> None:
        self._cancelled = True
        job, loop = self._job, self._loop
        if job is not None and loop is not None and job.services.cancelled.is_set():
            loop.loop.call_soon_threadsafe(self._cancel_in_flight)

    def _cancel_in_flight(self) -> None:  # on the loop: an interrupt stops what runs
        for task in list(self._tasks):
            task.cancel()

    def close(self) -> None:
        if self._loop is not None and self._tasks:
            self._loop.loop.call_soon_threadsafe(self._cancel_in_flight)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + 1.0
        while self._tasks and time.monotonic() < deadline:
            time.sleep(0.01)
