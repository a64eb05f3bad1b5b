"""The run's cancellation flag: an Event that also tells its subscribers when it is set."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable


class CancelSignal(threading.Event):
    """A ``threading.Event`` that also calls its subscribers when set.

    Everything that waits on or tests a plain Event works unchanged; a limiter
    waiter subscribes so that Ctrl-C wakes it at once instead of at its next poll.
    """

    def __init__(self) -> None:
        super().__init__()
        self._subscribers: dict[int, Callable[[], None]] = {}
        # re-entrant: set() runs in the signal handler, on the main thread,
        # which may be inside subscribe() when Ctrl-C arrives
        self._sub_lock = threading.RLock()
        self._sub_seq = itertools.count()

    def set(self) -> None:
        super().set()
        with self._sub_lock:
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            callback()

    def subscribe(self, callback: Callable[[], None]) -> int | None:
        """Call ``callback`` once set (now, if it already is). Returns a key for
        :meth:`unsubscribe`, or None when it was called at once."""
        with self._sub_lock:
            if not self.is_set():
                key = next(self._sub_seq)
                self._subscribers[key] = callback
                return key
        callback()
        return None

    def unsubscribe(self, key: int | None) -> None:
        if key is not None:
            with self._sub_lock:
                self._subscribers.pop(key, None)
