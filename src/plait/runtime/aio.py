"""The run's event loop: one thread per run, started on demand.

The ``async`` executor runs items on it, nodes reach it through
``Services.call_async`` and ``Services.async_resource``, and it stops when the
run's services close (after the async resources are closed on it). A run that
never asks for it never starts it, and never imports asyncio beyond what
PocketFlow already did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")
_CLOSE_TIMEOUT_S = 5.0


class RunLoop:
    def __init__(self, name: str = "plait-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._resources: dict[str, Any] = {}
        self._making: dict[str, asyncio.Future[Any]] = {}
        self._closers: list[tuple[Callable[[Any], Awaitable[Any]], Any]] = []
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def call(self, coro: Awaitable[T], cancelled: threading.Event | None = None, poll: float = 0.1) -> T:
        """Run ``coro`` on the loop and wait for it; when ``cancelled`` is set, cancel it
        and raise :class:`asyncio.CancelledError`."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("call_async from the run's own event loop: await the coroutine instead")
        future = self.submit(coro)
        while True:
            try:
                return future.result(timeout=poll if cancelled is not None else None)
            except concurrent.futures.TimeoutError:
                if cancelled is not None and cancelled.is_set():
                    future.cancel()
                    raise asyncio.CancelledError from None

    async def resource(
        self,
        key: str,
        factory: Callable[[], Awaitable[T]] | Callable[[], T],
        aclose: Callable[[T], Awaitable[Any]] | None,
    ) -> T:
        if key in self._resources:
            return self._resources[key]
        pending = self._making.get(key)
        if pending is not None:  # another task is making it: wait for the same one
            return await asyncio.shield(pending)
        future: asyncio.Future[Any] = self.loop.create_future()
        self._making[key] = future
        try:
            made: Any = factory()
            value: T = await made if asyncio.iscoroutine(made) or isinstance(made, asyncio.Future) else made
        except BaseException as exc:
            del self._making[key]
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        self._resources[key] = value
        if aclose is not None:
            self._closers.append((aclose, value))
        del self._making[key]
        future.set_result(value)
        return value

    async def _close_resources(self) -> None:
        closers, self._closers = self._closers, []
        self._resources.clear()
        for aclose, value in reversed(closers):
            try:
                await aclose(value)
            except Exception:
                pass

    def close(self) -> None:
        """Close the async resources on the loop, cancel what still runs, stop the thread."""
        if not self._thread.is_alive():
            return
        try:
            self.submit(self._close_resources()).result(timeout=_CLOSE_TIMEOUT_S)
        except Exception:
            pass

        async def cancel_rest() -> None:
            current = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not current]
            for task in rest:
                task.cancel()
            if rest:
                await asyncio.wait(rest, timeout=1.0)

        try:
            self.submit(cancel_rest()).result(timeout=_CLOSE_TIMEOUT_S)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=_CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()
