"""Structured events: the runtime emits, subscribers (progress, run records,
traces) listen. Adding a subscriber touches no runtime code.

Kinds, with the fields they carry besides ``kind``, ``time`` and ``node_id``:

* ``run_started`` (data: workflow, inputs) / ``run_finished`` (status, duration_ms, error)
* ``node_started`` (data: type, batch) / ``node_finished`` (status, duration_ms, error, data: counts)
* ``batch_started`` (data: total, parallel, max_concurrent) — a batch node's items are resolved
* ``item_started`` (index, attempt, slot) / ``item_finished`` (index, attempt, slot, duration_ms)
* ``item_retried`` (index, attempt, slot, error, data: wait_s) — this attempt failed, another follows
* ``item_failed`` (index, attempt, slot, duration_ms, error) — the item has failed for good
* ``llm_call`` (index, data: model, input_tokens, output_tokens)

Events come from worker threads; the bus serialises delivery with a lock, so a
subscriber sees one event at a time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class Event:
    __slots__ = (
        "attempt",
        "data",
        "duration_ms",
        "error",
        "index",
        "kind",
        "node_id",
        "slot",
        "status",
        "time",
    )

    def __init__(
        self,
        kind: str,
        node_id: str | None = None,
        *,
        index: int | None = None,
        attempt: int | None = None,
        slot: int | None = None,
        status: str | None = None,
        duration_ms: float | None = None,
        error: str | None = None,
        data: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> None:
        self.kind = kind
        self.node_id = node_id
        self.index = index
        self.attempt = attempt
        self.slot = slot
        self.status = status
        self.duration_ms = duration_ms
        self.error = error
        self.data = data
        self.time = time.time() if at is None else at

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}

    def __repr__(self) -> str:
        return f"Event({self.to_dict()!r})"


Subscriber = Callable[[Event], None]


class EventBus:
    """Fan events out to subscribers. Cheap when nobody listens."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        if not self._subscribers:
            return
        with self._lock:
            for subscriber in self._subscribers:
                subscriber(event)
